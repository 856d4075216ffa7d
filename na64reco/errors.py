"""Exceptions raised at the library's boundaries.

Each refines a builtin so callers can catch either, and each message says what
was expected, what was found and (where possible) what to do.
"""


class NA64Error(Exception):
    """Base class of every error raised on purpose by na64reco."""


class ConfigError(NA64Error, ValueError):
    """A YAML configuration (setup, conditions, tag, selection) is malformed."""


class CalibrationMissing(NA64Error, KeyError):
    """No conditions cover the requested run."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RawFormatError(NA64Error, ValueError):
    """A raw file is missing, truncated, corrupt, of an unknown format version or lacks a branch.

    The message is one line, whatever the reader below wrote (uproot's span several)."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class RemoteFileUnavailable(RawFormatError, ConnectionError):
    """A remote file (URL) could not be reached: the server refused, dropped or timed out.

    A bad file for the file checks (skippable with ``--skip-bad-files``), and a transient
    error for the chunk retries (``--retries``)."""


class SetupMismatch(NA64Error, ValueError):
    """A file was written for another setup than the one being processed."""


class BlindingError(NA64Error, PermissionError):
    """An operation would expose events inside a blinded signal box."""
