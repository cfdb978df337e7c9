"""`pipeline device ...` and `pipeline measurements export` through the real CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.device.rpcserver import free_port
from pipeline.device.measure import Measurement
from pipeline.device.store import MeasurementRecord, MeasurementStore, RecordKey


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_device_list_and_local_check(pipeline_cache: Path):
    result = _run("device", "list", "--json")
    assert result.exit_code == 0
    names = {row["name"] for row in json.loads(result.output)}
    assert {"x86-host", "arm64-emulated", "rpi4", "rpi5", "android-arm64"} <= names
    result = _run("device", "check", "x86-host", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["correct"] and report["arch"] == "x86_64" and report["tvm_version"]


def test_unreachable_device_is_one_line_naming_host_and_port(tmp_path: Path, pipeline_cache: Path):
    port = free_port()
    profile = tmp_path / "board.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "board", "arch": "x86_64", "target": {"kind": "llvm"}, "cross_compiler": None,
        "connection": {"kind": "rpc", "host": "127.0.0.1", "port": port, "timeout_s": 2}}))
    result = _run("device", "check", str(profile))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and lines[0].startswith("error:")


def test_up_refuses_boards(pipeline_cache: Path):
    result = _run("device", "up", "rpi4")
    assert result.exit_code == 2 and "not an emulated device" in result.output


def test_measurements_export(tmp_path: Path, pipeline_cache: Path):
    store_path = tmp_path / "m.sqlite"
    with MeasurementStore(store_path) as store:
        m = Measurement.from_repeats([1.0, 1.1, 1.2], number=1, attempts=1, max_spread=0.5)
        store.add(MeasurementRecord.from_measurement(RecordKey("x86-host", "s1", "t", "v", "k"), {}, m))
    for fmt in ("csv", "json"):
        out = tmp_path / f"out.{fmt}"
        result = _run("measurements", "export", "--format", fmt, "-o", str(out), "--store", str(store_path))
        assert result.exit_code == 0 and "wrote 1 measurement" in result.output
        assert "s1" in out.read_text()


def test_server_script_serves_a_board(tmp_path: Path, pipeline_cache: Path):
    """The printed script, saved and run as a user would on a board, is a working RPC server."""
    import sys

    from pipeline.device import load_profile
    from pipeline.device.check import check_device
    from pipeline.device.profile import RPCConnection
    from pipeline.device.rpcserver import launch, stop_group

    result = _run("device", "server-script")
    assert result.exit_code == 0
    script = tmp_path / "rpc_server.py"
    script.write_text(result.output)
    port = free_port()
    server = launch([sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port),
                     "--port-end", str(port + 1)], tmp_path / "server.log").wait_ready()
    try:
        assert server.port == port
        profile = load_profile("x86-host").with_connection(RPCConnection(host="127.0.0.1", port=port, timeout_s=30))
        assert check_device(profile).correct
    finally:
        stop_group(server.pid)
