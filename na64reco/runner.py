"""Run a processor over raw files with coffea's Runner (iterative, futures or dask).

    out = run_files({"mu_data": ["a.root", "b.root"]}, RunOptions("na64mu_invisible",
                    executor="dask", workers=2))
    save_outputs(out, "outdir/")

What this adds to ``coffea.processor.Runner``:

* files are checked with :func:`na64reco.io.raw.open_raw` before coffea sees them
  (empty, truncated, missing branch, other setup; :mod:`na64reco.file_check`, by this process
  and, with futures or dask, by the workers too); with ``skip_bad_files`` a bad file
  is listed with the reason and its events are accounted as skipped, without it the run
  stops with one error naming the file.  A file that opens but fails while its chunks
  are read is skipped chunk by chunk (with the same accounting) or stops the run;
* retries are for *transient* errors only (time-outs, lost connections, I/O errors):
  a deterministic error (bad file, bad configuration, a bug) is never re-run.  Our retry
  replaces coffea's ``automatic_retries``, and dask's own task retries are set to 0, so
  the two never multiply; a dask worker that dies is handled by the scheduler, which
  reschedules its tasks (``distributed.scheduler.allowed-failures``);
* the futures pool is made once per run and reused for every call;
* the flat tree is read with the schema *class* ``BaseSchema`` and all branches are
  preloaded in one go (the fileset ``preload`` option; lazy reading decompressed the
  jagged branches twice);
* chunks follow the files' basket clusters when the clusters are no larger than the
  chunk size: every chunk is then whole clusters and at most ``chunksize`` events (a chunk
  that cuts a cluster makes uproot decompress that cluster's baskets once per chunk
  touching it, ~3x the read cost at chunks of 5000 events in files with ~19k-event
  clusters).  Files with larger clusters are cut every ``chunksize`` events;
* accounting: ``events_processed + events_skipped == events_total`` for every run.
"""

from __future__ import annotations

import errno
import json
import numbers
import sys
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from coffea import processor
from coffea.nanoevents import BaseSchema

from na64reco.config import load_yaml
from na64reco.datasets import Sample, check_name, check_names, group_files
from na64reco.errors import BlindingError, CalibrationMissing, ConfigError, NA64Error, RawFormatError, SetupMismatch
from na64reco.file_check import DaskChecks, FileCheck, PoolChecks, check_files
from na64reco.io import location
from na64reco.io.raw import declared_meta, event_branches
from na64reco.job_defaults import EXECUTORS, RUN_CHUNK
from na64reco.summary import cutflow_summary, format_summary

FILESET_SCHEMA_VERSION = 1
TREE = "events"
#: uproot options of the files coffea opens per chunk.  No array cache: a chunk's file is
#: freed only by the cyclic garbage collector (uproot's file objects reference each other),
#: and its default 100 MB array cache kept the chunk's decoded branches (~1.5 kB/event) alive
#: until then, so memory grew with the file (docs/performance.md, "Memory").
UPROOT_OPTIONS = {"array_cache": None}


