"""The progress line: bytes, percentage, rate and time left on a terminal,
redrawn at most ten times a second, and nothing at all when the stream is not
a terminal."""

from __future__ import annotations

import io
from typing import List

import pytest

from ckptd import TerminalProgress
from ckptd.progress import format_duration, format_size


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(out: str) -> List[str]:
    return [x.replace("\x1b[K", "") for x in out.split("\r") if x]


def test_sizes_and_durations_read_as_people_write_them() -> None:
    assert format_size(512) == "512 B"
    assert format_size(12_300_000) == "12.3 MB"
    assert format_size(1_500_000_000) == "1.5 GB"
    assert format_duration(7) == "0:07"
    assert format_duration(750) == "12:30"
    assert format_duration(7500) == "2:05:00"


def test_a_known_total_shows_bytes_percent_rate_and_time_left() -> None:
    out, clock = Tty(), Clock()
    p = TerminalProgress("push ckpt.pth", stream=out, clock=clock)
    p(0, 1_000_000_000)
    clock.now += 2
    p(400_000_000, 1_000_000_000)
    last = lines(out.getvalue())[-1]
    assert last == "push ckpt.pth  400.0 MB / 1.0 GB  40%  200.0 MB/s  0:03 left"
    clock.now += 3
    p(1_000_000_000, 1_000_000_000)
    p.finish()
    assert out.getvalue().endswith("\n")
    assert lines(out.getvalue())[-1].strip() == "push ckpt.pth  1.0 GB in 5.0 s  200.0 MB/s"


def test_an_unknown_total_shows_bytes_and_rate() -> None:
    out, clock = Tty(), Clock()
    p = TerminalProgress("save", stream=out, clock=clock)
    clock.now += 1
    p(50_000_000, None)
    assert lines(out.getvalue())[-1] == "save  50.0 MB  50.0 MB/s"


def test_redraws_are_throttled_but_the_end_is_always_drawn() -> None:
    out, clock = Tty(), Clock()
    p = TerminalProgress("x", stream=out, clock=clock)
    for i in range(1, 101):
        clock.now += 0.001
        p(i, 100)
    drawn = lines(out.getvalue())
    assert len(drawn) == 2  # the first update, then the last (100 %)
    assert "100%" in drawn[-1]


def test_a_retry_that_starts_over_restarts_the_rate() -> None:
    out, clock = Tty(), Clock()
    p = TerminalProgress("x", stream=out, clock=clock)
    clock.now += 10
    p(10_000_000, None)  # 1 MB/s
    clock.now += 1
    p(0, None)  # the transfer starts over
    clock.now += 1
    p(5_000_000, None)
    assert lines(out.getvalue())[-1] == "x  5.0 MB  5.0 MB/s"


def test_nothing_is_drawn_when_the_stream_is_not_a_terminal() -> None:
    out, clock = io.StringIO(), Clock()
    with TerminalProgress("x", stream=out, clock=clock) as p:
        clock.now += 1
        p(10, 100)
        p(100, 100)
    assert out.getvalue() == ""


def test_a_long_label_gives_way_to_the_numbers(monkeypatch: "pytest.MonkeyPatch") -> None:
    monkeypatch.setenv("COLUMNS", "60")
    out, clock = Tty(), Clock()
    p = TerminalProgress("push " + "x" * 100 + ".pth", stream=out, clock=clock)
    clock.now += 1
    p(5_000_000, 10_000_000)
    last = lines(out.getvalue())[-1]
    assert len(last) <= 59
    assert last.startswith("...") and last.endswith("x.pth  5.0 MB / 10.0 MB  50%  5.0 MB/s  "
                                                     "0:01 left")
    # narrower than the numbers: the line is cut, never wrapped
    monkeypatch.setenv("COLUMNS", "30")
    clock.now += 1
    p(6_000_000, 10_000_000)
    assert len(lines(out.getvalue())[-1]) <= 29
