"""MetaSchedule tuning of a plan's tasks, measured on the device, into its database.

Order of work: tasks by FLOPs weight (calls x FLOPs over the plan's subnets), so a cut
budget is spent where subnets spend their time. Per task: first the hand-written library
schedule is measured and committed as a record (the floor tuning must beat, and a seed:
MetaSchedule's evolutionary search starts from the database's best records), then
MetaSchedule runs the remaining trials. Records are appended to the JSON database as
measurements come back, so a killed run loses at most the batch in flight, and a rerun
skips tasks that already have their trials and continues the rest.

Measurement: in-process workers for `local` devices, TVM RPC through the profile's
connection (server, tracker, SSH tunnel, emulated device) otherwise; candidates for a
remote device are linked into `.so` files with its cross compiler.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm.tirx

from pipeline.kernels.database import open_database, publish, tuning_dir
from pipeline.kernels.intrinsics import register_cpu_intrinsics
from pipeline.kernels.plan import Plan, PlannedTask
from pipeline.kernels.schedules import ScheduleParams, schedule_trace
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneBudget:
    """Trials per task and over the whole run (None: per-task x number of tasks)."""

    trials_per_task: int
    total_trials: int | None = None
    trials_per_iter: int = 16
    max_tasks: int | None = None

    def __post_init__(self) -> None:
        from pipeline.errors import ConfigError

        if self.trials_per_task < 0:
            raise ConfigError(f"--trials must be >= 0, got {self.trials_per_task}")
        if self.total_trials is not None and self.total_trials < 0:
            raise ConfigError(f"--total-trials must be >= 0, got {self.total_trials}")


@dataclass(frozen=True)
class TaskOutcome:
    name: str
    trials_before: int
    trials_after: int
    library_us: float | None  # measured time of the library schedule (None: no fit)
    best_us: float | None  # best record in the database after tuning

    def to_dict(self) -> dict:
        return {"name": self.name, "trials_before": self.trials_before, "trials_after": self.trials_after,
                "library_us": self.library_us, "best_us": self.best_us}


def _builder_runner(profile, timeout_s: float, export_root: Path):
    """MetaSchedule builder and runner that measure on the profile's device; candidate
    libraries are written under `export_root` (removed by the caller when tuning ends)."""
    from tvm.s_tir import meta_schedule as ms

    register_cpu_intrinsics()  # here for TuneContext; `initializer` does it in each worker
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40, enable_cpu_cache_flush=False)
    if profile.connection.kind == "local":
        builder = ms.builder.LocalBuilder(timeout_sec=timeout_s, f_export=_Export(None, export_root),
                                          initializer=register_cpu_intrinsics)
        return builder, ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator,
                                              initializer=register_cpu_intrinsics)
    builder = ms.builder.LocalBuilder(timeout_sec=timeout_s, f_export=_Export(profile.cross_compiler, export_root),
                                      initializer=register_cpu_intrinsics)
    # Placeholders: the runner insists on tracker fields (a falsy port counts as missing)
    # even though sessions come from `f_create_session`.
    rpc_config = ms.runner.RPCConfig(tracker_host="unused", tracker_port=1, tracker_key="unused",
                                     session_timeout_sec=int(timeout_s * 4))
    runner = ms.runner.RPCRunner(rpc_config, evaluator_config=evaluator, max_workers=1,
                                 f_create_session=_ProfileSession(profile), f_cleanup=_close_session,
                                 initializer=register_cpu_intrinsics)
    return builder, runner


class _Export:
    """Links a candidate into a `.so` (with the device's cross compiler, if any) in a fresh
    folder under `root`; picklable for the builder pool. TVM's default export leaves one
    temporary folder per candidate behind, thousands over a tuning run."""

    def __init__(self, compiler: str | None, root: Path) -> None:
        self.compiler = compiler
        self.root = str(root)

    def __call__(self, mod) -> str:
        from tvm.support import cc

        path = Path(tempfile.mkdtemp(prefix="candidate-", dir=self.root)) / "candidate.so"
        fcompile = cc.cross_compiler(self.compiler) if self.compiler else None
        mod.export_library(str(path), fcompile=fcompile) if fcompile else mod.export_library(str(path))
        return str(path)


class _ProfileSession:
    """Opens an RPC session on the profile's device for MetaSchedule's runner."""

    def __init__(self, profile) -> None:
        self.profile = profile

    def __call__(self, _rpc_config):
        from pipeline.device import open_session

        # The opener's context manager rides along on the RPC session: collected earlier, it
        # would close the connection (and, over SSH, stop the tunnel and the remote server)
        # while the runner still uploads. `_close_session` (the runner's cleanup) exits it.
        manager = open_session(self.profile)
        rpc = manager.__enter__().rpc
        rpc.pipeline_opener = manager
        return rpc


def _close_session(session, remote_path: str | None) -> None:
    """The runner's cleanup: remove the candidate, then exit the opener at once.

    Left to the garbage collector, the cycle rpc -> opener -> rpc kept the connection open
    after the candidate, and the server (one client at a time) timed the next one out.
    """
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_cleanup

    if session is None:
        return
    try:
        default_cleanup(session, remote_path)
    finally:
        manager = session.__dict__.pop("pipeline_opener", None)
        if manager is not None:
            manager.__exit__(None, None, None)


def _records(database, task: PlannedTask) -> list:
    if not database.has_workload(task.mod):
        return []
    return list(database.get_top_k(database.commit_workload(task.mod), 1 << 30))


def _best_us(records: list) -> float | None:
    times = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in records if r.run_secs]
    return min(times) * 1e6 if times else None


def seed_library(database, tasks: list[PlannedTask], profile, params: ScheduleParams,
                 progress: bool = True) -> dict[str, float]:
    """Measure the library schedule of each task without records and commit it as one.

    Built in-process and timed as one batch through `pipeline.measure` on the profile's
    device (no MetaSchedule builder/runner pools: on a loaded 2-core machine their start-up
    alone hits their timeouts). Each record is committed as soon as it is measured.
    Returns microseconds by task.
    """
    from dataclasses import replace

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.database import TuningRecord

    from pipeline.device import RecordKey, export_library
    from pipeline.measure import MeasureJob, measure_batch

    target = profile.tvm_target()
    todo = [(t, tr) for t in tasks if not _records(database, t)
            for tr in [schedule_trace(t.mod["main"], params)] if tr is not None]
    measured: dict[str, float] = {}
    if not todo:
        return measured
    # what MetaSchedule's own runner does for the trials that follow: a few timed calls,
    # the thread pool left as the device has it, no re-measuring
    policy = replace(profile.policy, warmup=0, number=5, repeat=3, min_repeat_ms=20, threads=None, remeasure=0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        jobs, by_key = [], {}
        for i, (task, trace) in enumerate(todo):
            sch = tvm.s_tir.Schedule(task.mod)
            trace.apply_to_schedule(sch, remove_postproc=False)
            lib_path = export_library(tvm.tirx.build(sch.mod, target=target), Path(tmp) / f"k{i}.so", profile)
            args_info = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
            inputs = {f"arg{j}": rng.random([int(d) for d in a.shape]).astype(a.dtype)
                      for j, a in enumerate(args_info)}
            key = RecordKey(profile.name, task.name, str(target), tvm.__version__, "library-seed")
            jobs.append(MeasureJob(key, {}, lib_path, inputs, policy, vm=False))
            by_key[key] = (task, trace, args_info)
        for result in measure_batch(profile, jobs, progress=progress, desc="measure library schedules"):
            if result.measurement is None:
                continue
            task, trace, args_info = by_key[result.job.key]
            run_secs = [ms_ / 1e3 for ms_ in result.measurement.repeats_ms]
            database.commit_tuning_record(TuningRecord(trace, database.commit_workload(task.mod), run_secs,
                                                       target, args_info))
            measured[task.name] = sum(run_secs) / len(run_secs) * 1e6
    return measured


def _tune_one(database, task: PlannedTask, target, trials: int, budget: TuneBudget, builder, runner,
              work_dir: Path) -> None:
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=task.mod, target=target, space_generator="post-order-apply",
                         search_strategy="evolutionary", task_name=task.name)
    ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=str(work_dir), max_trials_global=trials,
                  max_trials_per_task=trials, num_trials_per_iter=min(budget.trials_per_iter, trials),
                  builder=builder, runner=runner, database=database, cost_model="xgb",
                  task_scheduler="round-robin")


def tune(plan: Plan, profile, budget: TuneBudget, database_dir: Path | None = None,
         timeout_s: float = 300.0, progress: bool = True) -> list[TaskOutcome]:
    """Tune `plan`'s tasks on `profile`'s device into its database (resumable).

    Without `database_dir` the device's database is used and published into
    `kernels/<device>/` after the library seeds and after every tuned task."""
    target = profile.tvm_target()
    folder = database_dir or tuning_dir(profile.name, target)
    database = open_database(folder)

    def checkpoint() -> None:  # device databases are packed into kernels/<device>/ as they grow
        if database_dir is None:
            publish(profile.name, folder, target)

    measurer = None  # MetaSchedule's builder/runner pools, started only when trials are due
    params = ScheduleParams.for_target(target)
    ranked = sorted(plan.tasks, key=lambda t: -t.weighted_flops)
    tasks = ranked[: budget.max_tasks]
    left = budget.total_trials if budget.total_trials is not None else budget.trials_per_task * len(tasks)
    library = seed_library(database, ranked, profile, params, progress=progress)
    checkpoint()
    outcomes = []
    work_dir = folder / "logs"
    bar = progress_bar(tasks, desc=f"tune {plan.space} on {profile.name}", unit="task", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="pipeline-tune-") as export_root:
        try:
            for task in bar:
                before = _records(database, task)
                done = max(0, len(before) - 1)  # the library seed is not a MetaSchedule trial
                trials = min(max(0, budget.trials_per_task - done), left)
                if trials > 0:
                    measurer = measurer or _builder_runner(profile, timeout_s, Path(export_root))
                    _tune_one(database, task, target, trials, budget, *measurer, work_dir)
                    left -= trials
                    checkpoint()
                after = _records(database, task)
                outcome = TaskOutcome(task.name, len(before), len(after), library.get(task.name), _best_us(after))
                outcomes.append(outcome)
                bar.set_postfix(best_us=outcome.best_us, trials_left=left)
                log.info("%s: %d -> %d records, library %s us, best %s us", task.name, len(before), len(after),
                         _fmt(outcome.library_us), _fmt(outcome.best_us))
        finally:
            _shutdown_pools(measurer)
    return outcomes


def _shutdown_pools(measurer: tuple | None) -> None:
    """Shut MetaSchedule's builder/runner worker pools down: a runner worker holds the last
    device session (over SSH: the tunnel and the remote server) until it exits."""
    for item in measurer or ():
        pool = getattr(item, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)


def _fmt(us: float | None) -> str:
    return "-" if us is None else f"{us:.1f}"
