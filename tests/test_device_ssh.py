"""SSH bring-up against a real sshd on 127.0.0.1 with a throwaway key pair and known_hosts."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.device import MeasurePolicy, load_profile, measure, open_session
from pipeline.device.check import build_tiny, check_device, tiny_inputs
from pipeline.device.profile import SSHConnection
from pipeline.device.rpcserver import SERVER_SCRIPT, free_port
from pipeline.device.session import probe
from pipeline.errors import DeviceError

from conftest import assert_seeded_and_tuned

SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """A real sshd on a free loopback port; yields (port, client key, known_hosts line)."""
    if os.geteuid() != 0 or not Path(SSHD).exists():
        pytest.fail("the SSH tests need root and openssh-server (scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client.pub").read_text())
    port = free_port()
    (tmp / "sshd_config").write_text(f"""ListenAddress 127.0.0.1
HostKey {tmp / 'host'}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {tmp / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    with (tmp / "sshd.log").open("wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config"), "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                probe("127.0.0.1", port, 1.0, "sshd", "")
                break
            except DeviceError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        host_key = (tmp / "host.pub").read_text().split()
        yield port, tmp / "client", f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n", tmp
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _profile(sshd, known_hosts: Path, rpc_port: int):
    port, key, _, _ = sshd
    return load_profile("x86-host").with_connection(SSHConnection(
        host="127.0.0.1", port=port, user="root", key_file=str(key), known_hosts=str(known_hosts),
        remote_python=sys.executable, remote_rpc_port=rpc_port, timeout_s=30.0))


def _servers_on(port: int) -> list[str]:
    """Command lines of live processes serving RPC on `port` (the 'remote' is this machine)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if SERVER_SCRIPT.encode() in args and str(port).encode() in args:
            found.append(b" ".join(args).decode())
    return found


def test_measure_through_ssh_and_server_gone_after(sshd, tmp_path: Path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd[2])
    rpc_port = free_port()
    profile = _profile(sshd, known, rpc_port)
    lib = build_tiny(profile, tmp_path / "tiny.so")
    with open_session(profile) as session:
        assert _servers_on(rpc_port), "the RPC server should run on the remote side while the session is open"
        assert session.info()["remote"]
        m = measure(session, lib, tiny_inputs(), MeasurePolicy(repeat=3, min_repeat_ms=1, max_spread=10.0))
    assert len(m.repeats_ms) == 3
    assert not _servers_on(rpc_port), "the remote RPC server must be stopped when the session ends"
    assert check_device(profile).correct  # a fresh bring-up works again (port released)


def test_remote_server_stopped_on_interrupt(sshd, tmp_path: Path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd[2])
    rpc_port = free_port()
    with pytest.raises(KeyboardInterrupt):
        with open_session(_profile(sshd, known, rpc_port)):
            assert _servers_on(rpc_port)
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a measurement
    assert not _servers_on(rpc_port)


def test_unknown_host_key_refused(sshd, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    rpc_port = free_port()
    with pytest.raises(DeviceError, match=r"not in .*known_hosts.*ssh-keyscan"):
        with open_session(_profile(sshd, empty, rpc_port)):
            pass
    assert not _servers_on(rpc_port)


def test_changed_host_key_refused(sshd, tmp_path: Path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd[0]} {kind} {blob}\n")
    with pytest.raises(DeviceError, match="differs from"):
        with open_session(_profile(sshd, known, free_port())):
            pass


_HOLD = """
import sys, time
from pipeline.device import load_profile, open_session
from pipeline.device.profile import SSHConnection
port, key, known, rpc_port = sys.argv[1:5]
profile = load_profile("x86-host").with_connection(SSHConnection(
    host="127.0.0.1", port=int(port), user="root", key_file=key, known_hosts=known,
    remote_python=sys.executable, remote_rpc_port=int(rpc_port), timeout_s=30.0))
with open_session(profile):
    print("open", flush=True)
    time.sleep(600)
"""


def test_remote_server_stopped_when_client_killed(sshd, tmp_path: Path):
    """kill -9 runs no cleanup: the remote watchdog must notice the dropped connection."""
    known = tmp_path / "known_hosts"
    known.write_text(sshd[2])
    rpc_port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(sshd[0]), str(sshd[1]), str(known), str(rpc_port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        assert _servers_on(rpc_port)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while _servers_on(rpc_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _servers_on(rpc_port)


@pytest.mark.slow  # a device session over SSH per candidate: minutes
def test_tuning_through_ssh_brings_the_server_up_and_down(sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Kernel tuning on an SSH device: seed and MetaSchedule trials timed on the server that
    the session starts over SSH; nothing is left running on the remote side afterwards."""
    from pipeline.kernels.plan import Plan, PlannedTask, subnet_module, subnet_tasks
    from pipeline.kernels.tune import TuneBudget, tune
    from pipeline.space import SearchSpace

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    known = tmp_path / "known_hosts"
    known.write_text(sshd[2])
    rpc_port = free_port()
    profile = _profile(sshd, known, rpc_port)
    demo = SearchSpace.load("demo")
    name, mod, calls = next(t for t in subnet_tasks(subnet_module(demo, demo.smallest(), 10), profile.tvm_target())
                            if "mean" in t[0])
    task = PlannedTask(name, mod, flops=0.0, occurrences=calls)
    small = Plan(demo.name, profile.name, [demo.smallest()], [task])
    tuned = tune(small, profile, TuneBudget(trials_per_task=1, trials_per_iter=1), database_dir=tmp_path / "db",
                 timeout_s=120.0, progress=False)
    assert_seeded_and_tuned(tuned[0], tmp_path / "db", task)
    deadline = time.monotonic() + 20
    while _servers_on(rpc_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _servers_on(rpc_port), "tuning left the remote RPC server running"
