"""Keeping one key's requests for one model (the name the client used: an alias is one name
whatever key each upstream knows it by) on the same upstream (`LMGATE_UPSTREAM_AFFINITY_
MARGIN`): a warm prompt cache, one conversation on one server. The upstream the key used last
is kept while it runs at most `margin` answers more than the least busy of the others; past
that, placement chooses freely again. Off when unset. At most `MAX_PAIRS` pairs are kept."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection

MAX_PAIRS = 10_000


class Affinity:
    def __init__(self, margin: int) -> None:
        self.margin = margin
        self._last: OrderedDict[tuple[str, str], str] = OrderedDict()

    def narrow(
        self, key: str, model: str, where: Collection[str], busy: Callable[[str], int]
    ) -> Collection[str]:
        """`where`, or only the upstream this key used last for this model."""
        last = self._last.get((key, model))
        if last is None or last not in where or len(where) == 1:
            return where
        least = min(busy(name) for name in where if name != last)
        return frozenset({last}) if busy(last) <= least + self.margin else where

    def remember(self, key: str, model: str, upstream: str) -> None:
        pair = (key, model)
        self._last[pair] = upstream
        self._last.move_to_end(pair)
        while len(self._last) > MAX_PAIRS:
            self._last.popitem(last=False)
