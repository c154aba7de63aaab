"""Which model names statistics, Prometheus series and usage rows keep by name.

A model name is whatever the client wrote in its body, and each name kept costs memory for
the life of the process (window tallies, series), scrape time and disk (usage rows). So one
`ModelNames` per gateway decides for all of them alike: every model the upstream offers is
kept by name (the operator's catalogue, however large), and so are the first `limit` other
names; any further name is counted as `other`. Known models never compete with made-up ones
for the places, so a client that fills them with junk cannot push the real models into
`other`. With several workers each keeps its own places.
"""

from __future__ import annotations

from collections.abc import Callable

OTHER = "other"
DEFAULT_LIMIT = 100


class ModelNames:
    __slots__ = ("known", "limit", "strangers", "tracked")

    def __init__(
        self, limit: int = DEFAULT_LIMIT, known: Callable[[str], bool] | None = None
    ) -> None:
        self.limit = limit
        self.known = known  # whether the upstream offers a model of that name
        self.tracked: set[str] = set()
        self.strangers = 0  # names kept though the upstream did not offer them

    def __call__(self, model: str | None) -> str | None:
        """The name to record `model` under: itself, or `other` once the places are taken.
        No model (None or empty) stays as it is."""
        if not model or model in self.tracked:
            return model
        known = self.known
        if known is not None and known(model):
            self.tracked.add(model)
            return model
        if self.strangers >= self.limit:
            return OTHER
        self.strangers += 1
        self.tracked.add(model)
        return model
