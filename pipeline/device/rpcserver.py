"""Starting and stopping TVM RPC servers and trackers as background processes.

Used for the local RPC server, the emulated device (the same server inside a chroot),
tracker farms and tests. Each process gets its own session (process group), because
the launcher runs its listener in a `tvm.exec.popen_worker` child: stopping the group
stops both. Readiness is read from the "bind to HOST:PORT" log line, which also tells
the port really taken (`--port/--port-end` silently move to the next free one).
"""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pipeline.errors import DeviceError

log = logging.getLogger(__name__)
_BIND = re.compile(r"bind to (\S+):(\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerProcess:
    """A started server: its process-group leader pid, bound address and log file."""

    pid: int
    host: str
    port: int
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_group(self.pid, timeout_s)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(pgid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the whole process group, SIGKILL whatever is left after `timeout_s`; reap if ours."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _reap(pgid)
            if not group_members(pgid):
                return
            time.sleep(0.1)
    _reap(pgid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass
class Launch:
    """A process started in the background that has not yet said where it listens."""

    proc: subprocess.Popen
    log_path: Path
    what: str

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        """Wait for the "bind to" line; on failure stop the group and raise naming the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            match = _BIND.search(text)
            if match:
                return ServerProcess(self.proc.pid, match.group(1), int(match.group(2)), self.log_path)
            if self.proc.poll() is not None:
                tail = " | ".join(text.strip().splitlines()[-3:])
                raise DeviceError(f"{self.what} exited with status {self.proc.returncode} before listening: "
                                  f"{tail}; see {self.log_path}")
            time.sleep(0.2)
        stop_group(self.proc.pid)
        raise DeviceError(f"{self.what} did not start listening within {timeout_s:g} s; see {self.log_path}")


def launch(cmd: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
           what: str = "server") -> Launch:
    """Start `cmd` in its own process group, logging to `log_path`; does not wait."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    log.debug("started %s (pid %d): %s", what, proc.pid, " ".join(cmd))
    return Launch(proc, log_path, what)


def start_background(cmd: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
                     ready_timeout_s: float = 60.0, what: str = "server") -> ServerProcess:
    """Start `cmd` in its own process group and wait until it listens."""
    return launch(cmd, log_path, env=env, what=what).wait_ready(ready_timeout_s)


#: The device's RPC server, run as `python -c` (the device needs only TVM): TVM's own server, as
#: `tvm.exec.rpc_server` starts it, except that a session whose forked child dies ends that
#: session only. Upstream's listener raises on a child's non-zero exit and stops accepting for
#: good while its processes live on: one segfault of a library under emulation ("qemu:
#: uncaught target signal 11", mid-batch) left the device dead for the rest of the build.
SERVER_SCRIPT = """
import argparse, logging
import tvm.rpc

def survive_crashed_sessions():  # runs in the listener's process
    import os
    import tvm.rpc.server as server
    serve = server._serving

    def guarded(sock, addr, opts, load_library):
        cwd = os.getcwd()  # _serving moves into the session's folder, which goes with it
        try:
            serve(sock, addr, opts, load_library)
        except RuntimeError as err:
            server.logger.warning("session from %s died (%s); still listening", addr, err)
            os.chdir(cwd)
            sock.close()

    server._serving = guarded

parser = argparse.ArgumentParser()
for flag in ("--host", "--tracker", "--key"):
    parser.add_argument(flag, default="")
parser.add_argument("--port", type=int)
parser.add_argument("--port-end", type=int)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO)
tracker = args.tracker.rsplit(":", 1) if args.tracker else None
server = tvm.rpc.Server(args.host, args.port, args.port_end, key=args.key,
                        tracker_addr=(tracker[0], int(tracker[1])) if tracker else None,
                        server_init_callback=survive_crashed_sessions)
server.proc.join()  # (a Server that is not held is collected, and kills its listener)
"""


def rpc_server_args(host: str, port: int, tracker: str | None = None, key: str | None = None) -> list[str]:
    """Interpreter arguments that start `SERVER_SCRIPT` pinned to exactly `port` (`port-end` is exclusive)."""
    args = ["-c", SERVER_SCRIPT, "--host", host, "--port", str(port), "--port-end", str(port + 1)]
    if tracker:
        args += ["--tracker", tracker, "--key", key or ""]
    return args


def launch_rpc_server(log_path: Path, host: str = "127.0.0.1", port: int | None = None, *,
                      tracker: str | None = None, key: str | None = None) -> Launch:
    """Launch a TVM RPC server on this machine (optionally registered with a tracker under `key`)."""
    port = port or free_port(host)
    return launch([sys.executable, *rpc_server_args(host, port, tracker, key)], log_path,
                  what=f"RPC server on {host}:{port}")


def start_rpc_server(log_path: Path, host: str = "127.0.0.1", port: int | None = None, *,
                     tracker: str | None = None, key: str | None = None, ready_timeout_s: float = 60.0) -> ServerProcess:
    """A TVM RPC server on this machine, once it listens."""
    return launch_rpc_server(log_path, host, port, tracker=tracker, key=key).wait_ready(ready_timeout_s)


def start_rpc_farm(log_dir: Path, key: str, servers: int = 2, host: str = "127.0.0.1",
                   ready_timeout_s: float = 90.0) -> tuple[ServerProcess, list[ServerProcess]]:
    """A tracker and `servers` RPC servers registered under `key`, launched side by side."""
    tracker = start_rpc_tracker(log_dir / "tracker.log", host, ready_timeout_s=ready_timeout_s)
    launches = [launch_rpc_server(log_dir / f"server-{i}.log", host, tracker=f"{host}:{tracker.port}", key=key)
                for i in range(servers)]
    started: list[ServerProcess] = []
    try:
        for item in launches:
            started.append(item.wait_ready(ready_timeout_s))
    except DeviceError:
        for item in launches:
            stop_group(item.proc.pid)
        tracker.stop()
        raise
    return tracker, started


def start_rpc_tracker(log_path: Path, host: str = "127.0.0.1", port: int | None = None,
                      ready_timeout_s: float = 60.0) -> ServerProcess:
    """A TVM RPC tracker on this machine."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
           "--port-end", str(port + 1)]
    return start_background(cmd, log_path, ready_timeout_s=ready_timeout_s, what=f"RPC tracker on {host}:{port}")
