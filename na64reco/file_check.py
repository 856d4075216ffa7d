"""The check of a run's input files before any of them is processed.

:func:`check_files` opens every file with :func:`na64reco.io.raw.open_raw` (format,
metadata, checksum tables, setup, the ``events`` and ``spills`` trees) and reads its event
numbers: a bad file stops the run (or, with ``skip_bad_files``, is listed with its reason
and events) before anything is processed, and two files holding the same events are
refused (:mod:`na64reco.io.distinct`).

Each file's check (:func:`check_file`) is independent of the others and returns a small
picklable :class:`CheckedFile`, so a run with workers has them check files too
(``remote``, :class:`RemoteChecks`): the calling process checks batches of files from the
front of the list while the workers take the next ones, at most a few batches each ahead,
and the results are taken in the order of the files.  Without it, the check of a
1e4-file campaign (~30 ms a file) is minutes of one process before the first chunk; with
it, the check divides among the workers as the processing does.  Which process checked a
file changes nothing in the result: the same records, errors and skips, in the same order
(the first bad file of the list stops the run; batches after it are cancelled).

A run over files it checked before takes their records from a cache instead
(:mod:`na64reco.file_check_cache`, ``cache``), with the same result.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from na64reco.datasets import Sample, SampleMix
from na64reco.errors import RawFormatError, SetupMismatch
from na64reco.io import location
from na64reco.io.distinct import DistinctFiles, FileIdentity
from na64reco.io.raw import check_spill_counts_of, open_raw

TREE = "events"
#: files per batch handed to a worker (~30 ms of check each: a task of ~0.2 s)
BATCH = 8
#: errors that make a file bad (listed and skipped with ``skip_bad_files``); anything else is raised
BAD_FILE_ERRORS = (RawFormatError, SetupMismatch)


@dataclass
class FileCheck:
    """Result of checking every file before the run."""

    good: dict[str, list[str]]
    entries: dict[str, int]                        # path -> events in the file (good files)
    skipped: dict[str, dict] = field(default_factory=dict)  # path -> {reason, events}
    max_cluster: int = 0                           # largest basket cluster (events) of the good files
    spills: dict[str, dict] = field(default_factory=dict)  # path -> the file's spills tree (arrays)
    #: path -> what coffea's preprocessing would open the file again for
    #: (``numentries``, ``uuid``, ``clusters``) and its ``version`` when checked (local files:
    #: :func:`na64reco.io.location.file_version`: mtime, ctime, inode, size; None for URLs), ``setup``, ``run``,
    #: ``has_truth``, ``blocks`` (the ``events`` checksum blocks; None if checked elsewhere) and
    #: ``baskets`` (where the ``events`` baskets are, :class:`~na64reco.io.baskets.TreeBaskets`:
    #: a chunk is then read without uproot's header; None if checked elsewhere, for a URL, or
    #: a tree out of that reader's scope)
    files: dict[str, dict] = field(default_factory=dict)
    from_cache: int = 0                            # files whose record came from the check cache

    def coffea_metadata(self, treename: str = TREE) -> dict:
        """coffea ``metadata_cache`` entries of the good files: its preprocessing then opens none."""
        from coffea.processor.executor import FileMeta

        return {FileMeta(ds, path, treename): {k: self.files[path][k] for k in ("numentries", "uuid", "clusters")}
                for ds, paths in self.good.items() for path in paths}


@dataclass(frozen=True)
class CheckedFile:
    """What the check of one file found: its record (:attr:`FileCheck.files`), spills and
    identity, or for a bad file the error (class name and one-line message) and the events
    it holds if they can still be counted."""

    path: str
    info: dict | None = None
    spills: dict | None = None
    identity: FileIdentity | None = None
    error: tuple[str, str] | None = None
    events: int = 0

    def raise_error(self):
        """Raise the bad file's error as its own class (one line, no traceback of the check)."""
        cls = {c.__name__: c for c in BAD_FILE_ERRORS}[self.error[0]]
        raise cls(self.error[1]) from None


def check_file(path: str, setup: str, *, blocks: bool = True) -> CheckedFile:
    """Check one file (see the module doc); a bad file gives a :class:`CheckedFile` with its
    error instead of raising.  ``blocks``: keep the ``events`` checksum blocks and basket map in the record
    (for a processor in the same process: :func:`processors.base.note_checked_files`)."""
    try:
        # the events tree now (coffea reads it next); spills when read just below; the
        # truth tree when the processor reads it (docs/performance.md, "Per-file overhead")
        with open_raw(path, setup=setup, structure=(TREE,)) as raw:
            spills = raw.spills()
            ids = raw.scan_ids()  # (in bounded memory: not the whole columns of a large file)
            check_spill_counts_of(ids.spills, ids.counts, spills, path)  # a bad file now, not after its events ran
            edges = cluster_edges(raw)
            info = {"numentries": raw.n_events, "uuid": raw.uuid, "clusters": edges,
                    "version": None if location.is_url(path) else location.file_version(path),
                    "setup": raw.setup, "run": raw.run, "has_truth": raw.has_truth,
                    "blocks": raw.blocks(TREE) if blocks and raw.version >= 3 else None,
                    "baskets": raw.baskets(TREE) if blocks and raw.version >= 3 and not location.is_url(path)
                    else None}
            return CheckedFile(str(path), info, spills, FileIdentity.of(raw, ids.span_numbers()))
    except BAD_FILE_ERRORS as exc:
        return CheckedFile(str(path), error=(type(exc).__name__, " ".join(str(exc).split())),
                           events=_entries_if_readable(path))


