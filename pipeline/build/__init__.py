"""`pipeline build`: the end-to-end job, from a supernet to verified artifacts per device and budget."""
from pipeline.build.config import BuildConfig
from pipeline.build.loop import BudgetOutcome
from pipeline.build.run import BuildResult, run_build

__all__ = ["BudgetOutcome", "BuildConfig", "BuildResult", "run_build"]
