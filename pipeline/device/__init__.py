"""Devices: profiles, sessions (local, RPC, tracker, SSH, emulated arm64), measurement, store.

Public API (others code against these names):
`load_profile`, `list_profiles`, `DeviceProfile` (`.tvm_target()`), `MeasurePolicy`,
`open_session(profile)` -> `DeviceSession` (`.device`, `.load(lib)`, `.info()`),
`export_library(executable, path, profile)`, `measure(session, lib, inputs, policy)`
-> `Measurement`, `MeasurementStore` / `MeasurementRecord` / `RecordKey`,
`MeasureJob` + `run_measurements(profile, jobs, store)` (resumable batches; tracker
profiles in parallel through `measure_on_tracker`).
"""
from pipeline.device.export import export_library
from pipeline.device.farm import JobResult, MeasureJob, measure_on_tracker
from pipeline.device.measure import Measurement, measure
from pipeline.device.profile import DeviceProfile, MeasurePolicy, list_profiles, load_profile
from pipeline.device.runner import run_measurements
from pipeline.device.session import DeviceSession, open_session
from pipeline.device.store import MeasurementRecord, MeasurementStore, RecordKey, default_store_path

__all__ = [
    "DeviceProfile", "DeviceSession", "JobResult", "MeasureJob", "MeasurePolicy", "Measurement",
    "MeasurementRecord", "MeasurementStore", "RecordKey", "default_store_path", "export_library",
    "list_profiles", "load_profile", "measure", "measure_on_tracker", "open_session", "run_measurements",
]
