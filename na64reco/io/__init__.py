"""Reading and writing the na64reco raw ROOT format (see ``docs/raw-format.md``)."""

from na64reco.io.raw import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PROCESSES,
    RawFile,
    RawWriter,
    open_raw,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "PROCESSES", "RawFile", "RawWriter", "open_raw"]