def check_batch(paths: Sequence[str], setup: str) -> list[CheckedFile]:
    """:func:`check_file` of each of ``paths`` (a worker's task; no checksum blocks: the
    processors of other processes read their own)."""
    return [check_file(p, setup, blocks=False) for p in paths]


def check_files(fileset: Mapping[str, list[str]], setup: str, *, skip_bad_files: bool,
                remote: RemoteChecks | None = None, cache: KnownChecks | None = None) -> FileCheck:
    """Check every file of ``fileset`` ({dataset: [paths]}) before a run: :func:`check_file`
    (here, and on ``remote``'s workers when it has them); its event numbers that do not
    strictly increase over the whole file make it a bad file here, before anything of it is
    processed (the chunks check only their own events, and a file's contribution cannot be
    taken out of the merged outputs after the run).

    Two files of a dataset that hold the same events (the same path, a copy, the same
    simulation seed and settings, data of one run with overlapping event numbers, the same
    content: :mod:`na64reco.io.distinct`) are a :class:`ConfigError` naming both, with or
    without ``skip_bad_files``: their events and beam particles would be counted twice.  A
    path listed twice in a dataset is refused before any file is opened.  So are two files of a
    dataset that are not one sample (data and simulation, two triggers, beam energies, simulated
    processes or signal masses: :class:`na64reco.datasets.SampleMix`, from what the check read).

    ``cache``: the records of files checked by earlier runs and unchanged since are taken from
    it instead of checking the files again, and what this check finds is kept in it
    (:mod:`na64reco.file_check_cache`); the result is the same."""
    check = FileCheck({}, {})
    distinct, samples = {}, {}
    order = []
    for dataset, files in fileset.items():
        distinct[dataset] = DistinctFiles(f"dataset {dataset!r}")
        samples[dataset] = SampleMix(dataset)
        for path in files:
            distinct[dataset].path(path)
            order.append((dataset, path))
    known = cache.lookup([p for _, p in order], setup) if cache is not None else {}
    results = checked_in_order([p for _, p in order if p not in known], setup, remote)
    checked = []  # records of this check (for the cache)
    try:
        for dataset, path in order:
            res = known.get(path)
            if res is None:
                res = next(results)
                checked.append(res)
            else:
                check.from_cache += 1
            if res.error is not None:
                if not skip_bad_files:
                    res.raise_error()
                check.skipped[str(path)] = {"reason": res.error[1], "events": res.events}
                continue
            distinct[dataset].add(path, res.identity)
            samples[dataset].add(path, Sample.of_identity(res.identity))
            check.files[str(path)] = res.info
            check.good.setdefault(dataset, []).append(str(path))
            check.entries[str(path)] = res.info["numentries"]
            check.spills[str(path)] = res.spills
            check.max_cluster = max(check.max_cluster, largest_cluster(res.info["clusters"]))
    finally:
        results.close()  # cancels the workers' batches not needed any more
        if cache is not None:
            cache.store(checked, setup)
    return check


class KnownChecks(Protocol):
    """Records of files checked before (:class:`na64reco.file_check_cache.CheckCache`)."""

    def lookup(self, paths: Sequence[str], setup: str) -> dict[str, CheckedFile]: ...

    def store(self, records: Sequence[CheckedFile], setup: str) -> None: ...


class RemoteChecks(Protocol):
    """Workers that check batches of files for :func:`check_files`."""

    #: batches the workers may hold at once (a few per worker: one running, the next queued)
    slots: int

    def ready(self) -> bool:
        """Whether workers can take batches now (a cluster still starting cannot)."""

    def submit(self, paths: list[str], setup: str):
        """A future (``done()``, ``result()``, ``cancel()``) of :func:`check_batch` on a worker."""

    def wait(self, futures, timeout: float) -> None:
        """Return when one of ``futures`` is done or after ``timeout`` seconds."""


class PoolChecks:
    """:class:`RemoteChecks` on a ``concurrent.futures`` process pool of ``workers`` processes
    (the futures executor's pool: its processes start while this one checks); ``task`` is what a
    process runs for a batch (:func:`check_batch` or a function returning the same)."""

    def __init__(self, pool, workers: int, task: Callable = check_batch):
        self.pool, self.slots, self.task = pool, 2 * workers, task

    def ready(self) -> bool:
        return True

    def submit(self, paths, setup):
        return self.pool.submit(self.task, paths, setup)

    def wait(self, futures, timeout):
        concurrent.futures.wait(futures, timeout, return_when=concurrent.futures.FIRST_COMPLETED)


