"""`--json` for any command, added by one decorator without touching its option list.

With `--json`, what the command would print for people goes to stderr, and stdout gets exactly
one JSON document: the last answer the command recorded (`record`), which is the admin API's
own answer (camelCase keys, stable) or, for commands that work on the data dir, the record
they describe. A failure that recorded an error body prints that body, so a script reads
`error.message` and the exit status alike.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import orjson
import typer

F = TypeVar("F", bound=Callable[..., Any])
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]
_recorded: ContextVar[list[Any] | None] = ContextVar("lmgate_cli_json", default=None)


def json_mode() -> bool:
    return _recorded.get() is not None


def record(data: Any) -> None:
    """What the running command printed for `--json`, if it was given."""
    found = _recorded.get()
    if found is not None:
        found.append(data)


def dump(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def json_output(command: F) -> F:
    """Give `command` a `--json` flag (see the module's docstring)."""
    signature = inspect.signature(command, eval_str=True)
    flag = inspect.Parameter(
        "as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Json
    )

    @functools.wraps(command)
    def wrapper(*args: Any, as_json: bool = False, **kwargs: Any) -> Any:
        if not as_json:
            return command(*args, **kwargs)
        found: list[Any] = []
        token = _recorded.set(found)
        out = sys.stdout
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return command(*args, **kwargs)
        finally:
            _recorded.reset(token)
            if found:
                out.write(dump(found[-1]) + "\n")
                out.flush()

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), flag]
    )
    return wrapper  # type: ignore[return-value]
