"""Progress of long work: a tqdm bar on a terminal, a periodic one-line log record otherwise.

A bar redrawn with carriage returns is what a person at a terminal wants; sent to a file
(a CI log, `bash scripts/main.sh > log`) the same bar becomes hundreds of KB of redraws
around the few lines that say something. So when stderr is not a terminal the bar logs
one line (`pipeline.progress` logger, INFO) at most every `LOG_INTERVAL_S` seconds while
it advances, and a last one when it closes: count, elapsed time, rate and postfix.
Every call site goes through `progress_bar`, which takes tqdm's arguments.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

#: Seconds between two progress lines in a log (a bar on a terminal redraws as tqdm does).
LOG_INTERVAL_S = 30.0


def stderr_is_terminal() -> bool:
    """Whether progress goes to a person watching (bars) or to a log (lines)."""
    return sys.stderr.isatty()


class _Discard:
    """Where a logging bar's own drawing goes: everything it shows is logged instead."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LoggingBar(tqdm):
    """tqdm that logs a status line instead of redrawing: at most every `mininterval`
    seconds while it advances (`set_postfix` included; none for the empty start) and
    once at the end, even with `leave=False` (in a log the final count is the line
    worth keeping)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._logged_at: float | None = None  # None until __init__ is done: no line for the start
        self._closing = False
        self._logged_n: float | None = None  # the count of the last line logged
        kwargs.update(file=_Discard(), dynamic_ncols=False, smoothing=0)  # rate = average over the run
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        super().__init__(*args, **kwargs)
        self._logged_at = time.time()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self._logged_at is None or msg is not None:
            return True
        now = time.time()
        if self._closing and self._logged_n == self.n:
            return True  # the last update's line already said the end
        if self._closing or now - self._logged_at >= self.mininterval:
            self._logged_at, self._logged_n = now, self.n
            log.info("%s", self.format_meter(**{**self.format_dict, "ncols": 0}))
        return True

    def close(self) -> None:
        if not self.disable:
            self.leave, self._closing = True, True
        super().close()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A progress bar for `iterable` (or for manual `update()`s), with tqdm's arguments:
    tqdm itself when stderr is a terminal, `LoggingBar` otherwise."""
    return tqdm(iterable, **kwargs) if stderr_is_terminal() else LoggingBar(iterable, **kwargs)
