"""Sessions: one interface for running compiled code on a device, whatever the way in.

`open_session(profile)` picks the opener for the profile's connection kind. Every
opener yields a `DeviceSession`; measurement, compilation checks and the store never
ask which kind they got. Remote sessions upload and load in the same RPC session
(each TVM RPC session is its own forked process with its own temp folder).
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, TypeVar

from pipeline.atomic import link_or_copy
from pipeline.device.profile import (Connection, DeviceProfile, EmulatedConnection, LocalConnection,
                                     RPCConnection, TrackerConnection)
from pipeline.errors import DeviceError, is_device_failure

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeviceSession(ABC):
    """A live connection to a device: its TVM `device`, loading libraries, global functions."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile

    @property
    @abstractmethod
    def device(self):
        """The `tvm.runtime.Device` (CPU 0) on the device."""

    @abstractmethod
    def load(self, lib_path: str | os.PathLike):
        """Make a compiled library usable on the device and return its `tvm.runtime.Module`."""

    @abstractmethod
    def get_function(self, name: str):
        """A global function registered on the device side (e.g. `runtime.config_threadpool`)."""

    @property
    def is_remote(self) -> bool:
        return True

    def revive(self) -> bool:
        """Open the connection again after the device side dropped it (a server child that
        died: "kShutdown", "Broken pipe"); False where there is nothing to reopen. Libraries
        loaded before must be loaded again (`load` does that by itself)."""
        return False

    def info(self) -> dict[str, Any]:
        """What the device says about itself: arch, LLVM triple, TVM version of this client."""
        import tvm

        triple = str(self.get_function("target.llvm_get_system_triple")())
        machine = triple.split("-", 1)[0]
        return {
            "device": self.profile.name,
            "arch": "arm64" if machine in ("aarch64", "arm64") else machine,
            "triple": triple,
            "tvm_version": tvm.__version__,
            "remote": self.is_remote,
        }

    def close(self) -> None:
        """Release the connection (the opener also tears down what it started)."""

    def __enter__(self) -> "DeviceSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalSession(DeviceSession):
    """This machine, in-process."""

    def __init__(self, profile: DeviceProfile):
        super().__init__(profile)
        self._loaded: dict[str, Any] = {}

    @property
    def device(self):
        import tvm

        return tvm.cpu(0)

    def load(self, lib_path):
        """Load through a name made of the file's content; the same content loads once.

        `dlopen` of a path already open in the process returns the open handle, i.e. the
        OLD code when a different library was written to that path since (a budget folder
        rebuilt in the next round); a name made of the content hash is a new path for new
        code and the same path for the same code.
        """
        path, digest = _library_digest(lib_path)
        if digest not in self._loaded:
            self._loaded[digest] = _load_content_named(path, digest)
        return self._loaded[digest]

    def get_function(self, name: str):
        import tvm

        return tvm.get_global_func(name)

    @property
    def is_remote(self) -> bool:
        return False

    def close(self) -> None:
        self._loaded.clear()


def _library_digest(lib_path: str | os.PathLike) -> tuple[Path, str]:
    """The library's path and a short hash of its bytes (what identifies its code)."""
    path = Path(lib_path)
    if not path.is_file():
        raise DeviceError(f"library {path} does not exist; compile and export it first")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()[:20]


_LOAD_DIR: Path | None = None


def _load_content_named(path: Path, digest: str):
    """`path` loaded through a link (or copy) named by its content in this process's load folder.

    The name is removed as soon as the library is loaded: the mapping keeps the code, and
    a long profile run (hundreds of 35-95 MB libraries) or a killed one leaves nothing
    behind. A later `dlopen` of the same name, i.e. the same content, gets the open handle.
    """
    import tvm

    global _LOAD_DIR
    if _LOAD_DIR is None:
        _LOAD_DIR = Path(tempfile.mkdtemp(prefix="pipeline-libs-"))
        atexit.register(shutil.rmtree, _LOAD_DIR, True)
    name = _LOAD_DIR / f"{digest}.{threading.get_ident()}-{path.name}"
    name.unlink(missing_ok=True)
    link_or_copy(path, name)
    try:
        return tvm.runtime.load_module(str(name))
    finally:
        name.unlink(missing_ok=True)


class RemoteSession(DeviceSession):
    """A TVM RPC session (direct, through a tracker, an SSH tunnel or to the emulated device)."""

    def __init__(self, profile: DeviceProfile, connect: Callable[[], Any], where: str):
        """`connect()` returns a new TVM RPC session to the device: called now, and by `revive`."""
        super().__init__(profile)
        self._connect = connect
        self.rpc = connect()
        self.where = where
        self._loaded: dict[str, Any] = {}

    def revive(self) -> bool:
        self.close()
        self.rpc = self._connect()
        log.warning("%s: the RPC session at %s was dropped; reconnected", self.profile.name, self.where)
        return True

    @property
    def device(self):
        return self.rpc.cpu(0)

    def load(self, lib_path):
        """Upload under a name made of the content hash, load, remove the upload; the same
        content loads once.

        Re-uploading over a library the server has already dlopen'ed rewrites a mapped file
        and crashes the server on the next symbol lookup, and dlopen of an open path returns
        the old code: a name per content avoids both.
        """
        path, digest = _library_digest(lib_path)
        if digest not in self._loaded:
            remote_name = f"{digest}-{path.name}"
            self.rpc.upload(str(path), target=remote_name)
            self._loaded[digest] = self.rpc.load_module(remote_name)
            self.rpc.remove(remote_name)  # loaded: the device's disk need not hold every library of a run
        return self._loaded[digest]

    def get_function(self, name: str):
        return self.rpc.get_function(name)

    def close(self) -> None:
        # The remote session (a forked server child that serves nobody else meanwhile) ends
        # when its last reference goes; devices, modules and VMs keep it alive through
        # reference cycles, so collect them now rather than at some later GC.
        self._loaded.clear()
        self.rpc = None
        gc.collect()