@dataclass
class RunOptions:
    """How to run (see ``na64reco run --help``)."""

    processor: str
    executor: str = "iterative"
    workers: int = 1
    scheduler: str | None = None
    chunksize: int = RUN_CHUNK
    skip_bad_files: bool = False
    retries: int = 0
    calib_tag: str | None = None
    selection: str | None = None
    status: bool = False
    client: object = None   # an existing dask Client (tests, notebooks)
    bad_spills: str | Path | None = None  # bad-spill list (na64reco dqm): those spills are dropped
    check_cache: bool = True  # take the check of files unchanged since an earlier run from its cache

    def __post_init__(self):
        if not isinstance(self.executor, str) or self.executor not in EXECUTORS:
            raise ConfigError(f"executor {self.executor!r} is not one of: {', '.join(EXECUTORS)}")
        for name, least in (("workers", 1), ("chunksize", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer >= {least}, got {value!r} ({type(value).__name__})")
            if value < least:
                raise ConfigError(f"{name} must be >= {least}, got {value}")
            setattr(self, name, int(value))  # (a numpy integer as a plain int)
        if self.scheduler is not None:  # before any work: the form of the address (its connection: the run's start)
            check_scheduler_address(self.scheduler)
        if self.calib_tag is not None:  # before any file is read (it names the file tags/<tag>.yaml)
            from na64reco.conditions import check_tag_name

            check_tag_name(self.calib_tag, "--calib-tag")


#: the schemes of distributed's communication back-ends (``distributed.comm``)
SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def check_scheduler_address(address) -> str:
    """``address`` if it is the address of a dask scheduler, ``[SCHEME://]HOST:PORT`` (tcp:// if no
    scheme; a scheme of :data:`SCHEDULER_SCHEMES`; an IPv6 host in brackets), else a
    :class:`ConfigError` naming it.  Only its form is checked (by itself, not through dask's
    configuration): whether a scheduler answers there is seen when the run connects."""
    expected = "expected the address of a dask scheduler such as tcp://HOST:PORT"
    if not isinstance(address, str):
        raise ConfigError(f"scheduler must be a text, got {address!r} ({type(address).__name__}); {expected}")
    scheme, sep, loc = address.strip().partition("://")
    if not sep:
        scheme, loc = "tcp", scheme
    why = None
    if not address.strip():
        why = "empty"
    elif scheme not in SCHEDULER_SCHEMES:
        why = f"unknown scheme {scheme!r} (known: {', '.join(SCHEDULER_SCHEMES)})"
    elif scheme != "inproc":
        host, colon, port = loc.rpartition(":")
        if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            why = "no HOST:PORT with a port in 1-65535"
    if why:
        raise ConfigError(f"scheduler {address!r} is not a scheduler address ({why}); {expected}")
    return address


def _one_fileset(fileset) -> dict[str, list[str]]:
    """``fileset`` ({dataset: [files]}) with each dataset's files as a list of locations
    (:func:`na64reco.io.location.location`); a single path (a ``str`` or path object) is a
    dataset of one file.  A dataset without files, or a file that is not a path, is a
    :class:`ConfigError` naming the dataset."""
    import os

    if not isinstance(fileset, Mapping):
        raise ConfigError(f"fileset must be a mapping {{dataset: [files]}}, got {type(fileset).__name__}")
    if not fileset:
        raise ConfigError("fileset has no datasets; expected {dataset: [files]}")
    out = {}
    for name, files in fileset.items():
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        elif isinstance(files, Mapping) or not isinstance(files, Iterable):
            raise ConfigError(f"dataset {name!r}: expected a list of file paths (or one path), "
                              f"got {type(files).__name__}")
        files = list(files)
        if not files:
            raise ConfigError(f"dataset {name!r} has no files; expected a non-empty list of file paths")
        bad = [f for f in files if not isinstance(f, (str, os.PathLike))]
        if bad:
            raise ConfigError(f"dataset {name!r}: {bad[0]!r} ({type(bad[0]).__name__}) is not a file path")
        out[name] = [location.location(f) for f in files]
    return out


# ----------------------------------------------------------------------------------------
def load_fileset(path: str | Path) -> dict[str, list[str]]:
    """Read a fileset YAML: ``schema_version: 1`` and ``datasets: {name: [files]}``.

    A dataset may also be ``{files: [...]}``; relative paths are relative to the YAML,
    absolute paths and URLs (``root://``, ``https://``, ``s3://``) are taken as they are.
    Dataset names are plain names (:func:`na64reco.datasets.check_name`).
    """
    path = Path(path)
    node = load_yaml(path, schema_version=FILESET_SCHEMA_VERSION)
    datasets = node.node("datasets")
    out = {}
    for name in datasets.data:
        value = datasets.data[name]  # (names may contain dots: no key-path lookup)
        try:
            check_name(str(name))
        except ConfigError as exc:
            raise datasets.error(str(name), str(exc)) from None
        if isinstance(value, dict):
            unknown = [str(k) for k in value if k != "files"]
            if unknown:
                raise datasets.error(str(name), f"unknown key {unknown[0]!r}; the allowed key is 'files' "
                                     "(a dataset is a list of file paths or {files: [...]})")
        files = value.get("files") if isinstance(value, dict) else value
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise datasets.error(str(name), "expected a non-empty list of file paths (or {files: [...]})")
        if str(name) in out:  # 1 and "1" are two YAML keys but one dataset name: one would replace the other
            raise datasets.error(str(name), "given twice (as a number and as a string, e.g. 1: and \"1\":); "
                                 "expected each dataset once")
        out[str(name)] = [location.join(path.parent, f) for f in files]
    if not out:
        raise node.error("datasets", "no datasets")
    return out


def fileset_from_files(files: list[str], dataset: str | None = None) -> dict[str, list[str]]:
    """Datasets for a plain list of files.

    With ``dataset`` (a plain name, :func:`na64reco.datasets.check_name`) all files form that
    one dataset (the run refuses it if they are not one sample: data and simulation, two
    triggers, beam energies, processes or signal masses, :class:`na64reco.datasets.SampleMix`).
    Otherwise files are grouped by what their metadata declares, so that samples are never summed by accident:
    ``data`` (no truth), ``mc_<process>`` for simulated files (``mc_signal_m<mass>GeV`` for
    signal), ``mc`` for simulation of unknown origin, with a suffix for the files of a group
    that differ in trigger, beam energy or run period (``mc_mixture_calibration``,
    ``mc_mixture_100GeV``, ``data_2023``: :func:`na64reco.datasets.group_files`).  The metadata
    is read without checks (:func:`na64reco.io.raw.declared_meta`, one small read per file; the
    run checks every file next), so a file that the run will refuse (truncated, say) goes to the
    dataset its metadata declares, and to ``default`` only if even that is unreadable.
    """
    files = [location.location(f) for f in files]  # URLs as given (never through Path)
    if dataset is not None:
        return {check_name(dataset): files}
    samples = []
    for f in files:
        meta = declared_meta(f)
        samples.append((f, None if meta is None else Sample.of_meta(meta)))
    return group_files(samples)


def chunking(chunksize: int, max_cluster: int) -> tuple[int, bool]:
    """(coffea target chunk size, align to clusters) for chunks of at most ``chunksize`` events.

    coffea's aligned chunks end at the first cluster edge at least ``target`` events after
    their start, so they hold fewer than ``target + max_cluster`` events: with
    ``target = chunksize - max_cluster + 1`` they are whole clusters of at most ``chunksize``.
    """
    if 0 < max_cluster <= chunksize:
        return chunksize - max_cluster + 1, True
    return chunksize, False


def _chain(exc: BaseException):
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


_TRANSIENT_ERRNO = {errno.EIO, errno.EAGAIN, errno.ESTALE, errno.EBUSY, errno.ETIMEDOUT,
                    errno.ECONNRESET, errno.ECONNREFUSED, errno.EHOSTUNREACH}


#: HTTP answers worth retrying (time-out, too many requests, server errors of a proxy or gateway)
_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


def _network_errors() -> tuple[type, ...]:
    """Lost-connection errors of the HTTP client of remote files (aiohttp through fsspec)."""
    try:
        import aiohttp
    except ImportError:
        return ()
    return aiohttp.ClientConnectionError, aiohttp.ClientPayloadError


def is_transient(exc: BaseException) -> bool:
    """An error worth retrying: time-outs, lost connections (also of remote files: a
    dropped HTTP connection, HTTP 408/429/5xx), transient I/O errors."""
    network = _network_errors()
    for e in _chain(exc):
        if isinstance(e, NA64Error) and not isinstance(e, ConnectionError):  # (RemoteFileUnavailable is)
            return False
        if isinstance(e, (TimeoutError, ConnectionError, InterruptedError, BlockingIOError, *network)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO:
            return True
        if type(e).__module__.startswith("aiohttp") and getattr(e, "status", None) in _TRANSIENT_HTTP:
            return True
        if isinstance(e, TypeError) and any(f"'{name}' object" in str(e) for name in _NETWORK_ERROR_NAMES):
            # uproot 5.7 reading through fsspec receives a failed byte range as the
            # exception object (fsspec's cat_ranges on_error="return") and fails with
            # "TypeError: 'ServerDisconnectedError' object is not subscriptable"
            return True
    return False


_NETWORK_ERROR_NAMES = ("ServerDisconnectedError", "ClientConnectorError", "ClientOSError", "ClientPayloadError",
                        "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError", "FSTimeoutError",
                        "ConnectionResetError", "ConnectionRefusedError", "TimeoutError")


def is_bad_file(exc: BaseException) -> bool:
    """An error that says the *file* is bad (skippable with --skip-bad-files)."""
    import struct
    import zlib

    import uproot

    # a refusal, or a calibration or configuration file that is wrong: never a bad raw file to skip
    # (every file would be "bad")
    if any(isinstance(e, (BlindingError, ConfigError)) for e in _chain(exc)):
        return False
    bad = (RawFormatError, SetupMismatch, OSError, EOFError, zlib.error, struct.error,
           uproot.exceptions.KeyInFileError, uproot.deserialization.DeserializationError)
    return any(isinstance(e, bad) for e in _chain(exc)) or any(
        "decompress" in str(e).lower() or "basket" in str(e).lower() for e in _chain(exc)) or _raised_reading(exc)


def _raised_reading(exc: BaseException) -> bool:
    """True if ``exc`` was raised while coffea/uproot read the chunk, before the processor
    saw it: whatever its type, the file's bytes could not be decoded.  (Inside the
    processor, reading and checking the chunk turn every failure into a RawFormatError;
    anything else raised there is a bug, not a bad file.)"""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    in_processor = any(code.co_name in ("process", "process_chunk") and code.co_filename.endswith("processors/base.py")
                       for code in frames)
    in_reader = any("/uproot/" in code.co_filename or "/awkward/" in code.co_filename for code in frames)
    return in_reader and not in_processor


def _work_item(args):
    item = args[0] if args else None
    if isinstance(item, tuple):  # dask: (item, heavy_input)
        item = item[0]
    return item if isinstance(item, processor.executor.WorkItem) else None


class ChunkGuard:
    """Replaces coffea's ``automatic_retries``: retry transient errors, skip bad chunks.

    Called by coffea as ``guard(coffea_retries, skipbadfiles, func, *args, **kw)``; the
    coffea arguments are ignored (coffea would retry every error, and multiply with
    dask's retries).
    """

    def __init__(self, retries: int, skip_bad_files: bool, backoff: float = 0.5):
        self.retries, self.skip_bad_files, self.backoff = retries, skip_bad_files, backoff

    def __call__(self, _coffea_retries, _skipbadfiles, func, *args, use_result_type=False, **kwargs):
        attempt = 0
        while True:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                item = _work_item(args)
                if is_transient(exc) and attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * attempt)
                    continue
                if item is not None and self.skip_bad_files and is_bad_file(exc):
                    return {"out": {}, "processed": {item},
                            "na64_skipped": {item.filename: {
                                # a list: the skips of a file's chunks are merged by concatenation
                                "reason": [f"entries {item.entrystart}-{item.entrystop}: {_root_message(exc)}"],
                                "events": item.entrystop - item.entrystart}}}
                raise ChunkError(item, exc) from exc


def _root_message(exc: BaseException) -> str:
    """The message that says what went wrong: the outermost of the package's own errors in the
    chain (they name the file, key or value: a calibration YAML's syntax error, a branch's bad
    value), else the innermost error (what a library raised)."""
    chain = _chain(exc)
    own = [e for e in chain if isinstance(e, NA64Error) and not isinstance(e, ChunkError)]
    inner = own[0] if own else chain[-1]
    return f"{type(inner).__name__}: {inner}"


class ChunkError(NA64Error):
    """A chunk failed with a non-transient error (or after its retries)."""

    def __init__(self, item, exc):
        where = (f"{item.filename} (entries {item.entrystart}-{item.entrystop})" if item is not None
                 else "preprocessing")
        super().__init__(" ".join(f"{where}: {_root_message(exc)}".split()))


# ----------------------------------------------------------------------------------------
class ChunkRunner(processor.Runner):
    """coffea's ``Runner`` (the same executors, chunking, accumulation and retries) whose
    chunks for a processor with ``process_chunk(arrays, metadata)`` (the invisible-mode
    processors) are read with one ``uproot`` ``arrays`` call into a plain awkward record
    array of the ``events`` branches, instead of through coffea's NanoEvents factory:
    its forms, type names and virtual arrays were ~8 ms per chunk of fixed cost, and
    every branch the processor then touched went through the factory's mapping again
    (~6 ms per chunk), more than reading a 940-event chunk (docs/performance.md,
    "Per-file overhead", third pass).  Other processors, metrics and checkpoints take
    coffea's own path."""

    @staticmethod
    def _work_function(format, xrootdtimeout, schema, use_dataframes, savemetrics, item, **kwargs):
        proc = kwargs["processor_instance"]
        if isinstance(proc, str) and proc == "heavy":  # dask: (item, processor)
            item, proc = item
        if not isinstance(proc, processor.ProcessorABC) and not callable(proc):  # futures: compressed pickle
            import cloudpickle
            import lz4.frame

            proc = cloudpickle.loads(lz4.frame.decompress(proc))
        if (format != "root" or savemetrics or kwargs.get("checkpointer") is not None
                or not hasattr(proc, "process_chunk")):
            return processor.Runner._work_function(format, xrootdtimeout, schema, use_dataframes, savemetrics,
                                                   item, **{**kwargs, "processor_instance": proc})
        known = getattr(proc, "known_baskets", None)
        chunk = read_chunk(item, kwargs["uproot_options"], xrootdtimeout, baskets=known and known(item.filename))
        return {"out": proc.process_chunk(chunk, chunk_metadata(item)),
                "processed": {item}}


def chunk_metadata(item) -> dict:
    """What coffea's ``events.metadata`` holds for a work item."""
    import uuid

    meta = {"dataset": item.dataset, "filename": item.filename, "treename": item.treename,
            "entrystart": item.entrystart, "entrystop": item.entrystop,
            "fileuuid": str(uuid.UUID(bytes=item.fileuuid)) if len(item.fileuuid) > 0 else ""}
    meta.update(item.usermeta or {})
    return meta


def read_chunk(item, uproot_options: dict, timeout=None, baskets=None):
    """The entries ``[entrystart, entrystop)`` of the work item's tree, its preload branches
    (all branches of ``events`` if none), as one awkward record array.  With ``baskets`` (the
    tree's :class:`~na64reco.io.baskets.TreeBaskets` from the run's check of the file, a local
    file) read from the baskets directly: no header of the tree, ~6 ms for a 1k-MOT file instead
    of ~25 ms (docs/performance.md, "The chunk read from the basket map"); else one
    open, one header and one ``arrays`` call of uproot (a local file memory-mapped).  Errors
    propagate (the runner's :func:`is_bad_file` takes them as the file's, as when coffea read
    the chunk)."""
    import uproot

    from na64reco.reco.event import record

    names = [b for b in event_branches() if not item.preload or b in item.preload]
    names += sorted(set(item.preload or ()) - set(names))
    if baskets is not None and baskets.tree == item.treename and set(names) <= set(baskets.names):
        return record(baskets.read(item.filename, names, item.entrystart, item.entrystop))
    options = dict(uproot_options)
    timeout = options.pop("timeout", timeout)
    if not location.is_url(item.filename):  # a local file memory-mapped: ~2 ms per chunk less than
        options.setdefault("handler", uproot.source.file.MemmapSource)  # fsspec's (and its I/O thread)
    with uproot.open({item.filename: None}, timeout=timeout, **options) as file:
        arrays = file[item.treename].arrays(names, entry_start=item.entrystart, entry_stop=item.entrystop,
                                            how=dict)
    return record(arrays)


def _start_local_cluster(opts: RunOptions, stack: ExitStack):
    """For ``executor="dask"`` without a client or scheduler: start :func:`local_cluster`
    in a background thread (its worker processes start while the client checks the files
    and imports what coffea's dask executor needs); a future of the cluster, or None.
    The cluster is closed when ``stack`` closes, also after an error."""
    if opts.executor != "dask" or opts.client is not None or opts.scheduler:
        return None
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="na64reco-local-cluster")
    starting = pool.submit(local_cluster, opts.workers)
    pool.shutdown(wait=False)
    stack.callback(_close_cluster, starting)
    import dask.dataframe  # noqa: F401  (coffea's DaskExecutor imports it on its first call: ~1 s)

    return starting


def _close_cluster(starting) -> None:
    if starting.exception() is None:  # (waits for the start; a failed start was reported already)
        starting.result().close()


class _Workers:
    """The run's worker processes, made once when first needed: the futures executor's process
    pool, or the dask client (of ``opts.client``, ``opts.scheduler``, or a local cluster started
    in the background, ``starting``).  They check files (:meth:`checks`) and then run the
    chunks (:meth:`executor`); closed with ``stack``."""

    def __init__(self, opts: RunOptions, stack: ExitStack, starting=None):
        self.opts, self.stack, self.starting = opts, stack, starting
        self._pool = self._client = None

    def pool(self):
        if self._pool is None:
            import loky

            from na64reco.sim.heap import retain_freed_memory

            # one pool for the whole run; its processes only run chunks: their arrays reuse the heap
            self._pool = loky.ProcessPoolExecutor(max_workers=self.opts.workers, initializer=retain_freed_memory)
            self.stack.callback(self._pool.shutdown)
        return self._pool

    def client(self, *, wait: bool = True):
        """The dask client; None if ``wait`` is false and the local cluster is still starting."""
        if self._client is None:
            opts = self.opts
            if opts.client is not None:
                self._client = opts.client
            else:
                from dask.distributed import Client

                if opts.scheduler:
                    self._client = self.stack.enter_context(_connect(opts.scheduler))
                elif self.starting is not None:
                    if not wait and not self.starting.done():
                        return None
                    self._client = self.stack.enter_context(Client(self.starting.result()))
                else:
                    cluster = self.stack.enter_context(local_cluster(opts.workers))
                    self._client = self.stack.enter_context(Client(cluster))
        return self._client

    def checks(self):
        """Where the file check may send batches of files (:mod:`na64reco.file_check`): None
        for the iterative executor (all in this process)."""
        if self.opts.executor == "futures":
            return PoolChecks(self.pool(), self.opts.workers, check_and_note)
        if self.opts.executor == "dask":
            return DaskChecks(lambda: self.client(wait=False), check_and_note)
        return None

    def executor(self):
        opts = self.opts
        if opts.executor == "iterative":
            return processor.IterativeExecutor(status=opts.status, retries=0)
        if opts.executor == "futures":
            return processor.FuturesExecutor(pool=self.pool(), workers=opts.workers, status=opts.status,
                                             retries=0, compression=1)
        return processor.DaskExecutor(client=self.client(), status=opts.status, retries=0, treereduction=8)


def _connect(address: str):
    """A dask ``Client`` of the scheduler at ``address``; a scheduler that cannot be reached (within
    dask's ``distributed.comm.timeouts.connect``, 30 s by default) is an :class:`NA64Error` naming it."""
    from dask.distributed import Client

    check_scheduler_address(address)
    try:
        return Client(address)
    except (OSError, TimeoutError) as exc:
        raise NA64Error(f"cannot connect to the dask scheduler {address} (--scheduler): "
                        f"{' '.join(str(exc).split()) or type(exc).__name__}") from exc


#: what distributed's nanny would put in a local worker's environment and
#: :func:`local_cluster` leaves out (``None`` in ``distributed.nanny.pre-spawn-environ``)
WORKER_ENVIRON_UNSET = ("MALLOC_TRIM_THRESHOLD_",)


def local_cluster(workers: int, *, preload: bool = True):
    """The one-machine dask cluster of ``--executor dask`` (no ``--scheduler``).

    ``workers`` processes of one thread each (the reconstruction holds the GIL for much
    of its time), no dashboard (its HTTP routes on a free loopback port), warnings and
    errors only in the log, and the client's
    numba cache directory.  ``preload`` (the default): the workers run
    :mod:`na64reco.dask_worker` (imports and numba start-up before the first task, fast
    exit), and where the platform has it and dask's start method is left at its default,
    the worker processes are forked from a fork server that imported the analysis modules
    and started numba once (instead of each worker doing it: ~2-3 s of CPU per worker).
    ``benchmarks/bench_dask_startup.py`` times each phase.

    The workers keep glibc's own heap policy: distributed's default sets ``MALLOC_TRIM_THRESHOLD_``
    in a worker's environment (:data:`WORKER_ENVIRON_UNSET`), which also turns off glibc's dynamic
    mmap threshold, so every large array of every chunk is mapped afresh and faulted in page by page:
    ~200k page faults and +25 % CPU per 188k events (docs/performance.md, "dask workers without
    distributed's malloc trim").  A value in the caller's environment is inherited all the same (a
    ``LocalCluster`` with distributed's defaults puts the default there); with the default value the
    preload then keeps freed memory instead (:func:`na64reco.dask_worker.keep_freed_memory_if_trimmed`).
    """
    import logging
    import os

    import dask
    import numba
    from dask.distributed import LocalCluster

    env = {}
    cache = os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR
    if cache:
        env["NUMBA_CACHE_DIR"] = str(cache)
    config = {f"distributed.nanny.pre-spawn-environ.{k}": None for k in WORKER_ENVIRON_UNSET}
    if preload and _use_forkserver():
        config["distributed.worker.multiprocessing-method"] = "forkserver"
    with dask.config.set(config):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            # the scheduler's HTTP routes on a free loopback port: no "port 8787 is
                            # in use" warning when another cluster runs on the machine
                            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                            silence_logs=logging.WARNING, env=env,
                            preload=["na64reco.dask_worker"] if preload else [])



