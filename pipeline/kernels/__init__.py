"""Kernels: per-device tuned schedules over a search space's workloads, and the lowering
that applies them so every compiled subnet is fast without per-model tuning."""
from pipeline.kernels.database import kernel_db_hash
from pipeline.kernels.lower import KernelCoverage, lower_for_target

__all__ = ["KernelCoverage", "kernel_db_hash", "lower_for_target"]
