"""The emulated arm64 device: a Debian arm64 root file system run by qemu-user in a chroot.

Bring-up, each step skipped when its stamp says it is done (so `up` is idempotent and
a second run is warm):
1. `debootstrap --foreign` downloads an arm64 minbase with python3 without running any
   foreign code; every downloaded .deb is then unpacked with `dpkg -x` (no maintainer
   scripts, which would need the emulator already).
2. aarch64 wheels of the device side (TVM runtime + what its RPC server imports), at the
   host's own TVM/ffi versions, are fetched with `pip download` and unzipped into
   ROOT/opt/site.
3. binfmt_misc learns to run arm64 ELF files through qemu (flag F: works in a chroot);
   the RPC server forks children with the same interpreter, so this is needed.
4. `chroot ROOT python3.11 -c SERVER_SCRIPT --host 127.0.0.1 --port P` (TVM's RPC server) is started
   in its own process group; `run/P.json` records it so `down` can stop launcher and
   popen_worker child together.
The apt mirror is the one this machine's own apt sources name.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from pipeline.atomic import write_json
from pipeline.device.profile import DeviceProfile, EmulatedConnection
from pipeline.device.rpcserver import ServerProcess, pid_alive, rpc_server_args, start_background, stop_group
from pipeline.errors import DeviceError
from pipeline.paths import cache_dir
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

#: Python packages the device side imports (TVM runtime, its RPC server and their deps).
DEVICE_PACKAGES = ("numpy", "psutil", "cloudpickle", "typing_extensions", "ml_dtypes", "tornado")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


def devices_dir() -> Path:
    """Where emulated devices keep their root file systems: `cache_dir()/devices`."""
    return cache_dir() / "devices"


def apt_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive URI this machine's apt sources use (not the security archive)."""
    uris: list[str] = []
    for src in sources:
        files = sorted(src.glob("*.sources")) + sorted(src.glob("*.list")) if src.is_dir() else [src]
        for path in files:
            if not path.is_file():
                continue
            for line in path.read_text(errors="replace").splitlines():
                line = line.strip()
                if line.startswith("URIs:"):
                    uris += line.split()[1:]
                elif line.startswith("deb "):
                    uris += [w for w in line.split()[1:] if "://" in w][:1]
    archive = [u for u in uris if "security" not in u]
    if not archive:
        raise DeviceError("no Debian mirror found in /etc/apt/sources.list(.d); add one (e.g. a `URIs:` line) "
                          "so debootstrap can fetch the arm64 root file system")
    return archive[0].rstrip("/")


@dataclass(frozen=True)
class EmulatedState:
    """A running emulated device server (what `run/PORT.json` records)."""

    pid: int
    port: int
    host: str
    started_at: float


