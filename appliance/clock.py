"""The clock against the installed release: a clock set back before the running release was built
would revive expired bundles, so `install` refuses (ClockBehindError) and `doctor` fails.
"""

from __future__ import annotations

import datetime as dt

from sealfuse.appliance.errors import ClockBehindError
from sealfuse.appliance.release import Layout
from sealfuse.verifier import Manifest, VerificationError
from sealfuse.verifier.verify import DEFAULT_CLOCK_SKEW

# The same allowance the verifier gives a bundle's `created` against the clock.
CLOCK_SKEW = DEFAULT_CLOCK_SKEW


def parse_now(now: dt.datetime | str | None) -> dt.datetime:
    """`now` as an aware UTC time (ISO-8601 text, a datetime, or None for the clock)."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, str):
        now = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def release_created(layout: Layout, version: str) -> dt.datetime | None:
    """The signed `created` time of an installed release, or None when its manifest is unreadable."""
    try:
        from sealfuse.appliance.fsutil import read_regular_bytes

        return Manifest.from_bytes(read_regular_bytes(layout.release(version) / "manifest.json")).created
    except (OSError, ValueError, VerificationError):
        return None


def clock_behind(created: dt.datetime, now: dt.datetime) -> ClockBehindError | None:
    """The error to raise when `now` is earlier than `created` by more than CLOCK_SKEW."""
    if now + CLOCK_SKEW >= created:
        return None
    return ClockBehindError(
        f"the clock ({now:%Y-%m-%dT%H:%M:%SZ}) is behind the installed release, which was built "
        f"at {created:%Y-%m-%dT%H:%M:%SZ} (allowed skew {int(CLOCK_SKEW.total_seconds())} s): "
        "set the clock (an expired bundle would pass against a clock set back)",
        now=now.isoformat(), created=created.isoformat(),
        skew_seconds=int(CLOCK_SKEW.total_seconds()))


def check_installed(layout: Layout, version: str | None, now: dt.datetime | str | None) -> None:
    """Raise ClockBehindError when the clock is behind the installed release `version`."""
    if version is None:
        return
    created = release_created(layout, version)
    err = clock_behind(created, parse_now(now)) if created is not None else None
    if err is not None:
        err.evidence["installed"] = version
        raise err