class DaskChecks:
    """:class:`RemoteChecks` on a dask cluster; ``client()`` returns its ``Client``, or None while
    the cluster is still starting.  Two batches per worker thread, the workers counted again at
    most once a second (a batch cluster's workers arrive over time); ``task`` as for :class:`PoolChecks`."""

    def __init__(self, client: Callable, task: Callable = check_batch):
        self._client, self._got, self.slots, self._counted, self.task = client, None, 0, -1.0, task

    def ready(self) -> bool:
        if self._got is None:
            self._got = self._client()
        if self._got is not None and time.monotonic() - self._counted > 1.0:
            self._counted = time.monotonic()
            workers = self._got.scheduler_info().get("workers", {})
            self.slots = 2 * sum(int(w.get("nthreads", 1)) for w in workers.values())
        return self._got is not None and self.slots > 0

    def submit(self, paths, setup):
        return self._got.submit(self.task, paths, setup, pure=False)

    def wait(self, futures, timeout):
        from distributed import wait

        try:
            wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass


def checked_in_order(paths: list[str], setup: str, remote: RemoteChecks | None, *, batch: int = BATCH,
                     patience: float | None = None) -> Iterator[CheckedFile]:
    """:func:`check_file` of every path, in order, by batches of ``batch`` paths.  This process
    checks the first batch not yet handed out; while ``remote`` is ready, the batches after the
    next one to return go to its workers (up to its ``slots``), so a run of one batch is checked
    here alone.  Once every batch is handed out, this process
    waits for the workers, but checks the next batch to return itself (and cancels it there)
    when a worker has held it for longer than ``patience`` seconds (default :func:`_patience`):
    a worker that is still starting, or no worker at all, never holds the run up.  Closing the generator cancels what
    the workers still hold."""
    batches = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    out = [False] * len(batches)  # handed out (here or to a worker)
    done: dict[int, list[CheckedFile]] = {}
    pending: dict = {}  # future -> (batch index, time handed out)
    here = []  # seconds per batch checked here

    def free(j):
        """The first batch from ``j`` on not handed out (len(batches) if none)."""
        while j < len(batches) and out[j]:
            j += 1
        return j

    def collect():
        for fut in [f for f in pending if f.done()]:
            k = pending.pop(fut)[0]
            try:
                done[k] = fut.result()
            except Exception:  # a worker lost, or one that cannot check: the batch is checked here
                check_here(k)  # (where an error of the check itself is raised again)

    def check_here(k):
        out[k] = True
        t = time.perf_counter()
        done[k] = [check_file(p, setup) for p in batches[k]]
        here.append(time.perf_counter() - t)

    try:
        for i in range(len(batches)):
            while i not in done:
                collect()
                if i in done:
                    break
                if remote is not None and remote.ready():  # the batches after i (i itself is for here)
                    j = free(i + 1)
                    while j < len(batches) and len(pending) < remote.slots:
                        out[j] = True
                        pending[remote.submit(batches[j], setup)] = (j, time.perf_counter())
                        j = free(j + 1)
                j = free(i)
                if j < len(batches):
                    check_here(j)
                    continue
                since = min(t for k, t in pending.values() if k == i)
                wait = _patience(here) if patience is None else patience
                remote.wait(list(pending), max(0.01, wait - (time.perf_counter() - since)))
                collect()
                if i not in done and time.perf_counter() - since >= wait:
                    _cancel(pending, i)
                    check_here(i)
            yield from done.pop(i)
    finally:
        for fut in pending:
            fut.cancel()


def _patience(here: list[float]) -> float:
    """Seconds a worker may hold the next batch before this process, with nothing else to do,
    checks it itself: 1.5 times what a batch takes here (a worker still starting, or busy)."""
    return max(0.05, 1.5 * sorted(here)[len(here) // 2]) if here else 2.0


def _cancel(pending: dict, k: int) -> None:
    for fut in [f for f, j in pending.items() if j == k]:
        fut.cancel()
        del pending[fut]


def cluster_edges(raw) -> list[int]:
    """Entry offsets of the basket clusters of the ``events`` tree (``[0, n]`` if unknown)."""
    try:
        baskets = raw.baskets(TREE)  # (a version-4 file's basket map: no header read)
        if baskets is not None:
            return baskets.common_entry_offsets()
        return [int(e) for e in raw.tree(TREE).common_entry_offsets()]
    except Exception:
        return [0, raw.n_events]


def largest_cluster(edges) -> int:
    """Events in the largest basket cluster (0 if unknown)."""
    return int(max(b - a for a, b in zip(edges[:-1], edges[1:], strict=True))) if len(edges) > 1 else 0


def _entries_if_readable(path) -> int:
    """Events of a file that failed the check, if its events tree can still be counted."""
    try:
        import uproot

        with uproot.open(location.uproot_source(path)) as f:
            return int(f[TREE].num_entries)
    except Exception:
        return 0

