"""Device profiles: one YAML file per device, loaded into frozen, validated dataclasses.

A profile says what code to generate (TVM target, cross compiler), how to reach the
device (one of the connection kinds below) and how to time on it (measurement policy).
Everything is checked at load so a typo fails here with the file, the key and the fix,
not later inside TVM or halfway through a measurement run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import yaml

from pipeline.errors import ConfigError
from pipeline.paths import profile_dirs

ARCHS = ("arm64", "x86_64")


class _Fields:
    """Reads typed values out of one YAML mapping, naming file and key in every error."""

    def __init__(self, raw: Any, where: str):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
        self.raw, self.where, self.used = raw, where, set()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, allow_none: bool = False) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if default is ...:
                raise ConfigError(f"{self.where} lacks `{key}`; add it")
            return default
        value = self.raw[key]
        if value is None and allow_none:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.where}: `{key}` must be {names}, got {value!r}")
        return value

    def positive(self, key: str, default: Any = ..., *, zero_ok: bool = False) -> int:
        value = self.get(key, int, default)
        if value < 0 or (value == 0 and not zero_ok):
            raise ConfigError(f"{self.where}: `{key}` must be {'>= 0' if zero_ok else '> 0'}, got {value}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ConfigError(f"{self.where}: unknown key(s) {unknown}; allowed: {sorted(self.used)}")


# ----------------------------------------------------------------------------- policy
#: The subnets of a space a policy may name as its contention reference.
REFERENCE_SUBNETS = ("largest", "smallest")


@dataclass(frozen=True)
class MeasurePolicy:
    """How to time a module on the device.

    `time_evaluator` already grows `number` until one repeat lasts `min_repeat_ms`;
    `repeat` samples are all kept. A measurement whose relative spread (IQR / median)
    exceeds `max_spread` is taken again, up to `remeasure` more times, after
    `cooldown_ms` of rest (a throttled or busy device shows up as spread).
    `reference` names the space's subnet timed beside every stored measurement (the
    contention reference, `pipeline.measure.Reference`): its largest by default, or its
    smallest, for a device so slow that timing the largest around a job costs more than
    the job (a full-space largest subnet runs 12.4 s a call under emulation, a typical one
    3-6 s: one timing of the largest took ~75 s, a job's own 20-35 s). One choice for
    every space, or a mapping from space name to choice (spaces it does not name use the
    largest), since the smaller reference tracked contention worse on the emulated demo
    space, where the largest is cheap.
    """

    warmup: int = 1
    number: int = 1
    repeat: int = 10
    min_repeat_ms: int = 50
    cooldown_ms: int = 0
    threads: int | None = None
    max_spread: float = 0.10
    remeasure: int = 2
    reference: str | dict[str, str] = "largest"

    def reference_for(self, space: str) -> str:
        """The reference choice ("largest" or "smallest") for the space named `space`."""
        if isinstance(self.reference, str):
            return self.reference
        return self.reference.get(space, "largest")

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "MeasurePolicy":
        f = _Fields(raw, where)
        policy = cls(
            warmup=f.positive("warmup", cls.warmup, zero_ok=True),
            number=f.positive("number", cls.number),
            repeat=f.positive("repeat", cls.repeat),
            min_repeat_ms=f.positive("min_repeat_ms", cls.min_repeat_ms, zero_ok=True),
            cooldown_ms=f.positive("cooldown_ms", cls.cooldown_ms, zero_ok=True),
            threads=f.get("threads", int, None, allow_none=True),
            max_spread=f.get("max_spread", float, cls.max_spread),
            remeasure=f.positive("remeasure", cls.remeasure, zero_ok=True),
            reference=f.get("reference", (str, dict), cls.reference),
        )
        f.done()
        choices = policy.reference.values() if isinstance(policy.reference, dict) else [policy.reference]
        if any(c not in REFERENCE_SUBNETS for c in choices):
            raise ConfigError(f"{where}: `reference` must be one of {list(REFERENCE_SUBNETS)}, or a mapping from "
                              f"space name to one of them, got {policy.reference!r}")
        if policy.threads is not None and policy.threads < 1:
            raise ConfigError(f"{where}: `threads` must be >= 1 or null (all cores), got {policy.threads}")
        if policy.max_spread <= 0:
            raise ConfigError(f"{where}: `max_spread` must be > 0 (e.g. 0.1 for 10%), got {policy.max_spread}")
        return policy


# ------------------------------------------------------------------------ connections
@dataclass(frozen=True)
class LocalConnection:
    """This machine, in-process: no RPC at all."""

    kind = "local"


@dataclass(frozen=True)
class RPCConnection:
    """A TVM RPC server reachable directly (`python -m tvm.exec.rpc_server`)."""

    host: str
    port: int
    key: str = ""
    timeout_s: float = 10.0
    kind = "rpc"


@dataclass(frozen=True)
class TrackerConnection:
    """A TVM RPC tracker; sessions are servers registered under `key`."""

    host: str
    port: int
    key: str
    timeout_s: float = 10.0
    kind = "tracker"


@dataclass(frozen=True)
class SSHConnection:
    """A board reached over SSH: the RPC server is started there and reached through a forwarded port."""

    host: str
    user: str
    key_file: str
    port: int = 22
    known_hosts: str = "~/.ssh/known_hosts"
    allow_unknown_host: bool = False
    remote_python: str = "python3"
    remote_rpc_port: int = 9090
    remote_pythonpath: str = ""
    timeout_s: float = 10.0
    kind = "ssh"


@dataclass(frozen=True)
class EmulatedConnection:
    """The emulated arm64 device on this machine: an RPC server in a qemu-backed chroot."""

    port: int = 9190
    host: str = "127.0.0.1"
    suite: str = "bookworm"
    python: str = "python3.11"
    timeout_s: float = 120.0
    kind = "emulated"


Connection = Union[LocalConnection, RPCConnection, TrackerConnection, SSHConnection, EmulatedConnection]


def _connection(raw: Any, where: str) -> Connection:
    f = _Fields(raw, where)
    kind = f.get("kind", str)
    timeout = f.get("timeout_s", float, 10.0)
    if timeout <= 0:
        raise ConfigError(f"{where}: `timeout_s` must be > 0, got {timeout}")
    if kind == "local":
        conn: Connection = LocalConnection()
    elif kind == "rpc":
        conn = RPCConnection(host=f.get("host", str), port=f.positive("port"), key=f.get("key", str, ""),
                             timeout_s=timeout)
    elif kind == "tracker":
        conn = TrackerConnection(host=f.get("host", str), port=f.positive("port"), key=f.get("key", str),
                                 timeout_s=timeout)
    elif kind == "ssh":
        conn = SSHConnection(
            host=f.get("host", str), user=f.get("user", str), key_file=f.get("key_file", str),
            port=f.positive("port", 22), known_hosts=f.get("known_hosts", str, SSHConnection.known_hosts),
            allow_unknown_host=f.get("allow_unknown_host", bool, False),
            remote_python=f.get("remote_python", str, SSHConnection.remote_python),
            remote_rpc_port=f.positive("remote_rpc_port", SSHConnection.remote_rpc_port),
            remote_pythonpath=f.get("remote_pythonpath", str, ""), timeout_s=timeout)
    elif kind == "emulated":
        conn = EmulatedConnection(port=f.positive("port", EmulatedConnection.port),
                                  suite=f.get("suite", str, EmulatedConnection.suite),
                                  python=f.get("python", str, EmulatedConnection.python),
                                  timeout_s=f.get("timeout_s", float, EmulatedConnection.timeout_s))
    else:
        raise ConfigError(f"{where}: `kind` must be one of local, rpc, tracker, ssh, emulated; got {kind!r}")
    f.done()
    return conn


# ---------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class DeviceProfile:
    """One device: what to compile for, how to reach it, how to time on it."""

    name: str
    arch: str
    target: dict[str, Any]
    connection: Connection
    policy: MeasurePolicy = field(default_factory=MeasurePolicy)
    cross_compiler: str | None = None
    description: str = ""
    source: str = ""

    def __hash__(self) -> int:  # target is a dict; the name and file identify a profile
        return hash((self.name, self.source))

    @property
    def is_host(self) -> bool:
        """True when code for this device runs on this machine (no cross compiler)."""
        return self.cross_compiler is None

    def tvm_target(self):
        """The `tvm.target.Target`; a host profile is completed with this machine's CPU and core count."""
        import tvm

        spec = dict(self.target)
        if self.is_host:
            spec.setdefault("mcpu", _host_cpu())
            spec.setdefault("num-cores", os.cpu_count() or 1)
        try:
            return tvm.target.Target(spec)
        except Exception as err:  # TVM raises its own error types for bad target keys
            raise ConfigError(f"profile {self.name} ({self.source}): TVM refuses target {spec}: "
                              f"{str(err).strip().splitlines()[-1]}; fix `target`") from err

    def with_connection(self, connection: Connection) -> "DeviceProfile":
        """The same device reached another way (tests and farms point profiles at live servers)."""
        return replace(self, connection=connection)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> "DeviceProfile":
        f = _Fields(raw, f"profile {source}")
        name = f.get("name", str)
        where = f"profile {name} ({source})"
        arch = f.get("arch", str)
        if arch not in ARCHS:
            raise ConfigError(f"{where}: `arch` must be one of {list(ARCHS)}, got {arch!r}")
        target = f.get("target", dict)
        if target.get("kind") != "llvm":
            raise ConfigError(f"{where}: `target.kind` must be 'llvm' (CPU devices), got {target.get('kind')!r}")
        cross = f.get("cross_compiler", str, None, allow_none=True)
        profile = cls(
            name=name, arch=arch, target=dict(target),
            connection=_connection(f.get("connection", dict), f"{where} connection"),
            policy=MeasurePolicy.from_dict(f.get("policy", dict, {}), f"{where} policy"),
            cross_compiler=cross, description=f.get("description", str, ""), source=source,
        )
        f.done()
        if arch != _host_arch() and cross is None:
            raise ConfigError(f"{where}: arch {arch} differs from this machine ({_host_arch()}); "
                              f"set `cross_compiler` (e.g. aarch64-linux-gnu-g++)")
        return profile


@lru_cache(maxsize=1)
def _host_cpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def _host_arch() -> str:
    machine = os.uname().machine
    return "arm64" if machine in ("aarch64", "arm64") else machine


def list_profiles() -> list[str]:
    """Names of the profiles in `profile_dirs()` (user and built-in, or `PIPELINE_PROFILES`), sorted."""
    return sorted({p.stem for folder in profile_dirs() for p in folder.glob("*.yaml")})


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A profile by name (the first `NAME.yaml` in `profile_dirs()`) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        candidates = [d / f"{name_or_path}.yaml" for d in profile_dirs()]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise ConfigError(f"no device profile {name_or_path!r}; known: {', '.join(list_profiles()) or 'none'} "
                          f"(or give a path to a profile YAML)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"profile {path} is not valid YAML: {err}; fix the file") from err
    return DeviceProfile.from_dict(raw, source=str(path))
