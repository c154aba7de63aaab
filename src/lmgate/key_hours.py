"""When a key may be used: allowed hours on allowed days in a time zone, the household's or
the classroom's rule ("07:00-21:00, Mon-Fri, Europe/Berlin").

A window may cross midnight (`22:00-06:00`): it belongs to the day it starts on, so with
`--days fri` it runs from Friday 22:00 to Saturday 06:00. `00:00-24:00` is the whole day. Times
are wall-clock times in the key's zone (or the gateway's local zone), daylight saving included.
Checking is a few comparisons on a cached local date; it is done only for keys that have hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_LOOKAHEAD_DAYS = 8


class ScheduleProblem(ValueError):
    """A schedule that cannot be read; the message says what to write instead."""


def parse_hours(text: str) -> tuple[int, int]:
    """`07:00-21:00` -> (420, 1260) minutes since midnight; the end may be 24:00."""
    match = _HOURS.match(text)
    if not match:
        raise ScheduleProblem(f"hours '{text}': write HH:MM-HH:MM, e.g. 07:00-21:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ScheduleProblem(f"hours '{text}': times run from 00:00 to 24:00")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ScheduleProblem(f"hours '{text}': the window is empty")
    return start, end


def parse_days(text: str) -> frozenset[int]:
    """`mon-fri`, `sat,sun`, `mon-wed,fri`, `daily` -> weekday numbers (Monday is 0)."""
    value = text.strip().lower()
    if value in ("", "daily", "all", "every day", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in value.split(","):
        ends = [p.strip()[:3] for p in part.split("-")]
        if len(ends) > 2 or any(e not in DAY_NAMES for e in ends):
            raise ScheduleProblem(f"days '{text}': write e.g. mon-fri, sat,sun or daily")
        first, last = DAY_NAMES.index(ends[0]), DAY_NAMES.index(ends[-1])
        span = (last - first) % 7
        days.update((first + i) % 7 for i in range(span + 1))
    return frozenset(days)


def parse_zone(name: str | None) -> tzinfo | None:
    """An IANA zone (`Europe/Berlin`); None or empty means the gateway's local zone."""
    if not name or not name.strip():
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleProblem(
            f"time zone '{name}': use an IANA name such as Europe/Berlin"
        ) from None


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def describe_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "every day"
    return ",".join(DAY_NAMES[d] for d in sorted(days))


@dataclass(frozen=True, slots=True)
class KeyHours:
    start: int  # minutes since local midnight
    end: int  # may be <= start: the window runs past midnight
    days: frozenset[int]
    zone: tzinfo | None = None
    zone_name: str | None = None

    @classmethod
    def parse(cls, hours: str | None, days: str | None, zone: str | None) -> KeyHours | None:
        """None when neither hours nor days are given (the key may be used at any time)."""
        if not hours and not days:
            return None
        start, end = parse_hours(hours) if hours else (0, 24 * 60)
        return cls(
            start, end, parse_days(days or ""), parse_zone(zone), (zone or "").strip() or None
        )

    def _local(self, now: float) -> datetime:
        """`now` as a naive wall-clock time in the key's zone."""
        return _wall(now, self.zone)

    def _ts(self, wall: datetime) -> float:
        return _stamp(wall, self.zone)

    def _windows(self, day: datetime) -> tuple[float, float]:
        """The window that starts on `day`'s date, as timestamps (daylight saving included)."""
        start = datetime.combine(day.date(), time(0)) + timedelta(minutes=self.start)
        length = (self.end - self.start) % (24 * 60) or 24 * 60
        return self._ts(start), self._ts(start + timedelta(minutes=length))

    def is_open(self, now: float) -> bool:
        local = self._local(now)
        for back in (0, 1):  # today's window, or yesterday's running past midnight
            day = local - timedelta(days=back)
            if day.weekday() not in self.days:
                continue
            start, end = self._windows(day)
            if start <= now < end:
                return True
        return False

    def opens_at(self, now: float) -> float | None:
        """When the key may next be used (now if it may); None if never (no days at all)."""
        if self.is_open(now):
            return now
        local = self._local(now)
        for ahead in range(_LOOKAHEAD_DAYS):
            day = local + timedelta(days=ahead)
            if day.weekday() not in self.days:
                continue
            start, _ = self._windows(day)
            if start > now:
                return start
        return None

    def describe(self) -> str:
        zone = self.zone_name or "the gateway's local time"
        return f"{_clock(self.start)}-{_clock(self.end)} {describe_days(self.days)} ({zone})"

    def local_text(self, moment: float) -> str:
        shown = (
            datetime.fromtimestamp(moment, self.zone)
            if self.zone
            else datetime.fromtimestamp(moment).astimezone()
        )
        return shown.strftime("%a %Y-%m-%d %H:%M %Z").strip()


def stored_hours(hours: str | None, days: str | None, zone: str | None) -> KeyHours | None:
    """A key's stored schedule (checked when written); a zone this machine no longer knows
    falls back to its local time rather than locking the key out."""
    try:
        return KeyHours.parse(hours, days, zone)
    except ScheduleProblem:
        return KeyHours.parse(hours, days, None)


def stored_zone(name: str | None) -> tzinfo | None:
    try:
        return parse_zone(name)
    except ScheduleProblem:
        return None


def _wall(now: float, zone: tzinfo | None) -> datetime:
    return (
        datetime.fromtimestamp(now, zone).replace(tzinfo=None)
        if zone
        else datetime.fromtimestamp(now)
    )


def _stamp(wall: datetime, zone: tzinfo | None) -> float:
    """A naive wall-clock time in `zone` (None: this machine's zone) as a timestamp."""
    return wall.replace(tzinfo=zone).timestamp() if zone else wall.timestamp()


def local_day_start(now: float, zone: tzinfo | None) -> float:
    """Midnight of `now`'s day in `zone`: where a daily token budget starts again."""
    return _stamp(datetime.combine(_wall(now, zone).date(), time(0)), zone)
