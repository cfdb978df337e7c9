"""Which errors become one line and which keep their traceback, through the real CLI.

User and device errors (`PipelineError`) are one line on stderr, exit 2. Anything else is
a bug: a short "internal error, please report" line naming the file that holds the
traceback (exit 1), or the traceback itself under `-v`. The device layer only turns
real link/device failures into `DeviceError`, asked of a real TVM RPC server.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.build.run import lost_device_error
from pipeline.device import load_profile
from pipeline.device.profile import RPCConnection
from pipeline.device.rpcserver import free_port, start_rpc_server
from pipeline.device.session import call_with_timeout, rpc_connect
from pipeline.errors import DeviceError

#: The CLI with one library function replaced by one that has a bug (the fault is ours to
#: pick; the entry point, the command and the error handling are the real ones).
BROKEN_CLI = """
import pipeline.space.arch as arch

def count_flops(*args, **kwargs):
    raise TypeError("count_flops() got an unexpected keyword argument 'bogus'")

arch.count_flops = count_flops
from pipeline.cli import main
main(prog_name="pipeline")
"""


def _pipeline(tmp_path: Path, *args: str, broken: bool = False) -> subprocess.CompletedProcess:
    """`pipeline ARGS` in a subprocess, with its cache in `tmp_path/cache`."""
    command = [sys.executable, "-m", "pipeline"]
    if broken:
        script = tmp_path / "broken_cli.py"
        script.write_text(BROKEN_CLI)
        command = [sys.executable, str(script)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIPELINE_CACHE": str(tmp_path / "cache")})


def test_user_and_device_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    user = _pipeline(tmp_path, "info", "a9")
    assert user.returncode == 2 and user.stderr.startswith("error: ARCH 'a9'") and user.stderr.count("\n") == 1
    verbose = _pipeline(tmp_path, "-v", "info", "a9")  # -v adds where it was raised, still exit 2
    assert verbose.returncode == 2 and verbose.stderr.strip().splitlines()[-1] == user.stderr.strip()
    assert "Traceback (most recent call last)" in verbose.stderr
    port = free_port()
    profile = tmp_path / "board.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "board", "arch": "x86_64", "target": {"kind": "llvm"}, "cross_compiler": None,
        "connection": {"kind": "rpc", "host": "127.0.0.1", "port": port, "timeout_s": 2}}))
    device = _pipeline(tmp_path, "device", "check", str(profile))
    assert device.returncode == 2 and device.stderr.count("\n") == 1
    assert device.stderr.startswith("error: device board: cannot reach 127.0.0.1:")
    assert not (tmp_path / "cache" / "errors").exists()


def test_a_bug_is_an_internal_error_with_its_traceback_in_a_file(tmp_path: Path) -> None:
    result = _pipeline(tmp_path, "info", "a0", broken=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("internal error, please report: TypeError: count_flops() got an unexpected keyword")
    assert "pipeline -v" in line and "Traceback" not in line
    saved = Path(re.search(r"traceback in (\S+);", line).group(1))
    assert saved.parent == tmp_path / "cache" / "errors"
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and 'in count_flops\n    raise TypeError' in text
    assert "info a0" in text.splitlines()[0]  # the command that failed


def test_a_bug_shows_its_traceback_under_verbose(tmp_path: Path) -> None:
    result = _pipeline(tmp_path, "-v", "info", "a0", broken=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "pipeline/cli/info.py" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("internal error, please report it with the traceback")
    assert not (tmp_path / "cache" / "errors").exists()


def test_call_with_timeout_wraps_device_failures_only(tmp_path: Path) -> None:
    def bug() -> None:
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError, match="unsupported operand") as caught:
        call_with_timeout(bug, 10, "device x")
    assert caught.traceback[-1].name == "bug"  # raised where it happened, not as a DeviceError
    with pytest.raises(DeviceError, match="device x: boom"):
        call_with_timeout(lambda: (_ for _ in ()).throw(ConnectionResetError("boom")), 10, "device x")
    port = free_port()  # a real TVM handshake with nothing listening
    with pytest.raises(DeviceError, match=f"device y at 127.0.0.1:{port}"):
        rpc_connect("127.0.0.1", port, "", 10, "device y", "start it", check_reachable=False)


def test_a_failure_is_a_lost_device_only_when_the_device_stopped_answering(tmp_path: Path) -> None:
    server = start_rpc_server(tmp_path / "server.log")
    profile = load_profile("x86-host").with_connection(RPCConnection("127.0.0.1", server.port, timeout_s=5))
    died = RuntimeError("Check failed: (code == RPCCode::kReturn) is false: code=kShutdown")
    try:
        # the device answers: the error is not about it, whatever its text says
        assert lost_device_error(RuntimeError("socket connection timeout in our code"), profile) is None
    finally:
        server.stop()
    lost = lost_device_error(died, profile)
    assert isinstance(lost, DeviceError) and "lost device x86-host" in str(lost) and "kShutdown" in str(lost)
    assert lost_device_error(KeyError("stage"), profile) is None  # a bug stays a bug, device or not
    assert lost_device_error(died, None) is None  # no device in use yet


def test_verification_records_device_failures_and_lets_bugs_through(tmp_path: Path) -> None:
    import numpy as np

    from pipeline.compile.verify import verify_on_device
    from pipeline.device import open_session
    from pipeline.device.check import build_tiny

    profile = load_profile("x86-host")
    garbage = tmp_path / "model.so"
    garbage.write_bytes(b"not a library")
    tiny = build_tiny(profile, tmp_path / "tiny.so")
    with open_session(profile) as session:
        failed = verify_on_device(session, garbage, np.zeros((1, 3, 8, 8), "float32"), np.zeros((1, 10)), "x86-host")
        assert failed["verified"] is False and "Failed to load dynamic shared library" in failed["error"]
        with pytest.raises(ValueError, match="unknown dtype"):  # our bug (no tensor given), not the device's
            verify_on_device(session, tiny, "x", np.zeros((32, 32)), "x86-host")
