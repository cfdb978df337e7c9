"""The emulated arm64 device: provisioning pieces, bring-up, cross-compiled code measured on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.device import MeasurePolicy, load_profile, measure, open_session
from pipeline.device.check import build_tiny, check_device, tiny_inputs
from pipeline.device.emulated import EmulatedDevice, apt_mirror
from pipeline.device.rpcserver import pid_alive
from pipeline.errors import DeviceError


def test_apt_mirror_read_from_sources(tmp_path: Path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    assert apt_mirror((tmp_path,)) == "http://mirror.example/debian"
    legacy = tmp_path / "sources.list"
    legacy.write_text("# comment\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert apt_mirror((tmp_path / "none", legacy)) == "http://old.example/debian"
    with pytest.raises(DeviceError, match="no Debian mirror"):
        apt_mirror((tmp_path / "none",))


def test_only_emulated_profiles_come_up():
    with pytest.raises(DeviceError, match="not an emulated device"):
        EmulatedDevice(load_profile("rpi4"))


def test_emulated_device_runs_cross_compiled_code(emulated_arm64, tmp_path: Path):
    result = check_device(emulated_arm64)
    assert result.correct and result.arch == "arm64" and result.triple.startswith("aarch64")
    lib = build_tiny(emulated_arm64, tmp_path / "tiny-arm64.so")
    with open_session(emulated_arm64) as session:
        m = measure(session, lib, tiny_inputs(), MeasurePolicy(repeat=3, min_repeat_ms=1, max_spread=10.0))
    assert len(m.repeats_ms) == 3 and m.median_ms > 0


def test_up_is_idempotent_and_down_stops_everything(emulated_arm64):
    """A second `up` on the running port starts nothing; the recorded server group is alive."""
    from pipeline.paths import REPO_ROOT

    device = EmulatedDevice(load_profile("arm64-emulated"), base_dir=REPO_ROOT / ".cache" / "devices")
    state, started = device.up(port=emulated_arm64.connection.port)
    assert not started and state.port == emulated_arm64.connection.port and pid_alive(state.pid)
