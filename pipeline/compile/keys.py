"""What a timing is stored under: the subnet id with its head, and the (target, TVM, kernels) a
library built now is built with."""
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


#: The head every timing was taken with before heads were part of the key (what
#: `compile_many` compiled without a supernet): rows of it keep the bare subnet id.
BARE_ID_CLASSES = 1000


def measured_id(subnet_id: str, num_classes: int) -> str:
    """The store's `subnet_id` for a timing of subnet `subnet_id` with a `num_classes` head.

    The head is part of what is timed (0.191 vs 0.131 ms for one demo subnet with 1000 and
    10 classes), so timings of two heads must never share a row or a dataset; the ImageNet
    head keeps the bare id, so the rows measured before this existed stay what they are."""
    return subnet_id if num_classes == BARE_ID_CLASSES else f"{subnet_id}-{num_classes}c"
