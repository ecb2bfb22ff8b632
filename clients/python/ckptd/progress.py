"""Progress of a long transfer on a terminal, as curl and pip show it.

TerminalProgress is a progress callback for Client's push and pull methods
(progress=...): called with (bytes done, total bytes or None), it redraws one
line of stderr at most ten times a second,

    push ckpt.pth  412.0 MB / 1.0 GB  40%  205.3 MB/s  0:03 left

and, from finish(), a last line with the total and the average rate. It draws
nothing when its stream is not a terminal, so logs and pipes stay clean. The
library never draws on its own: the command line passes one of these.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from types import TracebackType
from typing import Callable, Optional, TextIO, Type

__all__ = ["TerminalProgress", "format_size", "format_duration"]


def format_size(n: float) -> str:
    """Bytes for people, in decimal units: "512 B", "12.3 MB", "1.5 GB"."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1000.0
    raise AssertionError("unreachable")


def format_duration(secs: float) -> str:
    """Seconds as "0:07", "12:30" or "2:05:00"."""
    s = int(secs + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)


class TerminalProgress:
    """A progress line on stream (default sys.stderr) for one transfer named
    label. Callable as progress(done, total); total None draws bytes and rate
    only. A done smaller than the last one (a retried transfer starting over)
    restarts the rate. enabled: None draws only when stream is a TTY. Not
    thread-safe: one transfer, one object."""

    def __init__(
        self,
        label: str,
        *,
        stream: Optional[TextIO] = None,
        enabled: Optional[bool] = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.interval = interval
        self.clock = clock
        self.start = clock()
        self.base = 0  # bytes done when the rate's clock started
        self.done = 0
        self.total: Optional[int] = None
        self.last_draw: Optional[float] = None
        self.drawn = False

    def __call__(self, done: int, total: Optional[int]) -> None:
        now = self.clock()
        if done < self.done:
            self.start, self.base = now, done
        self.done, self.total = done, total
        if not self.enabled:
            return
        if self.last_draw is not None and now - self.last_draw < self.interval:
            if total is None or done < total:
                return
        self.last_draw = now
        self._draw(self._line(now))

    def rate(self, now: Optional[float] = None) -> Optional[float]:
        """Bytes per second since the transfer (re)started, None before any
        time has passed."""
        elapsed = (self.clock() if now is None else now) - self.start
        if elapsed <= 0:
            return None
        return (self.done - self.base) / elapsed

    def _line(self, now: float) -> str:
        parts = [format_size(self.done)]
        if self.total is not None:
            parts[-1] += " / " + format_size(self.total)
            if self.total > 0:
                parts.append("%d%%" % (100 * self.done // self.total))
        rate = self.rate(now)
        if rate is not None and rate > 0:
            parts.append(format_size(rate) + "/s")
            if self.total is not None and self.done < self.total:
                parts.append(format_duration((self.total - self.done) / rate) + " left")
        return "  ".join(parts)

    def _width(self) -> int:
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            cols = 0
        return cols if cols > 0 else shutil.get_terminal_size((80, 24)).columns

    def _draw(self, stats: str) -> None:
        # The numbers always fit; a long label gives way, keeping its end.
        width = self._width() - 1
        room = max(width - len(stats) - 2, 8)
        label = self.label if len(self.label) <= room else "..." + self.label[-(room - 3):]
        line = ("%s  %s" % (label, stats))[:width]  # a wrapped line would not be redrawn
        self.stream.write("\r%s\x1b[K" % line)
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        """Draws the last line (total, time, average rate) and ends it, if a
        line was drawn at all."""
        if not self.enabled or not self.drawn:
            return
        now = self.clock()
        secs = now - self.start
        took = "%.1f s" % secs if secs < 60 else format_duration(secs)
        stats = "%s in %s" % (format_size(self.done), took)
        rate = self.rate(now)
        if rate:
            stats += "  %s/s" % format_size(rate)
        self._draw(stats)
        self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.finish()
