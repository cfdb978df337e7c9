"""Linking a compiled executable into a shared library the profile's device can load."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.device.profile import DeviceProfile
from pipeline.errors import DeviceError


def export_library(executable, path: str | os.PathLike, profile: DeviceProfile) -> Path:
    """Write `executable` (from `tvm.compile`) as a `.so` for the profile's device.

    Host profiles use the host compiler; others the profile's cross compiler, which must
    be on PATH (the device may have no compiler of its own, so it gets a finished `.so`).
    """
    path = Path(path)
    if profile.cross_compiler is not None and shutil.which(profile.cross_compiler) is None:
        raise DeviceError(f"cross compiler {profile.cross_compiler!r} of profile {profile.name} is not on PATH; "
                          f"install it (scripts/setup.sh brings aarch64-linux-gnu-g++; the Android NDK clang "
                          f"is separate) or set `cross_compiler` to its full path in {profile.source}")
    with atomic_path(path) as tmp:  # a half-written library never sits at `path`
        if profile.cross_compiler is None:
            executable.export_library(str(tmp))
        else:
            from tvm.support import cc

            executable.export_library(str(tmp), fcompile=cc.cross_compiler(profile.cross_compiler))
    return path
