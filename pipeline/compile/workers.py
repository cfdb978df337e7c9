"""TVM builds in worker processes, each finishing with an atomic compile-cache commit.

A job is plain data (cache key, staged ONNX folder, device profile) so it crosses the
`spawn` boundary; TVM and torch are not fork-safe. A worker that dies leaves its staged
folder uncommitted, so the cache never holds half a build.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from pipeline.compile.build import build_library
from pipeline.compile.cache import LIBRARY, ONNX, CacheKey, CompileCache
from pipeline.compile.frontend import onnx_to_relax
from pipeline.progress import progress_bar

T = TypeVar("T")


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
    run_in_workers(run_job, [(job,) for job in jobs], workers, "compile", "subnet")


#: (workers, the TVM_* environment it was started with) and the pool itself.
_POOL: tuple[tuple, ProcessPoolExecutor] | None = None


def _settings(prefix: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(prefix)}


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A `spawn` process pool kept across calls while the worker count and TVM settings stay.

    Each spawned worker imports TVM and torch (6-8 s); a pool per batch paid that on every
    batch of a profile run, a third of the emulated-arm64 main job's compile time. The
    `PIPELINE_*` settings (cache, kernel databases, profiles) travel with every call
    (`_with_settings`), so a change of them does not cost a new pool; `TVM_*` ones may be
    read once at import, so a change of those does.
    """
    global _POOL
    key = (workers, tuple(sorted(_settings("TVM_").items())))
    if _POOL is not None and _POOL[0] == key:
        return _POOL[1]
    shutdown_pool()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    _POOL = (key, pool)
    return pool


def _with_settings(settings: dict[str, str], fn: Callable[..., T], *args: Any) -> T:
    """Worker side: `fn(*args)` under exactly the caller's `PIPELINE_*` environment."""
    for name in set(_settings("PIPELINE_")) - set(settings):
        del os.environ[name]
    os.environ.update(settings)
    return fn(*args)


def _exit_with_parent(parent: int, period_s: float = 2.0) -> None:
    """Worker initializer: end this worker once the process that started it is gone.

    A parent stopped by `kill` (not Ctrl-C, which reaches the whole process group) left its
    idle workers running for good: two were found still alive 77 minutes later."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def shutdown_pool() -> None:
    """Stop the kept pool (queued calls are cancelled); the next call starts a new one."""
    global _POOL
    if _POOL is not None:
        _POOL[1].shutdown(wait=True, cancel_futures=True)
        _POOL = None


atexit.register(shutdown_pool)


def run_in_workers(fn: Callable[..., T], calls: Sequence[tuple], workers: int, desc: str, unit: str) -> list[T]:
    """`fn(*args)` for every tuple in `calls`, results in order; in the kept worker pool
    when there is more than one call and one worker (`fn` and its arguments pickle)."""
    if len(calls) <= 1 or workers <= 1:
        return [fn(*args) for args in progress_bar(calls, desc=desc, unit=unit, disable=len(calls) <= 1)]
    pool, settings = worker_pool(workers), _settings("PIPELINE_")
    futures = [pool.submit(_with_settings, settings, fn, *args) for args in calls]
    try:
        for future in progress_bar(as_completed(futures), total=len(futures), desc=desc, unit=unit):
            future.result()
    except BaseException:
        # A failed build or Ctrl-C: the queued calls do not start (what finished is cached).
        shutdown_pool()
        raise
    return [future.result() for future in futures]