@contextmanager
def local_client(workers: int):
    """A client of :func:`local_cluster` with ``workers`` workers, closed on exit; None (work in
    this process) when ``workers`` is 0 or less: the ``--workers`` option of the scripts."""
    if workers <= 0:
        yield None
        return
    from distributed import Client

    with local_cluster(workers) as cluster, Client(cluster) as client:
        yield client

#: Modules distributed puts into its fork server's preload (its optional packages) that a
#: worker running na64reco processors never imports: pandas alone is ~75 MB of every
#: worker's resident memory (docs/performance.md, "Worker memory").
NOT_PRELOADED = ("pandas",)


def _use_forkserver() -> bool:
    """Make dask's fork server (if dask is configured to spawn, the default) import
    :data:`na64reco.dask_worker.MODULES` and start numba once, before it forks the
    workers (:mod:`na64reco._forkserver_preload`); False where there is no fork server."""
    import multiprocessing
    import multiprocessing.forkserver

    import dask

    if (dask.config.get("distributed.worker.multiprocessing-method") != "spawn"
            or "forkserver" not in multiprocessing.get_all_start_methods()):
        return False
    from distributed.utils import get_mp_context

    from na64reco.dask_worker import MODULES

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        ctx = get_mp_context()  # distributed sets its own preload list the first time
    current = [m for m in getattr(multiprocessing.forkserver._forkserver, "_preload_modules", None) or []
               if m not in NOT_PRELOADED]
    wanted = [*MODULES, "na64reco.dask_worker", "na64reco._forkserver_preload"]
    ctx.set_forkserver_preload(current + [m for m in wanted if m not in current])
    return True


