"""A clock you can set: holds, notice windows and reminders depend on "now"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time (tz-aware UTC)."""

    def now(self) -> datetime:
        """The current instant."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current instant, UTC."""
        return datetime.now(UTC)


class SettableClock:
    """A clock tests move by hand instead of sleeping: starts at real now, then only moves
    when told (`advance`), so hold expiry can be tested without waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._offset = timedelta(0)
        self._fixed = start

    def now(self) -> datetime:
        """Real now plus the accumulated offset (or the fixed start plus it)."""
        base = self._fixed if self._fixed is not None else datetime.now(UTC)
        return base + self._offset

    def advance(self, delta: timedelta) -> None:
        """Move time forward."""
        self._offset += delta
