"""User-facing errors: the CLI prints their message as one paragraph, without a traceback."""


class RftkitError(Exception):
    """Base of every error caused by user input (config, files, names)."""


class ConfigError(RftkitError):
    """A recipe or override is invalid; the message names the key and what was expected."""


class CheckpointError(RftkitError):
    """A run or checkpoint directory is missing or unreadable."""


class TrainingAborted(RftkitError):
    """Training stopped on purpose (e.g. too many non-finite steps); the last checkpoint is intact."""