def _close_raw_files():
    """Raw files the processor kept open in this process (iterative executor)."""
    from processors.base import close_raw_files

    close_raw_files()


def _note_checked(check: FileCheck, client=None) -> str | None:
    """Tell the processors what the check found in each file: its version, setup, run, truth
    and (checked in this process) the checksum blocks of its events, so that they open a data
    file not at all, or only for its checksum table, and a simulated one only for its truth
    (:func:`processors.base.note_checked_files`).  This process's processor (iterative executor),
    or with ``client`` every dask worker's, also one that joins during the run, without the blocks
    (~100 bytes a file; a worker keeps those of the files it checked itself, :func:`check_and_note`),
    by a worker plugin (:mod:`na64reco.worker_notes`) whose name is returned."""
    if client is None:
        from processors.base import note_checked_files

        note_checked_files(_notes(check.files))
        return None
    from na64reco.worker_notes import CheckedFilesPlugin

    plugin = CheckedFilesPlugin(_notes(check.files, blocks=False))
    client.register_plugin(plugin)
    return plugin.name


def check_and_note(paths, setup: str) -> list:
    """A worker's batch of the file check (:func:`na64reco.file_check.check_batch`), noted for the
    processors of that worker process as well (with the checksum blocks and basket map, as in the
    client), so that a chunk of a file it checked is read without a second check; the records go
    back without them."""
    from dataclasses import replace

    from na64reco.file_check import check_file
    from processors.base import note_checked_files

    records = [check_file(p, setup) for p in paths]
    note_checked_files(_notes({r.path: r.info for r in records if r.info is not None}))
    return [replace(r, info={**r.info, "blocks": None, "baskets": None}) if r.info is not None else r for r in records]


