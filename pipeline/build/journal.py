"""The build's journal: per-stage times and counts, written to `build.json` as it goes.

`build.json` is rewritten (atomically) after every stage, so an interrupted build still
says how far it got and what it had found; the final write adds the chosen subnets.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

from pipeline.atomic import write_json

log = logging.getLogger(__name__)


class Journal:
    """Stage timer and the JSON summary of one build."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "status": "running", "stages": [],
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._start = time.perf_counter()
        self.write()

    @contextlib.contextmanager
    def stage(self, name: str, device: str | None = None) -> Iterator[dict[str, Any]]:
        """Time a stage; the yielded dict collects its counts and notes."""
        record: dict[str, Any] = {"name": name, "device": device}
        start = time.perf_counter()
        log.info("stage %s: start", _label(record))
        try:
            yield record
        except BaseException:
            record["failed"] = True
            raise
        finally:
            record["seconds"] = round(time.perf_counter() - start, 2)
            self._add(record)

    def record(self, name: str, device: str | None, seconds: float, **details: Any) -> None:
        """Add a stage timed elsewhere (e.g. the search share of the closed loop)."""
        self._add({"name": name, "device": device, "seconds": round(seconds, 2), **details})

    def _add(self, record: dict[str, Any]) -> None:
        self.data["stages"].append(record)
        details = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("name", "device", "seconds", "failed"))
        log.info("stage %s: %s after %.1f s%s", _label(record), "failed" if record.get("failed") else "done",
                 record["seconds"], f" ({details})" if details else "")
        self.write()

    def finish(self, status: str, **extra: Any) -> None:
        self.data.update(extra)
        self.data["status"] = status
        self.data["total_seconds"] = round(time.perf_counter() - self._start, 2)
        self.write()

    def write(self) -> None:
        write_json(self.path, self.data, indent=1, default=str)


def _label(record: dict[str, Any]) -> str:
    return f"{record['name']} [{record['device']}]" if record["device"] else record["name"]
