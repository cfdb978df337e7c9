"""User-facing errors.

A `PipelineError` is a mistake a user can fix (bad config, unknown device, corrupt
checkpoint, unreachable host). Its message is one line that names the problem and the
fix; the CLI prints it without a traceback and exits with status 2. `is_device_failure`
says which other exceptions may become one (what a failing device or link raises); the
rest are bugs and keep their traceback.
"""


class PipelineError(Exception):
    """An error the user can act on; `str(err)` is the whole message."""


class ConfigError(PipelineError, ValueError):
    """A config, space or profile file holds a value outside what is allowed."""


class CheckpointError(PipelineError):
    """A checkpoint is missing tensors, has wrong shapes, or is not a checkpoint."""


class DeviceError(PipelineError):
    """A device cannot be reached, provisioned or used."""


def is_device_failure(err: BaseException) -> bool:
    """Whether `err` is what a failing link or device raises, as opposed to a bug.

    Sockets raise `OSError` (refused, reset, timed out); TVM's RPC layer raises
    `RuntimeError`s (`tvm.error.RPCError`, or `InternalError` "Check failed: ... kShutdown"
    when the server died). Anything else (TypeError, KeyError, ...) is a bug and must keep
    its traceback, as must the RuntimeErrors that only mean a bug.
    """
    return isinstance(err, (OSError, RuntimeError)) and not isinstance(err, (NotImplementedError, RecursionError))
