"""TVM builds in worker processes, each finishing with an atomic compile-cache commit.

A job is plain data (cache key, staged ONNX folder, device profile) so it crosses the
`spawn` boundary; TVM and torch are not fork-safe. A worker that dies leaves its staged
folder uncommitted, so the cache never holds half a build.
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.compile.build import build_library
from pipeline.compile.cache import LIBRARY, ONNX, CacheKey, CompileCache
from pipeline.compile.frontend import onnx_to_relax
from pipeline.progress import progress_bar


@dataclass(frozen=True)
class BuildJob:
    """A TVM build for a worker process (plain data: crosses the spawn boundary)."""

    key: CacheKey
    staged: str
    profile: Any              # DeviceProfile (a frozen, picklable dataclass)
    cache_root: str
    onnx_diff: float


def run_job(job: BuildJob) -> dict[str, Any]:
    """Worker: ONNX -> Relax -> lowered, compiled, linked library -> cache entry."""
    start = time.perf_counter()
    staged = Path(job.staged)
    coverage = build_library(onnx_to_relax(staged / ONNX), job.profile, staged / LIBRARY)
    entry = {"kernel_coverage": coverage, "compile_seconds": round(time.perf_counter() - start, 3),
             "onnx_max_abs_diff": job.onnx_diff}
    CompileCache(Path(job.cache_root)).commit(job.key, staged, entry)
    return entry


def run_jobs(jobs: list[BuildJob], workers: int) -> None:
    """Build every job, in worker processes when there is more than one."""
    if not jobs:
        return
    if len(jobs) == 1 or workers <= 1:
        for job in progress_bar(jobs, desc="compile", unit="subnet", disable=len(jobs) == 1):
            run_job(job)
        return
    context = multiprocessing.get_context("spawn")  # TVM and torch are not fork-safe
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        try:
            for future in progress_bar(as_completed(futures), total=len(futures), desc="compile", unit="subnet"):
                future.result()
        except BaseException:
            # A failed build or Ctrl-C: do not start the queued builds (what finished is cached).
            pool.shutdown(wait=True, cancel_futures=True)
            raise