def _notes(files: dict, *, blocks: bool = True) -> dict:
    """What the processors are told of each checked local file (``files``: :attr:`FileCheck.files`)."""
    from processors.base import checked_note

    return {path: checked_note(rec, blocks=blocks) for path, rec in files.items() if rec["version"] is not None}


def _forget_checked(client, plugin: str) -> None:
    """The dask workers forget the run's check: its plugin (:func:`_note_checked`) unregistered."""
    try:
        client.unregister_worker_plugin(plugin)
    except Exception:  # (a cluster that went away: nothing to forget)
        pass


def make_processor(opts: RunOptions, unblind=None):
    from processors import get_processor

    cls = get_processor(opts.processor)
    return cls(opts.selection, calib_tag=opts.calib_tag, unblind=unblind)


def run_files(fileset: Mapping[str, list[str]], opts: RunOptions, *, processor_instance=None) -> dict:
    """Run over ``fileset`` ({dataset: [files]}); return ``{dataset: outputs}``.

    Every dataset's ``provenance`` lists the skipped files with reasons and events, and
    carries ``events_total`` (events in all files, bad ones included when countable).  The
    datasets are in the order of ``fileset``, whatever the executor; their names are checked
    before anything is done (:func:`na64reco.datasets.check_name`), their files with the
    files' check (one sample per dataset, :class:`na64reco.datasets.SampleMix`).
    """
    fileset = _one_fileset(fileset)
    check_names(fileset)
    proc = processor_instance or make_processor(opts)
    if opts.bad_spills is not None:  # dropped by the processor, left out of the MOT/EOT
        proc.use_bad_spills(opts.bad_spills)
    wrapped = {"out": {}}
    with ExitStack() as stack:
        starting = _start_local_cluster(opts, stack)  # in the background while the files are checked
        workers = _Workers(opts, stack, starting)
        if opts.executor == "dask" and opts.client is None and opts.scheduler:
            workers.client()  # connect now: a scheduler that does not answer stops the run before any work
        cache = _check_cache(opts, stack)
        check = check_files(fileset, proc.SETUP, skip_bad_files=opts.skip_bad_files, remote=workers.checks(),
                            cache=cache)
        proc.known_spills = check.spills  # read once here; the processor's exposure needs them
        _check_runs_known(check, proc)
        if check.from_cache and opts.status:
            print(f"the checks of {check.from_cache} of {sum(map(len, fileset.values()))} files taken from "
                  f"{cache.path} (files unchanged since; --no-check-cache checks every file)", file=sys.stderr)
        if cache is not None and opts.executor == "futures":  # (the pool's processes cannot be told: they look)
            proc.check_cache = str(cache.path.parent)
        t0 = time.time()
        if check.good:
            coffea_fileset = {ds: {"files": files, "treename": TREE, "preload": event_branches()}
                              for ds, files in check.good.items()}
            target, align = chunking(opts.chunksize, check.max_cluster)
            executor = workers.executor()
            runner = ChunkRunner(
                executor=executor, pre_executor=processor.IterativeExecutor(status=False, retries=0),
                schema=BaseSchema, chunksize=target, align_clusters=align, skipbadfiles=False,
                metadata_cache=check.coffea_metadata(TREE), savemetrics=False,
            )
            runner.automatic_retries = ChunkGuard(opts.retries, opts.skip_bad_files)
            _note_checked(check)
            stack.callback(_close_raw_files)
            if opts.executor == "dask":
                stack.callback(_forget_checked, workers.client(), _note_checked(check, workers.client()))
            _quiet_coffea_bars(stack, quiet=not opts.status)
            try:
                wrapped = runner.run(coffea_fileset, proc, treename=TREE, uproot_options=dict(UPROOT_OPTIONS))
            except ChunkError:
                raise
            except Exception as exc:  # coffea wraps errors; give one line naming the file
                for e in _chain(exc):
                    if isinstance(e, ChunkError):
                        raise e from None
                raise NA64Error(f"run failed: {_root_message(exc)}") from exc
    out = dict(wrapped.get("out") or {})
    _account(out, fileset, check, wrapped.get("na64_skipped", {}), proc)
    out = {ds: out[ds] for ds in fileset}  # (the executors merge the chunks' outputs in the order they finish)
    _require_some_input(out)
    for ds in out.values():
        ds["provenance"].wall_time = time.time() - t0
    return out