# --------------------------------------------------------------------------- helpers
def probe(host: str, port: int, timeout_s: float, what: str, hint: str) -> None:
    """Fail fast, in one line, when nothing listens at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as err:
        raise DeviceError(f"{what}: cannot reach {host}:{port} ({err.strerror or err}); {hint}") from None


def call_with_timeout(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run a blocking TVM call that may hang on a wedged device; give up after `timeout_s`.

    A device failure (`is_device_failure`) becomes a one-line `DeviceError`; any other
    exception is re-raised as it is, traceback included.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            result["error"] = err

    worker = threading.Thread(target=run, daemon=True, name=f"rpc:{what}")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise DeviceError(f"{what}: no answer within {timeout_s:g} s; the device is hung or busy, "
                          f"restart its RPC server or raise connection.timeout_s")
    if "error" in result:
        err = result["error"]
        if not is_device_failure(err):
            raise err
        raise DeviceError(f"{what}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") \
            from err
    return result["value"]


def device_answers(profile: DeviceProfile) -> bool:
    """Whether a session on the device opens and answers a call now.

    Tells a device lost mid-run from a bug that merely happened while using it.
    """
    try:
        with open_session(profile) as session:
            session.info()
    except DeviceError:
        return False
    except Exception as err:  # noqa: BLE001 - sorted just below
        if not is_device_failure(err):
            raise
        return False
    return True


def rpc_connect(host: str, port: int, key: str, timeout_s: float, what: str, hint: str, *,
                check_reachable: bool = True):
    """`tvm.rpc.connect` with a fast reachability check (optional) and a handshake timeout."""
    from tvm import rpc

    if check_reachable:
        probe(host, port, timeout_s, what, hint)
    return call_with_timeout(lambda: rpc.connect(host, port, key=key), timeout_s, f"{what} at {host}:{port}")


# --------------------------------------------------------------------------- openers
Opener = Callable[[DeviceProfile], ContextManager[DeviceSession]]
_OPENERS: dict[str, Opener] = {}


def register_opener(kind: str) -> Callable[[Opener], Opener]:
    """Registers the context manager that opens sessions for one connection kind."""

    def wrap(fn: Opener) -> Opener:
        _OPENERS[kind] = fn
        return fn

    return wrap


@register_opener(LocalConnection.kind)
@contextlib.contextmanager
def _open_local(profile: DeviceProfile) -> Iterator[DeviceSession]:
    yield LocalSession(profile)


@register_opener(RPCConnection.kind)
@contextlib.contextmanager
def _open_rpc(profile: DeviceProfile) -> Iterator[DeviceSession]:
    c: RPCConnection = profile.connection  # type: ignore[assignment]

    def connect() -> Any:
        return rpc_connect(c.host, c.port, c.key, c.timeout_s, f"device {profile.name}",
                           "start `python -m tvm.exec.rpc_server --host HOST --port PORT` there or fix the profile")

    with RemoteSession(profile, connect, f"{c.host}:{c.port}") as session:
        yield session


@register_opener(TrackerConnection.kind)
@contextlib.contextmanager
def _open_tracker(profile: DeviceProfile) -> Iterator[DeviceSession]:
    from tvm import rpc

    c: TrackerConnection = profile.connection  # type: ignore[assignment]
    what = f"device {profile.name} (tracker {c.host}:{c.port}, key {c.key})"
    probe(c.host, c.port, c.timeout_s, what, "start `python -m tvm.exec.rpc_tracker` there or fix the profile")
    tracker = call_with_timeout(lambda: rpc.connect_tracker(c.host, c.port), c.timeout_s, what)

    def connect() -> Any:
        return call_with_timeout(lambda: tracker.request(c.key, priority=1, max_retry=1), c.timeout_s,
                                 f"{what}: no free server under the key")

    try:
        with RemoteSession(profile, connect, f"tracker {c.host}:{c.port}/{c.key}") as session:
            yield session
    finally:
        tracker.close()


@register_opener(EmulatedConnection.kind)
@contextlib.contextmanager
def _open_emulated(profile: DeviceProfile) -> Iterator[DeviceSession]:
    c: EmulatedConnection = profile.connection  # type: ignore[assignment]

    def connect() -> Any:
        return rpc_connect(c.host, c.port, "", min(c.timeout_s, 60.0), f"emulated device {profile.name}",
                           f"bring it up with `pipeline device up {profile.name}`")

    with RemoteSession(profile, connect, f"{c.host}:{c.port}") as session:
        yield session


def open_session(profile: DeviceProfile) -> ContextManager[DeviceSession]:
    """A context manager yielding a session on the profile's device, however it is reached."""
    kind = profile.connection.kind
    if kind not in _OPENERS and kind == "ssh":
        import pipeline.device.ssh  # noqa: F401  (registers the SSH opener; imports paramiko)
    try:
        opener = _OPENERS[kind]
    except KeyError:
        raise DeviceError(f"no session opener for connection kind {kind!r}") from None
    return opener(profile)


def connection_label(conn: Connection) -> str:
    """Short human description of where a connection goes."""
    host, port = getattr(conn, "host", "localhost"), getattr(conn, "port", None)
    return f"{conn.kind} {host}:{port}" if port else conn.kind
