"""Boards over SSH: start the TVM RPC server there, tunnel to it, tear it down afterwards.

The server is bound to the board's own localhost (nothing is exposed on its network)
and reached through a local port forwarded over the SSH connection. The host key must
be in the profile's known_hosts unless the profile sets `allow_unknown_host`. The
remote server runs in its own process group (setsid), whose id it prints first, so the
whole group (launcher and popen_worker) is killed on exit, on error and on Ctrl-C; a
watchdog shell in that group also kills it when the SSH connection drops (kill -9).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import paramiko

from pipeline.device.profile import DeviceProfile, SSHConnection
from pipeline.device.rpcserver import rpc_server_args
from pipeline.device.session import DeviceSession, RemoteSession, register_opener, rpc_connect
from pipeline.errors import DeviceError

log = logging.getLogger(__name__)


def ssh_connect(conn: SSHConnection, what: str) -> paramiko.SSHClient:
    """An authenticated SSH client; unknown or changed host keys are refused with the fix."""
    client = paramiko.SSHClient()
    known_hosts = Path(conn.known_hosts).expanduser()
    if known_hosts.is_file():
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.WarningPolicy() if conn.allow_unknown_host else paramiko.RejectPolicy())
    target = f"{conn.user}@{conn.host}:{conn.port}"
    try:
        client.connect(conn.host, conn.port, username=conn.user, key_filename=str(Path(conn.key_file).expanduser()),
                       timeout=conn.timeout_s, banner_timeout=conn.timeout_s, auth_timeout=conn.timeout_s,
                       allow_agent=False, look_for_keys=False)
    except paramiko.BadHostKeyException:
        client.close()
        raise DeviceError(f"{what}: host key of {conn.host}:{conn.port} differs from {known_hosts}; if the board "
                          f"was re-installed, remove its old line there and add the new key (ssh-keyscan)") from None
    except paramiko.SSHException as err:
        client.close()
        if "not found in known_hosts" in str(err):
            raise DeviceError(f"{what}: host key of {conn.host}:{conn.port} is not in {known_hosts}; add it with "
                              f"`ssh-keyscan -p {conn.port} {conn.host} >> {known_hosts}` or set "
                              f"allow_unknown_host: true") from None
        raise DeviceError(f"{what}: SSH to {target} failed: {err}; check user and key_file") from None
    except OSError as err:
        client.close()
        raise DeviceError(f"{what}: cannot reach {conn.host}:{conn.port} over SSH ({err.strerror or err}); "
                          f"check the board is on and `host`/`port` in the profile") from None
    return client


class RemoteServer:
    """The TVM RPC server started on the board, bound to its 127.0.0.1."""

    def __init__(self, client: paramiko.SSHClient, conn: SSHConnection, what: str):
        self.client, self.conn, self.what = client, conn, what
        env = f"PYTHONPATH={shlex.quote(conn.remote_pythonpath)} " if conn.remote_pythonpath else ""
        server = " ".join(shlex.quote(a) for a in [conn.remote_python,
                                                   *rpc_server_args("127.0.0.1", conn.remote_rpc_port)])
        # setsid -w: own process group (and we still see its output); its id is printed first
        # so the whole group can be killed. The shell then waits for the end of its stdin,
        # which sshd closes when our connection goes (even if we are killed with -9), and
        # takes the group down with it.
        watchdog = (f"echo PGID=$$; env {env}{server} & cat >/dev/null; "
                    f"trap '' TERM; kill -TERM -$$; sleep 3; kill -KILL -$$")
        command = f"cd /tmp && exec setsid -w sh -c {shlex.quote(watchdog)}"
        self.channel = client.get_transport().open_session(timeout=conn.timeout_s)
        self.channel.set_combine_stderr(True)
        self.channel.exec_command(command)
        self.pgid: int | None = None
        self.port = self._wait_ready(command)
        # Keep reading its log so a chatty server never blocks on a full SSH window.
        threading.Thread(target=self._drain, daemon=True, name="ssh-server-log").start()

    def _drain(self) -> None:
        try:
            while data := self.channel.recv(65536):
                log.debug("%s remote: %s", self.what, data.decode(errors="replace").rstrip())
        except (OSError, EOFError):
            pass

    def _wait_ready(self, command: str, timeout_s: float = 120.0) -> int:
        buf, deadline = "", time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.channel.recv_ready():
                buf += self.channel.recv(65536).decode(errors="replace")
                if self.pgid is None and (m := re.search(r"PGID=(\d+)", buf)):
                    self.pgid = int(m.group(1))
                if m := re.search(r"bind to \S+:(\d+)", buf):
                    return int(m.group(1))
            elif self.channel.exit_status_ready():
                tail = " | ".join(buf.strip().splitlines()[-3:])
                raise DeviceError(f"{self.what}: the RPC server on the board exited ({tail}); check that "
                                  f"`{self.conn.remote_python} -c 'import tvm'` works there (remote_python, "
                                  f"remote_pythonpath) and port {self.conn.remote_rpc_port} is free")
            else:
                time.sleep(0.1)
        self.stop()
        raise DeviceError(f"{self.what}: the RPC server on the board did not start within {timeout_s:g} s "
                          f"(ran: {command})")

    def stop(self) -> None:
        """Kill the remote process group (TERM, then KILL after a grace period)."""
        if self.pgid is not None:
            script = (f"kill -TERM -{self.pgid} 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do "
                      f"kill -0 -{self.pgid} 2>/dev/null || exit 0; sleep 0.5; done; kill -KILL -{self.pgid}")
            try:
                _, out, _ = self.client.exec_command(script, timeout=self.conn.timeout_s + 10)
                out.channel.recv_exit_status()
            except (paramiko.SSHException, OSError) as err:
                log.warning("%s: could not stop the remote RPC server (group %s): %s", self.what, self.pgid, err)
        self.channel.close()


class PortForward:
    """A local listening port whose connections are tunnelled to `dest` through SSH (like `ssh -L`)."""

    def __init__(self, transport: paramiko.Transport, dest: tuple[str, int]):
        self.transport, self.dest = transport, dest
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True, name=f"ssh-forward:{self.port}")
        self._accept.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                sock, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setblocking(True)  # accepted sockets inherit the listener's polling timeout
            try:
                chan = self.transport.open_channel("direct-tcpip", self.dest, peer, timeout=10)
            except (paramiko.SSHException, OSError) as err:
                log.warning("port forward to %s failed: %s", self.dest, err)
                sock.close()
                continue
            # One thread per direction with blocking reads: no select() over paramiko's
            # channel pipe, which stalled TVM RPC replies here.
            for src, dst in ((sock.recv, chan.sendall), (chan.recv, sock.sendall)):
                t = threading.Thread(target=self._pump, args=(src, dst, sock, chan), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, recv, send, sock: socket.socket, chan: paramiko.Channel) -> None:
        try:
            while data := recv(65536):
                send(data)
        except OSError as err:
            log.debug("port forward to %s closed: %s", self.dest, err)
        finally:
            chan.close()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for t in [self._accept, *self._threads]:
            t.join(timeout=2)


class ForwardProcess:
    """`PortForward` run in a child process with its own SSH connection.

    TVM's RPC client can block in C++ while holding the GIL; a forwarder made of Python
    threads in the same process then cannot move the reply and the call hangs (seen
    here). A child process has its own interpreter. It exits when its stdin closes, so
    it dies with us even on kill -9.
    """

    def __init__(self, conn: SSHConnection, dest_port: int, what: str):
        spec = json.dumps({**asdict(conn), "dest_port": dest_port, "what": what})
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.device.ssh", spec], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTEN "):
            err = self.proc.stderr.read().strip().splitlines()
            self.close()
            raise DeviceError(err[-1] if err else f"{what}: the SSH port forwarder failed to start")
        self.port = int(line.split()[1])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def ssh_rpc_tunnel(profile: DeviceProfile) -> Iterator[tuple[int, RemoteServer]]:
    """Connect, start the remote server, forward a local port to it; tear all down on exit/error/Ctrl-C."""
    conn: SSHConnection = profile.connection  # type: ignore[assignment]
    what = f"device {profile.name}"
    client = ssh_connect(conn, what)
    server: RemoteServer | None = None
    forward: ForwardProcess | None = None
    try:
        server = RemoteServer(client, conn, what)
        forward = ForwardProcess(conn, server.port, what)
        yield forward.port, server
    finally:
        if forward is not None:
            forward.close()
        if server is not None:
            server.stop()
        client.close()


def _forward_main(spec_json: str) -> None:
    """Child-process entry: forward a local port to 127.0.0.1:dest_port on the board until stdin closes."""
    spec = json.loads(spec_json)
    dest_port, what = spec.pop("dest_port"), spec.pop("what")
    try:
        client = ssh_connect(SSHConnection(**spec), what)
    except DeviceError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2)
    forward = PortForward(client.get_transport(), ("127.0.0.1", dest_port))
    print(f"LISTEN {forward.port}", flush=True)
    sys.stdin.read()  # returns when the parent closes our stdin or dies
    forward.close()
    client.close()


@register_opener(SSHConnection.kind)
@contextlib.contextmanager
def _open_ssh(profile: DeviceProfile) -> Iterator[DeviceSession]:
    conn: SSHConnection = profile.connection  # type: ignore[assignment]
    with ssh_rpc_tunnel(profile) as (port, _server):
        # No reachability probe: the local end is our own forwarder, and a connection that
        # closes without a handshake wedged the tunnelled server in tests.
        def connect():
            return rpc_connect("127.0.0.1", port, "", max(conn.timeout_s, 30.0), f"device {profile.name} (via SSH)",
                               "the tunnelled RPC server did not answer; see the board's logs", check_reachable=False)

        with RemoteSession(profile, connect, f"ssh {conn.user}@{conn.host}:{conn.port}") as session:
            yield session


if __name__ == "__main__":
    _forward_main(sys.argv[1])
