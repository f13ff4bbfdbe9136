"""User-facing errors: each is reported by the CLI as one line, without a traceback."""


class SdrunError(Exception):
    """A problem the user can fix (bad config, missing data, corrupt file).

    The message must name what is wrong and how to fix it, in one line.
    """


class ConfigError(SdrunError):
    """A config value is invalid or two values do not go together."""


class DataError(SdrunError):
    """Data is missing, unreadable or inconsistent."""


class CheckpointError(SdrunError):
    """A checkpoint is missing, corrupt or does not match the run."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint holds more than tensors and plain values: loading it could run code."""


class TrainingDiverged(SdrunError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
