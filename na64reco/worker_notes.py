"""What a run's file check found, told to every dask worker of the run (also one that joins
while it runs: a batch cluster's workers arrive over minutes), and forgotten when it ends.

:class:`CheckedFilesPlugin` is a dask ``WorkerPlugin``: ``setup`` notes the records
(:func:`processors.base.note_checked_files`: version, setup, run and truth of each local file,
~100 bytes a file) on each worker when registered or when the worker joins, so that its
processors read a checked file without checking it again; ``teardown``, when the runner
unregisters it after the run, forgets those files on every worker.  Imported by the runner for
dask runs only (it imports ``distributed``).
"""

from __future__ import annotations

import uuid

from distributed import WorkerPlugin


class CheckedFilesPlugin(WorkerPlugin):
    """See the module doc; ``notes``: ``{path: record}`` as ``note_checked_files`` takes them."""

    def __init__(self, notes: dict[str, dict]):
        self.notes = notes
        self.name = f"na64reco-checked-files-{uuid.uuid4().hex}"  # one per run: runs may share a cluster

    def setup(self, worker=None) -> None:
        from processors.base import note_checked_files

        note_checked_files(self.notes)

    def teardown(self, worker=None) -> None:
        from processors.base import forget_checked_files

        forget_checked_files(self.notes)
