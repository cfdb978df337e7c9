"""What a library built now is built with: the measurement store's (target, TVM, kernels) key fields."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.device import DeviceProfile


def current_key_fields(profile: "DeviceProfile") -> tuple[str, str, str]:
    """(target, TVM version, kernel database hash) that measurements taken now are stored under."""
    import tvm

    from pipeline.kernels import kernel_db_hash

    target = profile.tvm_target()
    return str(target), tvm.__version__, kernel_db_hash(profile.name, target)
