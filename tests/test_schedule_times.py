"""A schedule's times (taskrunner.schedules), with injected clocks: no waiting.

Daylight saving in Europe/Paris, 2026: clocks jump from 02:00 to 03:00 on
29 March and fall back from 03:00 to 02:00 on 25 October. Debian cron's rule:
a fixed time the jump skips fires once just after it; a fixed time the fall
repeats fires once; `*` in the hour follows real time.
"""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from taskrunner.schedules import cron_after, cron_fields, due, next_after, zone

PARIS = zone("Europe/Paris")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def times(expr: str, start: datetime, count: int) -> list[datetime]:
    found, at = [], start
    for _ in range(count):
        at = cron_after(expr, PARIS, at)
        found.append(at)
    return found


def test_spring_forward_a_skipped_time_fires_once_just_after_the_jump():
    got = times("30 2 * * *", utc(2026, 3, 27, 12), 3)
    assert got == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, just after the jump
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_fall_back_a_repeated_time_fires_once():
    got = times("30 2 * * *", utc(2026, 10, 24, 12), 2)
    assert got == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first of the two
        utc(2026, 10, 26, 1, 30),  # the next day, 02:30 CET: none in between
    ]


def test_fall_back_hourly_follows_real_time():
    got = times("0 * * * *", utc(2026, 10, 24, 23, 30), 4)
    # From 01:30 CEST, every real hour once: 02:00 CEST, 02:00 CET, 03:00 CET, 04:00 CET.
    assert got == [utc(2026, 10, 25, hour) for hour in range(4)]


def test_spring_forward_every_quarter_hour_skips_nothing_real():
    got = times("*/15 * * * *", utc(2026, 3, 29, 0, 50), 3)
    # 01:50 CET, then 03:00 CEST (= 01:00 UTC): the hour that does not exist is skipped.
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15), utc(2026, 3, 29, 1, 30)]


def test_aliases_and_bad_expressions():
    assert cron_fields("@hourly") == "0 * * * *"
    assert cron_fields("@daily") == "0 0 * * *"
    assert cron_fields(" */5  *  * * mon-fri ") == "*/5 * * * mon-fri"
    for bad in ("61 * * * *", "* * * *", "0 0 * * * *", "@often", "a b c d e", ""):
        with pytest.raises(ValueError, match="cron expression"):
            cron_fields(bad)
    with pytest.raises(ValueError, match="Unknown time zone"):
        zone("Mars/Olympus_Mons")


def test_only_the_latest_missed_time_fires():
    every = SimpleNamespace(every=60, cron="", timezone="")
    due_at = utc(2026, 11, 30, 10, 0)
    now = due_at + timedelta(minutes=5, seconds=30)
    assert due(every, due_at, now) == (utc(2026, 11, 30, 10, 5), utc(2026, 11, 30, 10, 6))
    hourly = SimpleNamespace(every=None, cron="0 * * * *", timezone="Europe/Paris")
    fire, following = due(hourly, utc(2026, 11, 30, 1, 0), utc(2026, 11, 30, 9, 59))
    assert (fire, following) == (utc(2026, 11, 30, 9, 0), utc(2026, 11, 30, 10, 0))
    assert next_after(every, due_at) == due_at + timedelta(seconds=60)
