"""Errors that s2s reports to the user as one line.

Library code raises these for bad input; the CLI prints ``s2s: error: <message>``
and exits non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""


class S2SError(Exception):
    """Base class of every user-facing error."""


class ConfigError(S2SError):
    """An unknown key, a bad value or a contradictory setting in a config."""


class DataError(S2SError):
    """Missing, unreadable, misaligned or empty data."""


class CheckpointError(S2SError):
    """A file that is not an s2s checkpoint, or one that does not fit."""


class Interrupted(S2SError):
    """Training stopped by SIGINT or SIGTERM after saving (rerun to resume): a sweep
    stops here too, where it goes on past a run that failed."""
