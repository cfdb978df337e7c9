"""Devices: profiles, sessions (local, RPC, tracker, SSH, emulated arm64), measurement, store.

Public API (others code against these names):
`load_profile`, `list_profiles`, `DeviceProfile` (`.tvm_target()`), `MeasurePolicy`,
`open_session(profile)` -> `DeviceSession` (`.device`, `.load(lib)`, `.info()`),
`export_library(executable, path, profile)`, `measure(session, lib, inputs, policy)`
-> `Measurement`, `MeasurementStore` / `MeasurementRecord` / `RecordKey`. Batches of
jobs (serial, or over a tracker's servers) are `pipeline.measure`'s.
"""
from pipeline.device.export import export_library
from pipeline.device.measure import Measurement, measure
from pipeline.device.profile import DeviceProfile, MeasurePolicy, list_profiles, load_profile
from pipeline.device.session import DeviceSession, open_session
from pipeline.device.store import MeasurementRecord, MeasurementStore, RecordKey, default_store_path

__all__ = [
    "DeviceProfile", "DeviceSession", "MeasurePolicy", "Measurement", "MeasurementRecord", "MeasurementStore",
    "RecordKey", "default_store_path", "export_library", "list_profiles", "load_profile", "measure", "open_session",
]
