"""`pipeline device list|up|down|check|server-script`: the devices the pipeline measures on."""
from __future__ import annotations

import json

import click

from pipeline.cli.options import json_option
from pipeline.device import list_profiles, load_profile
from pipeline.device.check import check_device
from pipeline.device.emulated import EmulatedDevice
from pipeline.device.session import connection_label


@click.group()
def device() -> None:
    """Device profiles, the emulated arm64 device, reachability checks."""


@device.command("list")
@json_option
def list_(as_json: bool) -> None:
    """Shipped device profiles (device_profiles/*.yaml)."""
    rows = []
    for name in list_profiles():
        p = load_profile(name)
        rows.append({"name": p.name, "arch": p.arch, "connection": connection_label(p.connection),
                     "description": p.description})
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        click.echo(f"{r['name']:<16} {r['arch']:<7} {r['connection']:<28} {r['description']}")


@device.command()
@click.argument("name")
@click.option("--port", type=int, default=None, help="Port to serve on (default: the profile's).")
def up(name: str, port: int | None) -> None:
    """Provision (once, cached) and start an emulated device; idempotent."""
    state, started = EmulatedDevice(load_profile(name)).up(port)
    verb = "started" if started else "already running"
    click.echo(f"{name}: {verb} on {state.host}:{state.port} (pid {state.pid})")


@device.command()
@click.argument("name")
@click.option("--port", type=int, default=None, help="Stop only the server on this port.")
def down(name: str, port: int | None) -> None:
    """Stop an emulated device (launcher and its worker process)."""
    stopped = EmulatedDevice(load_profile(name)).down(port)
    click.echo(f"{name}: stopped {', '.join(f'port {s.port} (pid {s.pid})' for s in stopped)}"
               if stopped else f"{name}: not running")


@device.command()
@click.argument("name")
@json_option
def check(name: str, as_json: bool) -> None:
    """Run a small cross-compiled kernel on the device; report arch, TVM version, round trip."""
    result = check_device(load_profile(name))
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        status = "ok" if result.correct else f"WRONG RESULT (max error {result.max_abs_error:.2e})"
        click.echo(f"{result.device}: {status}; arch {result.arch} ({result.triple}), TVM {result.tvm_version}, "
                   f"connect {result.connect_ms:.0f} ms, round trip {result.round_trip_ms:.1f} ms "
                   f"via {result.connection}")
    if not result.correct:
        raise SystemExit(1)


@device.command("server-script")
def server_script() -> None:
    """Print the RPC server the pipeline runs on devices, for a farm's boards.

    Save it on the board and run `python3 rpc_server.py --host 0.0.0.0 --port 9090
    --port-end 9091 --tracker HOST:9190 --key KEY`: TVM's own server, except that a
    session whose process crashes ends only that session (upstream's stops accepting)."""
    from pipeline.device.rpcserver import SERVER_SCRIPT

    click.echo(SERVER_SCRIPT.strip())