def _check_runs_known(check: FileCheck, proc) -> None:
    """The setup period and the conditions of every good file's run, loaded before any chunk: a
    run with neither (run 0, a run after the last period, a run the tag does not cover) stops the
    run now, naming its first file, instead of when a chunk of that file is reached (not a bad file:
    the files are whole, the calibration is missing)."""
    seen = set()
    for path, rec in check.files.items():
        if rec["run"] in seen:
            continue
        seen.add(rec["run"])
        try:
            proc.conditions(int(rec["run"]))
        except (ConfigError, CalibrationMissing) as exc:
            raise type(exc)(f"{path}: {exc}") from None


def _check_cache(opts: RunOptions, stack: ExitStack):
    """The file check cache of the run (:mod:`na64reco.file_check_cache`), closed with ``stack``;
    None with ``check_cache=False``."""
    if not opts.check_cache:
        return None
    from na64reco.file_check_cache import CheckCache

    cache = CheckCache()
    stack.callback(cache.close)
    return cache


def _quiet_coffea_bars(stack: ExitStack, *, quiet: bool) -> None:
    """Silence coffea's rich progress bars when asked (its ``status=False`` does not hide
    the bar: coffea 2026.9 passes ``disable`` as a task field, which rich ignores)."""
    from coffea.util import coffea_console

    before = coffea_console.quiet
    coffea_console.quiet = quiet or before
    stack.callback(setattr, coffea_console, "quiet", before)


