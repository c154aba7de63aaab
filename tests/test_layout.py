"""The proxy is a leaf: only the app that wires it imports `lmgate.proxy`. Guard, observers,
scheduler and drain implement the hook protocol from `lmgate.hooks`, on neutral ground."""

from __future__ import annotations

import ast
from pathlib import Path

import lmgate

PACKAGE = Path(lmgate.__file__).parent
MAY_IMPORT_PROXY = {"app.py"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_only_the_app_imports_the_proxy() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("proxy/") or relative in MAY_IMPORT_PROXY:
            continue
        if any(m == "lmgate.proxy" or m.startswith("lmgate.proxy.") for m in _imports(path)):
            offenders.append(relative)
    assert not offenders, f"these import lmgate.proxy: {sorted(offenders)}"
