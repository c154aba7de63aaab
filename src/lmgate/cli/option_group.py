"""Options several commands share, declared once as a dataclass of `Annotated` fields.

`option_group` puts the group's fields in a command's signature where its parameter of the
group's type stands, and hands the command one instance made of them: the option lists stay
in one place, and typer still sees plain options (same flags, same order, same help).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, get_type_hints

F = TypeVar("F", bound=Callable[..., Any])


def option_group(name: str, group: type[Any]) -> Callable[[F], F]:
    """Replace `command`'s parameter `name` by the options of the dataclass `group`."""
    hints = get_type_hints(group, include_extras=True)
    fields = [f.name for f in dataclasses.fields(group)]
    defaults = {f.name: f.default for f in dataclasses.fields(group)}

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        params = list(signature.parameters.values())
        at = [p.name for p in params].index(name)
        kind = params[at].kind
        options = [
            inspect.Parameter(field, kind, default=defaults[field], annotation=hints[field])
            for field in fields
        ]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {field: kwargs.pop(field, defaults[field]) for field in fields}
            return command(*args, **{name: group(**values)}, **kwargs)

        new = signature.replace(parameters=[*params[:at], *options, *params[at + 1 :]])
        wrapper.__signature__ = new  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in new.parameters.values()} | {
            "return": new.return_annotation
        }
        return wrapper  # type: ignore[return-value]

    return decorate