class EmulatedDevice:
    """Provisioning and lifecycle of one emulated arm64 device (its profile + a cache folder)."""

    def __init__(self, profile: DeviceProfile, base_dir: Path | None = None):
        if not isinstance(profile.connection, EmulatedConnection):
            raise DeviceError(f"profile {profile.name} is not an emulated device (connection kind "
                              f"{profile.connection.kind}); only `kind: emulated` profiles can be brought up")
        self.profile = profile
        self.conn: EmulatedConnection = profile.connection
        self.dir = (base_dir or devices_dir()) / profile.name
        self.rootfs = self.dir / "rootfs"
        self.run_dir = self.dir / "run"

    # ----------------------------------------------------------------- helpers
    def _stamp(self, step: str) -> Path:
        return self.dir / f".done-{step}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One provisioner/starter at a time per device folder (other sessions may share it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _run(cmd: list[str], what: str, timeout_s: float = 1800) -> None:
        log.debug("%s: %s", what, " ".join(cmd))  # callers say what the step is; one dpkg -x per package
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise DeviceError(f"{what}: `{cmd[0]}` is not installed; run scripts/setup.sh") from None
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise DeviceError(f"{what} failed ({tail}); fix and re-run `pipeline device up`")

    # -------------------------------------------------------------- provisioning
    def provision(self) -> None:
        """Build the root file system and device-side Python packages (skips finished steps)."""
        with self._locked():
            self._debootstrap()
            self._unpack_debs()
            self._wheels()

    def _debootstrap(self) -> None:
        if self._stamp("debootstrap").exists():
            return
        if os.geteuid() != 0:
            raise DeviceError("building the emulated device needs root (debootstrap, chroot); run as root")
        shutil.rmtree(self.rootfs, ignore_errors=True)  # a half-finished earlier attempt
        mirror = apt_mirror()
        log.info("%s: debootstrap arm64 %s from %s (about a minute)", self.profile.name, self.conn.suite, mirror)
        self._run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3",
                   self.conn.suite, str(self.rootfs), mirror], "debootstrap")
        self._stamp("debootstrap").touch()

    def _unpack_debs(self) -> None:
        if self._stamp("unpack").exists():
            return
        debs = sorted((self.rootfs / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise DeviceError(f"no .deb files under {self.rootfs}/var/cache/apt/archives; "
                              f"delete {self.dir} and run `pipeline device up` again")
        for deb in progress_bar(debs, desc=f"{self.profile.name}: unpack arm64 packages", unit="deb"):
            self._run(["dpkg", "-x", str(deb), str(self.rootfs)], f"dpkg -x {deb.name}")
        python = self.rootfs / "usr/bin" / self.conn.python
        if not python.exists():
            raise DeviceError(f"{python} missing after unpacking; the suite {self.conn.suite} may not ship "
                              f"{self.conn.python}: set connection.python in {self.profile.source}")
        self._stamp("unpack").touch()

    def _wheels(self) -> None:
        if self._stamp("wheels").exists():
            return
        from importlib.metadata import version

        wheel_dir = self.dir / "wheels"
        wheel_dir.mkdir(parents=True, exist_ok=True)
        pins = [f"apache-tvm=={version('apache-tvm')}", f"apache-tvm-ffi=={version('apache-tvm-ffi')}",
                *DEVICE_PACKAGES]
        py = self.conn.python.removeprefix("python")
        log.info("%s: pip download aarch64 wheels for Python %s: %s", self.profile.name, py, " ".join(pins))
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--python-version", py, "-d", str(wheel_dir)]
        for platform in WHEEL_PLATFORMS:
            cmd += ["--platform", platform]
        self._run(cmd + pins, "pip download")
        site = self.rootfs / "opt/site"
        shutil.rmtree(site, ignore_errors=True)
        for wheel in progress_bar(sorted(wheel_dir.glob("*.whl")), desc=f"{self.profile.name}: unzip wheels",
                                  unit="whl"):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(site)
        self._stamp("wheels").touch()

    # ------------------------------------------------------------------ binfmt
    @staticmethod
    def ensure_binfmt() -> None:
        """Register qemu-aarch64 with binfmt_misc (needs root); nothing to do if already there."""
        entry = BINFMT_DIR / "qemu-aarch64"
        if entry.exists() and entry.read_text().startswith("enabled"):
            return
        if os.geteuid() != 0:
            raise DeviceError("arm64 binaries need the qemu-aarch64 binfmt_misc entry and registering it needs "
                              "root; run `pipeline device up` as root once")
        if not (BINFMT_DIR / "register").exists():
            EmulatedDevice._run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mount binfmt_misc")
        if not BINFMT_CONF.is_file():
            raise DeviceError(f"{BINFMT_CONF} is missing; install qemu-user-static (scripts/setup.sh)")
        if not entry.exists():
            (BINFMT_DIR / "register").write_text(BINFMT_CONF.read_text().strip() + "\n")
        else:
            entry.write_text("1")  # registered but disabled

    # --------------------------------------------------------------- lifecycle
    def _state_file(self, port: int) -> Path:
        return self.run_dir / f"{port}.json"

    def servers(self) -> list[EmulatedState]:
        """Running servers of this device; records of dead ones are removed."""
        states = []
        for path in sorted(self.run_dir.glob("*.json")):
            state = EmulatedState(**json.loads(path.read_text()))
            if pid_alive(state.pid):
                states.append(state)
            else:
                path.unlink(missing_ok=True)
        return states

    def up(self, port: int | None = None, ready_timeout_s: float = 300.0) -> tuple[EmulatedState, bool]:
        """Provision if needed and start the RPC server on `port` (default: the profile's).

        Returns the state and whether this call started it (False: it was already running).
        """
        port = port or self.conn.port
        self.provision()
        self.ensure_binfmt()
        with self._locked():
            for state in self.servers():
                if state.port == port:
                    return state, False
            log.info("%s: starting the RPC server on %s:%d (importing TVM under emulation takes a while)",
                     self.profile.name, self.conn.host, port)
            start = time.monotonic()
            server: ServerProcess = start_background(
                ["chroot", str(self.rootfs), f"/usr/bin/{self.conn.python}",
                 *rpc_server_args(self.conn.host, port)],
                self.run_dir / f"{port}.log", env={"PYTHONPATH": "/opt/site", "HOME": "/tmp"},
                ready_timeout_s=ready_timeout_s, what=f"emulated device {self.profile.name}")
            state = EmulatedState(pid=server.pid, port=server.port, host=server.host, started_at=time.time())
            write_json(self._state_file(port), asdict(state))
            log.info("%s: RPC server ready on %s:%d after %.0f s", self.profile.name, state.host, state.port,
                     time.monotonic() - start)
            return state, True

    def down(self, port: int | None = None) -> list[EmulatedState]:
        """Stop the server on `port` (default: all servers of this device); returns what was stopped."""
        stopped = []
        for state in self.servers():
            if port is None or state.port == port:
                stop_group(state.pid)
                self._state_file(state.port).unlink(missing_ok=True)
                stopped.append(state)
        return stopped
