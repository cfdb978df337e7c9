"""Build one Relax module into a shared library for one device.

Lowering (fusion + the device's tuned kernels) belongs to `pipeline.kernels` and linking
with the device's compiler to `pipeline.device.export_library`; this module drives the
two around `tvm.compile`, and checks the toolchain before any compile time is spent.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


class ToolchainError(PipelineError):
    """A compiler the build needs is not installed."""


def debian_package_for(compiler: str) -> str:
    """The Debian package of a GNU cross compiler (`aarch64-linux-gnu-g++` -> `g++-aarch64-linux-gnu`)."""
    for tool in ("g++", "gcc"):
        suffix = f"-{tool}"
        if compiler.endswith(suffix):
            return f"{tool}-{compiler[:-len(suffix)]}"
    return compiler


def check_toolchain(profile: Any) -> None:
    """Fail fast, in one line, when the profile's cross compiler is missing."""
    compiler = profile.cross_compiler
    if compiler is not None and shutil.which(compiler) is None:
        package = debian_package_for(compiler)
        hint = (f"`apt-get install {package}` (scripts/setup.sh does)" if package != compiler
                else f"install it or set `cross_compiler` in {profile.source}")
        raise ToolchainError(f"cross compiler {compiler!r} for device {profile.name} is not on PATH; "
                             f"install it with {hint}")


def build_library(mod: Any, profile: Any, lib_path: Path) -> dict[str, Any]:
    """Lower `mod` with the device's kernels, compile for its target, link `lib_path`.

    Returns the kernel coverage as a dict (manifest field `build.kernel_coverage`).
    """
    import tvm

    from pipeline.device import export_library
    from pipeline.kernels import lower_for_target

    check_toolchain(profile)
    target = profile.tvm_target()
    lowered, coverage = lower_for_target(mod, target, profile.name)
    if coverage.untuned_tasks:
        log.warning("%s: %d of %d kernels have neither a tuned record nor a library schedule; they run "
                    "TVM's default loops (slow)", profile.name, len(coverage.untuned_tasks), coverage.total)
    elif not coverage.complete:
        log.info("%s: %s", profile.name, coverage.summary())
    export_library(tvm.compile(lowered, target=target), lib_path, profile)
    return coverage.to_dict()
