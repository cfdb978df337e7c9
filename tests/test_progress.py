"""Progress reporting: redrawn bars on a terminal, a few whole log lines in a log."""
from __future__ import annotations

import io
import logging
import time

import pytest

from pipeline import progress
from pipeline.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_periodic_lines_and_a_final_one(monkeypatch, caplog, capsys):
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    start = time.perf_counter()
    bar = progress_bar(total=12, desc="profile x86-host", unit="subnet", mininterval=0.1, leave=False)
    for _ in range(12):
        time.sleep(0.025)
        bar.set_postfix(loss="0.5")  # refreshes on a terminal; rate-limited in a log
        bar.update()
    bar.close()
    elapsed = time.perf_counter() - start
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert 2 <= len(lines) <= elapsed / 0.1 + 1, lines  # at most one per 0.1 s, plus the last
    assert all(line.startswith("profile x86-host: ") and "loss=0.5" in line for line in lines)
    assert " 0/12" not in lines[0]  # nothing logged for the empty start
    assert "100% 12/12" in lines[-1] and "subnet/s" in lines[-1]  # leave=False: still a last line
    assert "\r" not in capsys.readouterr().err  # no redraws go to stderr


def test_an_end_already_logged_is_not_logged_again(monkeypatch, caplog):
    """A batch whose last job took longer than the interval logs its end on that update;
    closing the bar must not log the same count again."""
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with progress_bar(total=2, desc="measure", unit="job", mininterval=0) as bar:
        bar.update()
        bar.update()
    lines = [r.getMessage().split(" [")[0] for r in caplog.records]
    assert lines == ["measure:  50% 1/2", "measure: 100% 2/2"]


def test_iterating_logs_the_count_once_done(monkeypatch, caplog):
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    assert list(progress_bar(range(3), desc="evaluate", unit="subnet")) == [0, 1, 2]
    assert [r.getMessage().split(" [")[0] for r in caplog.records] == ["evaluate: 100% 3/3"]
    assert list(progress_bar(range(3), desc="quiet", disable=True)) == [0, 1, 2]
    assert len(caplog.records) == 1


def test_terminal_gets_a_redrawn_bar(monkeypatch, caplog):
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    screen = Terminal()
    for _ in progress_bar(range(5), desc="compile", unit="subnet", file=screen, mininterval=0):
        pass
    assert screen.getvalue().count("\r") >= 5 and "5/5" in screen.getvalue()
    assert not caplog.records


@pytest.mark.parametrize("attached, expected", [(True, True), (False, False)])
def test_mode_follows_stderr(monkeypatch, attached, expected):
    stream = Terminal() if attached else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert progress.stderr_is_terminal() is expected
    bar = progress_bar(total=1, desc="x")
    assert isinstance(bar, progress.LoggingBar) is not expected
    bar.close()
