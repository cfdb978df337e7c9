"""User-facing errors.

A `PipelineError` is a mistake a user can fix (bad config, unknown device, corrupt
checkpoint, unreachable host). Its message is one line that names the problem and the
fix; the CLI prints it without a traceback and exits with status 2.
"""


class PipelineError(Exception):
    """An error the user can act on; `str(err)` is the whole message."""


class ConfigError(PipelineError, ValueError):
    """A config, space or profile file holds a value outside what is allowed."""


class CheckpointError(PipelineError):
    """A checkpoint is missing tensors, has wrong shapes, or is not a checkpoint."""


class DeviceError(PipelineError):
    """A device cannot be reached, provisioned or used."""