def _require_some_input(out: dict) -> None:
    """A run whose every file was skipped has no result: fail instead of writing empty outputs."""
    provs = [ds["provenance"] for ds in out.values()]
    if provs and all(p.events_processed == 0 and p.skipped for p in provs):
        skipped = {path: rec for p in provs for path, rec in p.skipped.items()}
        first, rec = next(iter(skipped.items()))
        raise NA64Error(f"no events processed: all {len(skipped)} input files were bad and skipped "
                        f"(first: {first}: {rec['reason']})")


def _in_entry_order(reasons: list[str]) -> list[str]:
    """A file's skipped chunks ("entries A-B: why") in entry order: the executors finish (and so
    accumulate) them in any order, and the provenance of one run must not depend on it."""
    def start(reason: str) -> int:
        head = reason.split(":", 1)[0].removeprefix("entries ")
        return int(head.split("-")[0]) if head.split("-")[0].isdigit() else -1

    return sorted(reasons, key=start)


def _in_fileset_order(prov, files: list[str]) -> None:
    """The files of ``prov`` and its excluded and partial spills in the order of ``files`` (then by
    spill): the executors merge the chunks' provenance in the order they finish, and dask listed two
    files the other way round from the iterative executor (executors review, stop 48)."""
    rank = {path: i for i, path in enumerate(files)}

    def key(path):
        return rank.get(path, len(rank)), path

    prov.files = {path: prov.files[path] for path in sorted(prov.files, key=key)}
    for name in ("excluded_spills", "partial_spills"):
        setattr(prov, name, sorted(getattr(prov, name), key=lambda e: (*key(e["file"]), e["spill"])))


