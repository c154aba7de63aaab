"""Allowed hours for a key: parsing, windows across midnight and daylight saving, next opening."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from lmgate.key_hours import (
    KeyHours,
    ScheduleProblem,
    local_day_start,
    parse_days,
    parse_hours,
)

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo = BERLIN) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def test_parsing_and_its_errors() -> None:
    assert parse_hours("07:00-21:00") == (420, 1260)
    assert parse_hours(" 22:30 - 06:15 ") == (1350, 375)
    assert parse_hours("00:00-24:00") == (0, 1440)
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("Sat,Sunday") == frozenset({5, 6})
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days("daily") == frozenset(range(7))
    for bad in ("7-21", "25:00-26:00", "07:00-07:00", "07:60-08:00", "07:00-24:30"):
        with pytest.raises(ScheduleProblem):
            parse_hours(bad)
    for bad in ("weekdays", "mon-fri-sat", "mo,xx"):
        with pytest.raises(ScheduleProblem):
            parse_days(bad)
    with pytest.raises(ScheduleProblem):
        KeyHours.parse("07:00-21:00", None, "Mars/Olympus")
    assert KeyHours.parse(None, None, "Europe/Berlin") is None


def test_school_days_from_seven_to_nine() -> None:
    hours = KeyHours.parse("07:00-21:00", "mon-fri", "Europe/Berlin")
    assert hours is not None
    assert hours.is_open(at("2026-12-07T07:00"))  # Monday
    assert hours.is_open(at("2026-12-07T20:59"))
    assert not hours.is_open(at("2026-12-07T21:00"))
    assert not hours.is_open(at("2026-12-07T06:59"))
    assert not hours.is_open(at("2026-12-05T12:00"))  # Saturday
    assert hours.opens_at(at("2026-12-05T12:00")) == at("2026-12-07T07:00")
    assert hours.opens_at(at("2026-12-07T21:30")) == at("2026-12-08T07:00")
    assert "07:00-21:00 mon,tue,wed,thu,fri (Europe/Berlin)" == hours.describe()
    # the same instant seen from another zone is judged in the key's zone
    assert hours.is_open(datetime.fromisoformat("2026-12-07T06:30+00:00").timestamp())


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    hours = KeyHours.parse("22:00-06:00", "fri", "Europe/Berlin")
    assert hours is not None
    assert hours.is_open(at("2026-12-04T23:00"))  # Friday night
    assert hours.is_open(at("2026-12-05T05:59"))  # Saturday morning, Friday's window
    assert not hours.is_open(at("2026-12-05T22:30"))  # Saturday night
    assert not hours.is_open(at("2026-12-04T05:00"))  # Friday morning: Thursday's window
    assert hours.opens_at(at("2026-12-05T07:00")) == at("2026-12-11T22:00")


def test_daylight_saving_moves_the_instant_not_the_wall_clock() -> None:
    hours = KeyHours.parse("07:00-21:00", None, "Europe/Berlin")
    assert hours is not None
    # the last Sunday of March 2027: clocks go from 02:00 to 03:00
    before = at("2027-03-27T07:00")
    after = at("2027-03-28T07:00")
    assert after - before == 23 * 3600
    assert hours.opens_at(at("2027-03-28T01:00")) == after
    assert local_day_start(at("2027-03-28T12:00"), BERLIN) == at("2027-03-28T00:00")


def test_no_days_never_opens() -> None:
    hours = KeyHours(420, 1260, frozenset(), BERLIN, "Europe/Berlin")
    assert not hours.is_open(at("2026-12-07T12:00"))
    assert hours.opens_at(at("2026-12-07T12:00")) is None
