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
        label = f"{name} [{device}]" if device else name
        log.info("stage %s ...", label)
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - start, 2)
            self.data["stages"].append(record)
            log.info("stage %s: %.1f s %s", label, record["seconds"],
                     {k: v for k, v in record.items() if k not in ("name", "device", "seconds")})
            self.write()

    def record(self, name: str, device: str | None, seconds: float, **details: Any) -> None:
        """Add a stage timed elsewhere (e.g. the search share of the closed loop)."""
        self.data["stages"].append({"name": name, "device": device, "seconds": round(seconds, 2), **details})
        self.write()

    def finish(self, status: str, **extra: Any) -> None:
        self.data.update(extra)
        self.data["status"] = status
        self.data["total_seconds"] = round(time.perf_counter() - self._start, 2)
        self.write()

    def write(self) -> None:
        write_json(self.path, self.data, indent=1, default=str)
