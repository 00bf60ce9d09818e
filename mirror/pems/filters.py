"""The grid filters the client sends: one organization, and "modified since" in the tenant's wall-clock
time (with the daylight-saving logic that keeps a window's repeated hour in)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class GridFilter:
    """One entry of MULTIADDON_FILTERS; a grid call's filters must all hold (they are joined by AND)."""

    alias: str
    operator: str
    value: str = ""


def organization_filter(org_code: str) -> GridFilter:
    """Filter the grid to one organization's rows."""
    return GridFilter("pfs_a_org", "=", org_code)


def modified_since_filter(since: datetime, *, time_zone: ZoneInfo, until: datetime | None = None) -> GridFilter:
    """Filter to rows saved at or after `since` (aware), in the tenant's minute-precision local time.

    PEMS compares wall-clock times. Where the clock was set back between `since` and `until` (the
    hour repeated when daylight saving ends), a row saved after the change carries an earlier stamp
    than one saved before it, so the bound is the earliest wall-clock reading of that window.
    """
    local = _earliest_wall_time(since, until or since, time_zone)
    # Rounding down keeps the boundary minute in: PEMS stores no seconds.
    return GridFilter("pfs_lastmodified", ">=", local.strftime("%m/%d/%Y %H:%M"))


def _earliest_wall_time(start: datetime, end: datetime, zone: ZoneInfo) -> datetime:
    """The earliest wall-clock reading in `zone` from `start` to `end` (aware): `start`'s, or the
    reading just after a moment the clock was set back, found to the minute."""
    earliest = start.astimezone(zone).replace(tzinfo=None)
    step = timedelta(hours=1)  # zones change their offset at most once in an hour
    moment = start
    while moment < end:
        following = min(moment + step, end)
        if following.astimezone(zone).utcoffset() < moment.astimezone(zone).utcoffset():
            before, after = moment, following
            while after - before > timedelta(minutes=1):
                middle = before + (after - before) / 2
                if middle.astimezone(zone).utcoffset() < before.astimezone(zone).utcoffset():
                    after = middle
                else:
                    before = middle
            earliest = min(earliest, after.astimezone(zone).replace(tzinfo=None))
        moment = following
    return earliest
