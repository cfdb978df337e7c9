"""Per-device preparation: pick the profiles, bring the device up, profile it, fit its predictor.

Each step reuses what the caches hold: a running emulated device is not restarted,
stored measurements are not retaken (the profiling loop skips them), so a second build
or a resumed one goes straight to the search.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from pipeline.build.config import LOCAL_KINDS, BuildConfig
from pipeline.errors import ConfigError
from pipeline.space import SearchSpace

log = logging.getLogger(__name__)


def select_profiles(cfg: BuildConfig) -> list[Any]:
    """`--device` names (checked against `--target`), else the target's profiles reachable here."""
    from pipeline.device import list_profiles, load_profile

    if cfg.devices:
        profiles = [load_profile(name) for name in cfg.devices]
        wrong = [p.name for p in profiles if p.arch != cfg.arch]
        if wrong:
            raise ConfigError(f"device(s) {wrong} are not {cfg.arch}; drop --target or pick a matching --device")
        return profiles
    profiles = [p for p in map(load_profile, list_profiles())
                if p.arch == cfg.arch and p.connection.kind in LOCAL_KINDS]
    if not profiles:
        raise ConfigError(f"no {cfg.arch} device is reachable on this machine without set-up; "
                          "name one with --device (see `pipeline device list`)")
    return profiles


def bring_up_in_background(profiles: list[Any]) -> dict[str, Future]:
    """`bring_up` of each profile in its own thread, started now: an emulated device's first
    bring-up (root file system, wheels, TVM imported under emulation: 1-2 minutes) then
    overlaps the stages before the build needs the device. The future holds what
    `bring_up` returns or raises, plus `background_seconds` in the info. Daemon threads: Ctrl-C does
    not wait for them (each step is stamped only when done, so the next run redoes it)."""
    futures: dict[str, Future] = {}
    for profile in profiles:
        future: Future = Future()
        future.set_running_or_notify_cancel()

        def run(profile: Any = profile, future: Future = future) -> None:
            start = time.perf_counter()
            try:
                up, info = bring_up(profile)
                future.set_result((up, {**info, "background_seconds": round(time.perf_counter() - start, 2)}))
            except BaseException as err:  # handed to the thread that waits for the device
                future.set_exception(err)

        threading.Thread(target=run, name=f"bring-up {profile.name}", daemon=True).start()
        futures[profile.name] = future
    return futures


def bring_up(profile: Any) -> tuple[Any, dict[str, Any]]:
    """Start the emulated device if the profile is one and nothing serves its port yet."""
    if profile.connection.kind != "emulated":
        return profile, {"connection": profile.connection.kind}
    from pipeline.device.emulated import EmulatedDevice
    from pipeline.device.session import probe
    from pipeline.errors import DeviceError

    c = profile.connection
    try:
        probe(c.host, c.port, 2.0, f"emulated device {profile.name}", "")
        return profile, {"connection": "emulated", "started": False, "port": c.port}
    except DeviceError:
        pass  # not running: provision (cached) and start it
    state, started = EmulatedDevice(profile).up()
    profile = replace(profile, connection=replace(profile.connection, host=state.host, port=state.port))
    return profile, {"connection": "emulated", "started": started, "port": state.port}


def kernels_status(profile: Any) -> dict[str, Any]:
    """Whether compiled subnets get a tuned database on this device, or library schedules only."""
    from pipeline.kernels import kernel_db_hash
    from pipeline.kernels.database import database_status

    target = profile.tvm_target()
    tuned, note = database_status(profile.name, target)
    if not tuned:
        log.warning("%s: %s: subnets compile with the library schedules; "
                    "`pipeline kernels tune --device %s` tunes them", profile.name, note, profile.name)
    return {"kernel_db_hash": kernel_db_hash(profile.name, target), "tuned_database": tuned}


def profile_device(profile: Any, space: SearchSpace, n_subnets: int, blocks: bool, workers: int | None,
                   reference: Any, num_classes: int | None = None) -> dict[str, Any]:
    """Measure the sampling plan's first `n_subnets` subnets (with a `num_classes` head) and,
    with `blocks`, their distinct blocks (the lookup table); stored ones are skipped."""
    from pipeline.predict.features import distinct_blocks
    from pipeline.profiling import profile_blocks, profile_subnets, sampling_plan

    plan = sampling_plan(space, n_subnets)
    summary = profile_subnets(profile, space, plan, workers=workers, reference=reference,
                              num_classes=num_classes).to_dict()
    if blocks:
        done = profile_blocks(profile, space, distinct_blocks(space, plan), reference=reference, workers=workers)
        summary.update(blocks_planned=done.planned, blocks_measured=done.measured)
    return summary


def fit_latency(profile: Any, space: SearchSpace, num_classes: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit the device's predictor on every subnet measured with current code (and a
    `num_classes` head), and save it.

    No held-out split here: the build wants the best predictor from what it measured
    (the closed loop then measures the picks on the device); its error is reported
    from the cross-validation that selected the predictor kind. Its info's
    `reference_quiet_ms` holds the reference times its (contention-corrected) latencies assume.
    """
    from pipeline.predict import fit_predictor, save_predictor
    from pipeline.predict.workflow import load_block_table, load_dataset

    data = load_dataset(profile, space, num_classes=num_classes)
    lut = load_block_table(profile, space)
    predictor = fit_predictor(profile.name, space, data.encoded, data.latency_ms, data.ids, lut=lut
                              ).with_info(reference_quiet_ms=data.reference_quiet_ms, num_classes=data.num_classes)
    revision = int(save_predictor(predictor).stem[1:])
    cv = predictor.info.get("cv", {}).get(predictor.kind, {})
    report = {"kind": predictor.kind, "revision": revision, "n_train": len(data),
              "blocks": len(lut.entries) if lut is not None else 0,
              **{f"cv_{k}": cv.get(k) for k in ("mape", "within_10pct", "kendall_tau", "rmse_ms")}}
    return predictor.with_info(revision=revision), report