def _account(out: dict, fileset, check: FileCheck, chunk_skips: dict, proc) -> None:
    """Attach skipped files and the event totals to each dataset's provenance."""
    from processors.base import Provenance

    for dataset, files in fileset.items():
        if dataset not in out:  # every file of the dataset was bad
            out[dataset] = {"provenance": Provenance(
                proc.NAME, proc.selection.name, proc.selection.sha256, proc.selection.source,
                proc.calib_tag, __import__("na64reco").__version__)}
        prov = out[dataset]["provenance"]
        _in_fileset_order(prov, [str(p) for p in files])
        for path in files:
            path = str(path)
            for source in (check.skipped, chunk_skips):
                if path in source:
                    reason = source[path]["reason"]
                    reason = "; ".join(_in_entry_order(reason)) if isinstance(reason, list) else reason
                    rec = prov.skipped.setdefault(path, {"reason": reason, "events": 0})
                    if source is chunk_skips and rec["reason"] != reason:
                        rec["reason"] += "; " + reason
                    rec["events"] += source[path]["events"]
        prov.events_total = sum(check.entries.get(str(p), prov.skipped.get(str(p), {}).get("events", 0))
                                for p in files)
        if prov.events_processed + prov.events_skipped != prov.events_total:
            raise NA64Error(f"dataset {dataset}: accounting does not close: processed "
                            f"{prov.events_processed} + skipped {prov.events_skipped} != total "
                            f"{prov.events_total}")


# ----------------------------------------------------------------------------------------
def save_outputs(out: dict, outdir: str | Path, *, plots: bool = True, overwrite: bool = False,
                 inputs=()) -> Path:
    """Write ``output.coffea``, ``hists.root``, ``cutflow.txt``/``.json``, ``provenance.json``
    and (``plots``) PNG control plots into ``outdir``, all at once.

    The files are written into a temporary sibling directory that is renamed to ``outdir``
    at the end (:func:`na64reco.atomic.output_dir`): a run that fails or is interrupted
    leaves no ``outdir``.  An existing ``outdir`` is refused
    (:class:`~na64reco.atomic.OutputExists`) unless ``overwrite``, which replaces it whole
    (but never when it holds one of ``inputs`` or the current directory).
    """
    from na64reco.atomic import output_dir

    with output_dir(outdir, overwrite=overwrite, inputs=inputs) as staged:
        write_outputs(out, staged, plots=plots)
    return Path(outdir)


def write_outputs(out: dict, directory: str | Path, *, plots: bool = True) -> None:
    """The files of :func:`save_outputs`, written into the existing ``directory``."""
    import uproot
    from coffea.util import save

    directory = Path(directory)

    save(out, directory / "output.coffea")
    with uproot.recreate(directory / "hists.root") as f:
        for dataset, acc in out.items():
            for name, h in acc.get("hists", {}).items():
                for stage in h.axes["stage"]:
                    f[f"{dataset}/{name}_{stage}"] = h[{"stage": stage}]
            for name, h in acc.get("nminus1", {}).items():
                f[f"{dataset}/nminus1_{name}"] = h
    summary = cutflow_summary(out)
    (directory / "cutflow.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    (directory / "cutflow.txt").write_text(format_summary(summary))
    (directory / "provenance.json").write_text(json.dumps(
        {ds: acc["provenance"].to_dict() for ds, acc in out.items()}, indent=1, default=_json_default))
    if plots:
        from na64reco.plotting import control_plots

        control_plots(out, directory / "plots")


def _json_default(obj):
    if isinstance(obj, set):
        return sorted(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
