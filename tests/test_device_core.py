"""Profiles, local/RPC sessions, measurement and check on this machine (fast tests)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pipeline.device import (MeasurePolicy, export_library, list_profiles, load_profile, measure,
                             open_session)
from pipeline.device import session as session_module
from pipeline.device.check import build_tiny, check_device, tiny_inputs
from pipeline.device.profile import RPCConnection
from pipeline.device.rpcserver import free_port
from pipeline.errors import ConfigError, DeviceError

SHIPPED = ["android-arm64", "arm64-emulated", "rpi4", "rpi5", "x86-host"]


def test_shipped_profiles_load_and_compile(tmp_path: Path):
    """Every shipped profile (including boards we cannot reach) gives a target a kernel compiles for."""
    import tvm

    from pipeline.device.check import tiny_module

    assert set(SHIPPED) <= set(list_profiles())
    for name in SHIPPED:
        profile = load_profile(name)
        target = profile.tvm_target()
        assert "num-cores" in target.attrs or profile.arch == "x86_64"
        executable = tvm.compile(tiny_module(), target=target)
        if profile.arch == "arm64" and profile.target["mtriple"].endswith("gnu"):
            lib = export_library(executable, tmp_path / f"{name}.so", profile)
            assert lib.read_bytes()[:4] == b"\x7fELF" and lib.read_bytes()[18] == 0xB7  # EM_AARCH64


def test_host_target_filled_from_machine():
    target = load_profile("x86-host").tvm_target()
    assert int(target.attrs["num-cores"]) >= 1 and str(target.attrs["mcpu"])


def _write(tmp_path: Path, profile: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.parametrize("change, message", [
    ({"arch": "mips"}, "`arch` must be one of"),
    ({"connection": {"kind": "carrier-pigeon"}}, "`kind` must be one of"),
    ({"connection": {"kind": "rpc", "host": "h"}}, "lacks `port`"),
    ({"policy": {"repeat": 0}}, "`repeat` must be > 0"),
    ({"policy": {"repat": 3}}, "unknown key(s) ['repat']"),
    ({"policy": {"reference": "median"}}, "`reference` must be one of ['largest', 'smallest']"),
    ({"policy": {"reference": {"attentivenas": "median"}}}, "or a mapping from space name to one of them"),
    ({"target": {"kind": "cuda"}}, "`target.kind` must be 'llvm'"),
    ({"cross_compiler": None, "arch": "arm64"}, "set `cross_compiler`"),
])
def test_profile_validation_errors(tmp_path: Path, change: dict, message: str):
    raw = yaml.safe_load(Path(load_profile("rpi4").source).read_text())
    raw.update(change)
    with pytest.raises(ConfigError) as err:
        load_profile(_write(tmp_path, raw))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_reference_per_space(tmp_path: Path):
    """A mapping names the reference of each space it lists; the others keep the largest."""
    raw = yaml.safe_load(Path(load_profile("rpi4").source).read_text())
    raw["policy"]["reference"] = {"attentivenas": "smallest"}
    policy = load_profile(_write(tmp_path, raw)).policy
    assert (policy.reference_for("attentivenas"), policy.reference_for("demo")) == ("smallest", "largest")


def test_bad_target_key_named(tmp_path: Path):
    raw = yaml.safe_load(Path(load_profile("rpi4").source).read_text())
    raw["target"]["mtripel"] = "aarch64-linux-gnu"
    with pytest.raises(ConfigError, match="TVM refuses target"):
        load_profile(_write(tmp_path, raw)).tvm_target()


def test_unknown_profile_lists_known():
    with pytest.raises(ConfigError, match="known: .*x86-host"):
        load_profile("no-such-board")


def test_local_session_measures_every_repeat(tmp_path: Path):
    profile = load_profile("x86-host")
    lib = build_tiny(profile, tmp_path / "tiny.so")
    policy = MeasurePolicy(repeat=7, min_repeat_ms=1, max_spread=10.0)
    with open_session(profile) as session:
        assert session.info()["arch"] == "x86_64"
        m = measure(session, lib, tiny_inputs(), policy)
    assert len(m.repeats_ms) == 7 and not m.remeasured and m.spread_ok
    assert min(m.repeats_ms) <= m.median_ms <= max(m.repeats_ms) and m.median_ms > 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to the second")
def test_measuring_keeps_to_the_cpus_the_process_may_use(tmp_path: Path):
    """Pinned to its last CPU (taskset, a cgroup), a measurement must stay there: TVM's
    default thread-pool mode moved the calling thread to CPU 0, where other work ran."""
    script = textwrap.dedent(f"""
        import os
        from pipeline.device import MeasurePolicy, load_profile, measure, open_session
        from pipeline.device.check import build_tiny, tiny_inputs
        os.sched_setaffinity(0, {{max(os.sched_getaffinity(0))}})
        profile = load_profile("x86-host")
        lib = build_tiny(profile, {str(tmp_path / "tiny.so")!r})
        with open_session(profile) as session:
            measure(session, lib, tiny_inputs(), MeasurePolicy(repeat=2, min_repeat_ms=1, threads=1, max_spread=10.0))
        print(sorted(os.sched_getaffinity(0)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == str([max(os.sched_getaffinity(0))])


def test_too_wide_spread_is_remeasured(tmp_path: Path):
    """A spread limit no real timing meets forces every allowed re-measurement, and is flagged."""
    profile = load_profile("x86-host")
    lib = build_tiny(profile, tmp_path / "tiny.so")
    policy = MeasurePolicy(repeat=5, min_repeat_ms=1, max_spread=1e-12, remeasure=2)
    with open_session(profile) as session:
        m = measure(session, lib, tiny_inputs(), policy)
    assert m.remeasured and m.attempts == 3 and not m.spread_ok


def test_rpc_session_runs_and_measures(local_rpc_server, tmp_path: Path):
    lib = build_tiny(local_rpc_server, tmp_path / "tiny.so")
    result = check_device(local_rpc_server)
    assert result.correct and result.connection == "rpc" and result.arch == "x86_64"
    with open_session(local_rpc_server) as session:
        assert session.is_remote
        m = measure(session, lib, tiny_inputs(), MeasurePolicy(repeat=3, min_repeat_ms=1, max_spread=10.0))
    assert len(m.repeats_ms) == 3


def test_unreachable_device_fails_fast_in_one_line():
    port = free_port()  # nothing listens here
    profile = load_profile("x86-host").with_connection(RPCConnection("127.0.0.1", port, timeout_s=2.0))
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as err:
        with open_session(profile):
            pass
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message and "rpc_server" in message
    assert time.monotonic() - t0 < 30  # generous: a fast failure, not a hang (not a timing goal)


def test_hung_device_times_out():
    """A listener that accepts but never answers the RPC handshake gives a timeout error."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        profile = load_profile("x86-host").with_connection(RPCConnection("127.0.0.1", port, timeout_s=2.0))
        with pytest.raises(DeviceError, match="no answer within 2 s"):
            with open_session(profile):
                pass


def test_stopping_a_server_stops_launcher_and_worker(tmp_path: Path):
    """The launcher runs its listener in a popen_worker child: stopping must take both."""
    from pipeline.device.rpcserver import group_members, start_rpc_server

    server = start_rpc_server(tmp_path / "server.log")
    try:
        members = group_members(server.pid)
        assert len(members) >= 2 and server.pid in members
    finally:
        server.stop()
    assert not group_members(server.pid)


def _scaled_module(shape: tuple[int, ...]):
    """`main(x) = x * 2` over `shape`: two of these differ in code and in input shape."""
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Scaled:
        @R.function
        def main(x: R.Tensor(shape, "float32")):
            with R.dataflow():
                out = R.multiply(x, R.const(2.0, "float32"))
                R.output(out)
            return out

    return Scaled


@pytest.mark.parametrize("where", ["local", "rpc"])
def test_a_new_library_at_a_loaded_path_runs_its_own_code(where, request, tmp_path: Path):
    """A library rebuilt into a path the process already loaded (a budget folder in the next
    round): dlopen would hand back the open handle, i.e. the old code for the old shape."""
    import numpy as np
    import tvm
    from tvm import relax

    profile = load_profile("x86-host") if where == "local" else request.getfixturevalue("local_rpc_server")
    path = tmp_path / "model.so"
    with open_session(profile) as session:
        for shape in [(4, 8), (2, 3)]:  # each library accepts only its own input shape
            export_library(tvm.compile(_scaled_module(shape), target=profile.tvm_target()), path, profile)
            x = np.arange(np.prod(shape), dtype="float32").reshape(shape)
            vm = relax.VirtualMachine(session.load(path), session.device)
            out = vm["main"](tvm.runtime.tensor(x, session.device)).numpy()
            np.testing.assert_array_equal(out, 2 * x)
        # Loaded libraries leave no file behind them (a profile run loads hundreds).
        if where == "local":
            assert not list(session_module._LOAD_DIR.iterdir())
        else:
            uploaded = f"{session_module._library_digest(path)[1]}-{path.name}"
            with pytest.raises(Exception, match="(?i)no such file|not found|fail"):
                session.rpc.download(uploaded)
