"""Shared glue of the invisible-mode processors (NA64mu and NA64e).

A processor reads one chunk of the raw ``events`` tree (coffea ``BaseSchema``),
rebuilds the nested digits, reconstructs them with the library's stage function,
evaluates the selection, applies blinding and fills the outputs.  The physics lives in
the library; this module only calls it in order.  The reco records carry the muons as
vector records too (``reco.mu_in``, ``reco.mu_out``, :mod:`na64reco.reco.kinematics`): a
processor needing an angle writes ``reco.mu_in.deltaangle(reco.mu_out)``, not trigonometry.

Outputs (per dataset): ``hists`` (``hist.Hist``, weighted with the truth weight for
simulation), ``nminus1`` (N-1 histogram of each cut's variable, and of the signal box
variable), ``cutflow`` (:class:`~na64reco.selection.cuts.CutflowTable`), ``regions``
(signal box and sidebands, :class:`RegionCounts`), ``provenance``
(:class:`Provenance`: selection hash, calibration tag, code version, files, events,
MOT/EOT).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import awkward as ak
import hist
import numpy as np
from coffea import processor

from na64reco import __version__
from na64reco.conditions import default_tag, load_conditions
from na64reco.errors import BlindingError, ConfigError, NA64Error, RawFormatError, SetupMismatch
from na64reco.exposure import count_spills, merge_spill_counts, spill_exposure
from na64reco.geometry import load_setup
from na64reco.hists import HistGroup, HistSums, HistTemplate, to_hists
from na64reco.io.checksum import verify_chunk
from na64reco.io.location import file_version, is_url
from na64reco.io.raw import (
    ValueRanges,
    assemble_events,
    check_content,
    check_event_order,
    event_branches,
    open_raw,
)
from na64reco.reco.calo import module_widths
from na64reco.resources import calib_dir
from na64reco.selection import (
    BOX,
    CutflowTable,
    apply_blinding,
    build_selection,
    check_unblind_argument,
    cut_masks,
    load_selection,
    region_mask,
)
from na64reco.selection.blinding import check_sidebands, load_protection, uses_reference_inputs
from na64reco.selection.cuts import BLINDED, Columns, failed_mask
from na64reco.selection.schema import VARIABLES, Selection, check_modules, variable_info
from na64reco.selection.token import UnblindingToken


def _setup(name: str, run: int | None = None):
    """The setup of ``run``'s period (the base description without a run), from the calibration
    directory in force now (``NA64RECO_CALIB`` may change in a notebook's process)."""
    return _setup_in(name, run, str(calib_dir()))


@functools.lru_cache(maxsize=8)
def _setup_in(name: str, run: int | None, root: str):
    return load_setup(name, run=run)


def _conditions(setup_name: str, run: int, tag: str):
    """Per-process cache (processors are unpickled afresh for every chunk), by the calibration
    directory too: the same tag name under another ``NA64RECO_CALIB`` is other conditions."""
    return _conditions_in(setup_name, run, tag, str(calib_dir()))


@functools.lru_cache(maxsize=64)
def _conditions_in(setup_name: str, run: int, tag: str, root: str):
    return load_conditions(_setup(setup_name, run), run, tag)


@functools.lru_cache(maxsize=256)
def _file_info(path: str, version: str, checked: bool = False) -> FileInfo:
    rec = _checked(path, version)
    if rec is not None and not rec["has_truth"]:  # data, as the runner's check found: not opened for it
        return FileInfo(path, rec["setup"], int(rec["run"]), True)
    # simulation is taken from the file itself (opened for its truth anyway), never from a record
    # (:func:`note_checked_files` is callable by anyone: a record cannot relabel data as simulation)
    raw = _open_raw_cached(path, version, checked)
    return FileInfo(path, raw.setup, raw.run, not raw.has_truth)


_LOCAL = threading.local()  # per thread: {(path, version): RawFile}, most recently used last
_MAX_OPEN = 4


def _open_raw_cached(path: str, version: str, checked: bool = False):
    """An open :class:`~na64reco.io.raw.RawFile` kept for the chunks that follow (file info,
    truth rows, spills): a file is opened once per worker process, not three times per
    chunk.  At most ``_MAX_OPEN`` stay open; the least recently used is closed.  ``checked``:
    the runner checked this file (at this ``version``) in this process, so the trees it
    did not check (truth) are checked when first read (:func:`~na64reco.io.raw.open_raw`
    ``structure=False``)."""
    cache = _LOCAL.__dict__.setdefault("files", {})
    key = (path, version)  # version: mtime, ctime, inode, size (local), ETag or Last-Modified (remote)
    raw = cache.pop(key, None)
    if raw is None:
        raw = open_raw(path, structure=not checked)
        while len(cache) >= _MAX_OPEN:
            cache.pop(next(iter(cache))).close()
    cache[key] = raw
    return raw


def _raw(path: str):
    version = file_version(path)
    return _open_raw_cached(path, version, _checked(path, version) is not None)


#: path -> what the runner's check (:func:`~na64reco.io.raw.open_raw`) found in the file in
#: this process for the current run: ``version`` (:func:`na64reco.io.location.file_version`:
#: mtime, ctime, inode and size of a local file), ``setup``, ``run``, ``has_truth``, ``blocks`` (the
#: checksum blocks of ``events``, a :class:`~na64reco.io.checksum.Blocks`, None for a
#: version-2 file) and ``baskets`` (where the baskets of ``events`` are, a
#: :class:`~na64reco.io.baskets.TreeBaskets`, or None: :meth:`InvisibleProcessor.known_baskets`).
#: A data file is then not opened by the processor at all, a simulated one for its truth only.
#: Per process, not on the processor: processors are pickled to every chunk, and the worker
#: processes of futures/dask, which have not checked the files, check them.
_CHECKED: dict[str, dict] = {}


def _checked(path: str, version: str) -> dict | None:
    """The check's record of ``path`` if the file is still at that ``version``."""
    rec = _CHECKED.get(path)
    return rec if rec is not None and rec["version"] == version else None


def note_checked_files(records: dict[str, dict]) -> None:
    """Record what the runner's check found in each file (``{path: record}``, see
    :data:`_CHECKED`) in this process.  A record without checksum blocks keeps those noted
    before for the same file version (a dask worker that checked the file itself)."""
    for path, rec in records.items():
        old = _CHECKED.get(path)
        if rec.get("blocks") is None and old is not None and old["version"] == rec["version"]:
            rec = {**rec, "blocks": old["blocks"], "baskets": old.get("baskets")}
        _CHECKED[path] = rec


def checked_note(info: dict, *, blocks: bool = True) -> dict:
    """What a processor is told of a checked file (:func:`note_checked_files`), from its record
    (:attr:`na64reco.file_check.FileCheck.files`); ``blocks=False``: without the checksum blocks
    and the basket map."""
    return {**{k: info[k] for k in ("version", "setup", "run", "has_truth")},
            "blocks": info["blocks"] if blocks else None, "baskets": info.get("baskets") if blocks else None}


#: per process: the file check caches opened (:func:`_take_from_cache`), and the spills of the
#: records taken from them ((path, version) -> spills)
_CACHES: dict = {}
_CACHED_SPILLS: dict = {}


def _take_from_cache(directory: str, path: str, setup: str) -> None:
    """Note the record of ``path`` in the run's file check cache (``directory``), if it holds one
    for the file as it is now (:class:`na64reco.file_check_cache.CheckCache`): a process of the
    futures pool, which cannot be told what the run's check found, then does not check the file
    again.  The record routes a file towards data only, as any note (:func:`_file_info`)."""
    from na64reco.file_check_cache import CheckCache

    cache = _CACHES.get(directory)
    if cache is None:
        cache = _CACHES[directory] = CheckCache(directory)
    rec = cache.lookup([path], setup).get(path)
    if rec is not None:  # (a local file's: the cache keeps no URL)
        note_checked_files({path: checked_note(rec.info)})
        _CACHED_SPILLS[(path, rec.info["version"])] = rec.spills


def forget_checked_files(paths) -> None:
    """Forget what the runner's check found in ``paths`` (the end of a dask run)."""
    for path in paths:
        _CHECKED.pop(path, None)


def close_raw_files() -> None:
    """Close the raw files this thread keeps open and forget the checked files (the runner
    calls it after a run)."""
    cache = _LOCAL.__dict__.get("files", {})
    while cache:
        cache.pop(next(iter(cache))).close()
    _CHECKED.clear()
    _CACHED_SPILLS.clear()
    _file_info.cache_clear()


def reconstruct_stage(events, setup, conditions, source="", stages=None, leave_out=()):
    """The library's event reconstruction (``na64reco.reco.event.reconstruct``)."""
    from na64reco.reco.event import reconstruct

    return reconstruct(events, setup, conditions, source=source, stages=stages, leave_out=leave_out)


def concatenate_records(records):
    """The reco records of a chunk's slices as one (``na64reco.reco.event.concatenate``)."""
    from na64reco.reco.event import concatenate

    return concatenate(records)


def attach_truth_stage(reco, truth, source="<events>", start=0):
    """The library's truth matching (``na64reco.reco.event.attach_truth``)."""
    from na64reco.reco.event import attach_truth

    return attach_truth(reco, truth, source, start)


def settle_exposure(prov: Provenance, read_spills, bad_spills=None) -> None:
    """Set the MOT/EOT, spills and triggered counts of ``prov`` from the events processed
    per spill of each file (``read_spills(path)`` gives a file's ``spills`` tree); the spills
    of ``bad_spills`` (``{(run, spill): reasons}``) are not counted but listed."""
    prov.n_beam = prov.n_spills = prov.n_triggered = 0
    prov.partial_spills, prov.excluded_spills = [], []
    by_run: dict = {}  # run -> {spill: reasons}: grouped once, not filtered again for every file
    for (r, s), why in (bad_spills or {}).items():
        by_run.setdefault(r, {})[s] = why
    for path, rec in prov.files.items():
        mine = dict(by_run.get(rec.get("run"), {}))
        exp = spill_exposure(read_spills(path), rec.get("spill_events", {}), path, excluded=mine)
        prov.excluded_spills += exp.excluded
        rec["n_beam"], rec["n_spills"] = exp.n_beam, exp.n_spills
        prov.n_beam += exp.n_beam
        prov.n_spills += exp.n_spills
        prov.n_triggered += exp.n_triggered
        prov.partial_spills += exp.partial


def _merge_event_spans(mine: dict, rec: dict) -> None:
    """Add ``rec``'s chunk spans (``event_spans``: ``(entry start, first event, last event)``
    of each chunk, :meth:`Processor.provenance`) to ``mine``'s (chunks of one file), and OR their
    ``reference_withheld`` flags."""
    if "event_spans" in mine or "event_spans" in rec:
        mine["event_spans"] = [*mine.get("event_spans", ()), *rec.get("event_spans", ())]
    if "reference_withheld" in mine or "reference_withheld" in rec:  # any chunk's (the inputs can change mid-run)
        mine["reference_withheld"] = bool(mine.get("reference_withheld")) or bool(rec.get("reference_withheld"))


def check_event_spans(prov: Provenance) -> None:
    """Event numbers strictly increasing across the chunks of each file (within a chunk,
    :func:`~na64reco.io.raw.check_content` checks them): a :class:`RawFormatError` naming the
    file and the entry otherwise.  Removes the spans from the file records."""
    for path, rec in prov.files.items():
        spans = sorted(rec.pop("event_spans", ()))
        for (_, _, last), (start, first, _) in zip(spans[:-1], spans[1:], strict=True):
            check_event_order([first], path, start, previous=last)  # (a file's chunks are contiguous)


def bad_spill_mask(events, bad_spills) -> np.ndarray | None:
    """The events of ``events`` not in a spill of ``bad_spills`` ((run, spill) pairs): a boolean mask,
    or None when none is dropped."""
    if not bad_spills:
        return None
    key = np.asarray(events["run"]).astype(np.int64) * 2**32 + np.asarray(events["spill"]).astype(np.int64)
    bad = np.array([r * 2**32 + s for r, s in bad_spills], np.int64)
    keep = ~np.isin(key, bad)
    return None if keep.all() else keep


def _branches(events, names) -> dict:
    """``{name: events[name]}``; from a plain record array (the runner's chunk read) the
    fields' own buffers (numpy) and layouts, without awkward's high-level field access
    (~30 us a field, 20 per chunk): the same content for the checksums."""
    layout = getattr(events, "layout", None)
    if not isinstance(layout, ak.contents.RecordArray):
        return {b: events[b] for b in names}
    out = {}
    for b in names:
        c = layout.content(b)
        if c.length == layout.length and isinstance(c, ak.contents.NumpyArray) and isinstance(c.data, np.ndarray):
            out[b] = c.data
        elif (c.length == layout.length and isinstance(c, ak.contents.ListOffsetArray)
              and isinstance(c.content, ak.contents.NumpyArray) and isinstance(c.content.data, np.ndarray)):
            out[b] = c
        else:
            out[b] = events[b]
    return out


# ----------------------------------------------------------------------------------------
@dataclass
class RegionCounts:
    """Events and weighted sums in one region; ``blinded`` hides the numbers."""

    n: int = 0
    sumw: float = 0.0
    sumw2: float = 0.0
    blinded: bool = False

    def __add__(self, other: RegionCounts) -> RegionCounts:
        return RegionCounts(self.n + other.n, self.sumw + other.sumw, self.sumw2 + other.sumw2,
                            self.blinded or other.blinded)

    def to_dict(self) -> dict:
        if self.blinded:
            return {"events": BLINDED, "sumw": BLINDED, "sumw_err": BLINDED}
        return {"events": int(self.n), "sumw": float(self.sumw), "sumw_err": float(np.sqrt(self.sumw2))}


@dataclass
class Provenance:
    """What produced an output; merges across chunks (constants must agree)."""

    processor: str
    selection: str
    selection_sha256: str
    selection_file: str
    calib_tag: str
    code_version: str
    unblinded_by: str | None = None
    events_processed: int = 0
    chunks: int = 0
    n_beam: int = 0           # MOT (na64mu) or EOT (na64e) of the processed spills (na64reco.exposure)
    n_spills: int = 0
    n_triggered: int = 0
    files: dict = field(default_factory=dict)       # path -> {events, chunks, data, run, n_beam, spill_events}
    skipped: dict = field(default_factory=dict)     # path -> {reason, events}
    conditions: set = field(default_factory=set)    # conditions files used
    events_total: int | None = None  # set by the runner: events in every input file
    wall_time: float | None = None   # set by the runner (s)
    partial_spills: list = field(default_factory=list)  # spills not counted in n_beam (events skipped)
    bad_spills: str | None = None  # the bad-spill list applied (na64reco dqm), if any
    bad_spills_sha256: str | None = None  # the SHA-256 of the list's bytes as the run read them
    events_excluded: int = 0  # of events_processed: dropped as events of a listed bad spill
    excluded_spills: list = field(default_factory=list)  # bad spills not counted in n_beam

    _CONSTANTS = ("processor", "selection", "selection_sha256", "calib_tag", "code_version",
                  "unblinded_by", "bad_spills", "bad_spills_sha256")

    def __add__(self, other: Provenance) -> Provenance:
        for k in self._CONSTANTS:
            if getattr(self, k) != getattr(other, k):
                raise NA64Error(f"cannot merge outputs with different {k}: "
                                f"{getattr(self, k)!r} vs {getattr(other, k)!r}")
        files = {k: dict(v) for k, v in self.files.items()}
        for path, rec in other.files.items():
            if path in files:
                mine = files[path]
                for key in ("events", "chunks"):
                    mine[key] = mine.get(key, 0) + rec.get(key, 0)
                mine["spill_events"] = merge_spill_counts(mine.get("spill_events", {}), rec.get("spill_events", {}))
                _merge_event_spans(mine, rec)
            else:
                files[path] = dict(rec)
        skipped = {k: dict(v) for k, v in self.skipped.items()}
        for path, rec in other.skipped.items():
            if path in skipped:
                skipped[path]["events"] += rec["events"]
            else:
                skipped[path] = dict(rec)
        return Provenance(
            self.processor, self.selection, self.selection_sha256, self.selection_file,
            self.calib_tag, self.code_version, self.unblinded_by,
            self.events_processed + other.events_processed, self.chunks + other.chunks,
            self.n_beam + other.n_beam, self.n_spills + other.n_spills,
            self.n_triggered + other.n_triggered, files, skipped, self.conditions | other.conditions,
            partial_spills=self.partial_spills + other.partial_spills, bad_spills=self.bad_spills,
            bad_spills_sha256=self.bad_spills_sha256,
            events_excluded=self.events_excluded + other.events_excluded,
            excluded_spills=self.excluded_spills + other.excluded_spills,
        )

    def __iadd__(self, other: Provenance) -> Provenance:
        """``self + other`` in place: what coffea's accumulation calls for every chunk after
        the second.  ``+`` copies the per-file records of everything merged so far, so
        merging N one-chunk files that way is O(N^2) record copies (~1 ms per file at 1e4
        files, ~0.1 s at 1e5); this is O(what ``other`` holds)."""
        for k in self._CONSTANTS:
            if getattr(self, k) != getattr(other, k):
                raise NA64Error(f"cannot merge outputs with different {k}: "
                                f"{getattr(self, k)!r} vs {getattr(other, k)!r}")
        for path, rec in other.files.items():
            mine = self.files.get(path)
            if mine is None:
                self.files[path] = dict(rec)
                continue
            for key in ("events", "chunks"):
                mine[key] = mine.get(key, 0) + rec.get(key, 0)
            mine["spill_events"] = merge_spill_counts(mine.get("spill_events", {}), rec.get("spill_events", {}))
            _merge_event_spans(mine, rec)
        for path, rec in other.skipped.items():
            if path in self.skipped:
                self.skipped[path]["events"] += rec["events"]
            else:
                self.skipped[path] = dict(rec)
        self.events_processed += other.events_processed
        self.chunks += other.chunks
        self.n_beam += other.n_beam
        self.n_spills += other.n_spills
        self.n_triggered += other.n_triggered
        self.conditions = self.conditions | other.conditions
        self.partial_spills = self.partial_spills + other.partial_spills
        self.events_excluded += other.events_excluded
        self.excluded_spills = self.excluded_spills + other.excluded_spills
        return self

    @property
    def events_skipped(self) -> int:
        return sum(r["events"] for r in self.skipped.values())

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "processor", "selection", "selection_sha256", "selection_file", "calib_tag",
            "code_version", "unblinded_by", "events_processed", "chunks", "n_beam", "n_spills",
            "n_triggered", "files", "skipped", "events_total", "wall_time", "partial_spills", "bad_spills",
            "bad_spills_sha256", "events_excluded", "excluded_spills")} | {
            "events_skipped": self.events_skipped, "conditions": sorted(self.conditions)}


@dataclass(frozen=True)
class FileInfo:
    path: str
    setup: str
    run: int
    is_data: bool


#: (processor class, binning, variable names, stage axis) -> the empty booked histogram
#: (:class:`~na64reco.hists.HistTemplate`) its chunks fill: booked once per process.
_TEMPLATES: dict[tuple, HistTemplate] = {}


# ----------------------------------------------------------------------------------------
#: Default histogram binning, GeV for energies and momenta: name -> (bins, lo, hi, label).
BINNING = {
    "p_in": (120, 0.0, 240.0, r"$p_{in}$ [GeV]"),
    "p_out": (120, 0.0, 240.0, r"$p_{out}$ [GeV]"),
    "chi2_in": (100, 0.0, 100.0, r"$\chi^2_{in}$"),
    "chi2_out": (100, 0.0, 100.0, r"$\chi^2_{out}$"),
    "track_match_chi2": (100, 0.0, 100.0, r"track match $\chi^2$ (in vs out at the ECAL)"),
    "ecal_energy": (100, 0.0, 10.0, r"$E_{ECAL}$ [GeV]"),
    "ecal_preshower_energy": (100, 0.0, 5.0, r"$E_{PS}$ [GeV]"),
    "ecal_main_energy": (100, 0.0, 10.0, r"$E_{ECAL,main}$ [GeV]"),
    "ecal_shower_chi2": (100, 0.0, 50.0, r"ECAL shower $\chi^2$"),
    "hcal_energy": (100, 0.0, 30.0, r"$E_{HCAL}$ [GeV]"),
    "hcal_module_energy": (100, 0.0, 10.0, r"$E_{HCAL}$ per module [GeV]"),
    "vhcal_energy": (100, 0.0, 5.0, r"$E_{VHCAL}$ [GeV]"),
    "veto_energy": (100, 0.0, 0.1, r"$E_{VETO}$ [GeV]"),
    "veto_paddle_energy": (100, 0.0, 0.1, r"$E_{VETO}$ per paddle [GeV]"),
    "srd_module_energy": (100, 0.0, 0.2, r"$E_{SRD}$ per module [GeV]"),
    "counter": (100, 0.0, 0.05, "counter energy [GeV]"),
}
COUNT_BINS = {"n_tracks_in": 6, "n_tracks_out": 6, "n_extra_planes_out": 10, "n_views_out": 3, "trigger": 8,
              "ecal_max_cell_x": 6,
              "ecal_max_cell_y": 7}


def _axis(name: str, binning: dict) -> hist.axis.AxisProtocol:
    kind = VARIABLES.get(name, ("scalar", "energy"))[0]
    if kind in ("count", "bits"):
        return hist.axis.Integer(0, COUNT_BINS.get(name, 8), name=name, label=name)
    key = "counter" if name.startswith("counter_") else name
    n, lo, hi, label = binning[key]
    if key == "counter":
        label = f"{name} [GeV]"
    return hist.axis.Regular(n, lo, hi, name=name, label=label)


def _is_modules(name: str) -> bool:
    return VARIABLES.get(name, ("scalar",))[0] == "modules"


class InvisibleProcessor(processor.ProcessorABC):
    """Base of the blinded invisible-mode processors; subclasses set the class attributes.

    Parameters
    ----------
    selection : name or path of the selection YAML (default ``SELECTION``)
    calib_tag : calibration tag (default: the setup's tag in ``calib/default_tags.yaml``)
    unblind : ``None`` or an :class:`~na64reco.selection.blinding.UnblindingToken`;
        anything else raises :class:`~na64reco.errors.BlindingError`
    reco : reconstruction stage ``(events, setup, conditions, source) -> ak.Array``;
        default :func:`reconstruct_stage` (the library's).  For simulation only: a data
        chunk processed with it raises :class:`~na64reco.errors.BlindingError` (a
        substitute reconstruction could move data events out of the signal box)
    """

    NAME = ""
    SETUP = ""
    SELECTION = ""
    #: Physics variables histogrammed besides the cut variables.
    MAIN_VARIABLES: tuple[str, ...] = ()
    #: 2-D histograms (x, y).
    PAIRS: tuple[tuple[str, str], ...] = ()
    BINNING_OVERRIDES: dict = {}
    #: Events reconstructed at a time (the library's reconstruction): its temporaries are
    #: ~7 kB per event (143 MB for a 20k-event chunk, more than the chunk's data and the
    #: worker's imports together), so larger chunks are reconstructed in slices of this
    #: many events, which gives the same records (the reconstruction is event by event)
    #: at a bounded memory (docs/performance.md, "Worker memory").
    RECO_BATCH = 5000

    def __init__(self, selection: str | None = None, *, calib_tag: str | None = None,
                 unblind=None, reco=None):
        self.token = check_unblind_argument(unblind)
        self.selection: Selection = load_selection(selection or self.SELECTION)
        if self.selection.setup != self.SETUP:
            raise ConfigError(f"{self.selection.source}: key 'setup' is {self.selection.setup!r}; "
                              f"processor {self.NAME} needs a {self.SETUP!r} selection")
        check_modules(self.selection, module_widths(_setup(self.SETUP)))
        check_sidebands(self.selection)
        if self.token is not None:
            UnblindingToken.check(self.token, self.selection)
        self.calib_tag = calib_tag or default_tag(self.SETUP)
        self.reco = reco
        self.binning = {**BINNING, **self.BINNING_OVERRIDES}
        self._conditions = {}
        self._files = {}
        self.known_spills = {}  # path -> spills tree already read (by the runner's file check)
        self.bad_spills = {}  # (run, spill) -> reasons: spills dropped (runner --bad-spills)
        self.bad_spills_source = None
        self.bad_spills_sha256 = None
        #: the directory of the run's file check cache (futures executor): a pool process looks
        #: up there the files it was not told of (:func:`_take_from_cache`)
        self.check_cache = None

    def __getstate__(self):  # caches stay behind when shipped to workers
        return {**self.__dict__, "_conditions": {}, "_files": {}, "known_spills": {}}

    @property
    def setup(self):
        """The base description of the setup (a chunk is reconstructed with its run's period)."""
        return _setup(self.SETUP)

    # -- the analysis ---------------------------------------------------------------------
    def process(self, events):
        out = self.process_chunk(events, dict(getattr(events, "metadata", None) or {}))
        return self._with_hists(out)

    def process_chunk(self, events, meta: dict):
        """:meth:`process` of ``events`` (the flat ``events`` branches: coffea's NanoEvents or
        the runner's plain awkward records, :func:`na64reco.runner.read_chunk`) with coffea's
        chunk ``meta`` (dataset, filename, entrystart, entrystop).  Its histograms are
        :class:`~na64reco.hists.HistSums` (merged as numpy sums; :meth:`postprocess` makes
        them ``hist.Hist``), one :class:`~na64reco.hists.HistGroup` per group."""
        info = self.file_info(meta, events)
        if self.selection.setup != self.SETUP:  # (checked when made; a selection set afterwards could move the
            # protected region to the other setup's, whose visible controls a muon's deposits pass)
            raise BlindingError(f"processor {self.NAME} is for setup {self.SETUP!r}, its selection "
                                f"{self.selection.source} for {self.selection.setup!r}")
        self.verify(events, meta, info)
        read = events
        # listed bad spills: gone before anything is filled.  A function of the events as read, not a
        # method a subclass could override to hand the reconstruction and the blinding's reference
        # altered digits (a VETO scaled into the visible control region showed the box's events)
        keep = bad_spill_mask(read, self.bad_spills)
        events = read if keep is None else read[keep]
        conditions = self.conditions(info.run)
        reco = self.reconstruct(events, conditions, info)
        if not info.is_data:
            reco = self.attach_truth(reco, info, meta, keep)

        cols = Columns(reco)  # numpy columns, each converted from awkward once per chunk
        masks = cut_masks(cols, self.selection)
        reference = self.reference_protected(events, conditions, info, reco) if info.is_data and self.token is None \
            else None
        decision = apply_blinding(cols, masks, self.selection, is_data=info.is_data, token=self.token,
                                  reference=reference)
        cols = cols.take(decision.keep)                              # data: box events gone
        masks = {name: m[decision.keep] for name, m in masks.items()}
        # ---- from here on only blinded events exist ----

        weights = None if info.is_data else np.asarray(cols["truth_weight"], dtype=float)
        box = region_mask(cols, self.selection.signal_box)
        selection = build_selection(masks, box)
        passed_all = selection.all(*masks)

        out = {
            "cutflow": CutflowTable.from_selection(selection, list(masks), weights,
                                                   blinded=decision.blinded),
            "hists": self.fill_histograms(cols, passed_all, weights),
            "nminus1": self.fill_nminusone(cols, selection, weights),
            "regions": self.count_regions(cols, selection, masks, box, weights, decision.blinded),
            "provenance": self.provenance(read, meta, info, conditions, excluded=len(read) - len(events)),
        }
        return {meta.get("dataset", "default"): out}

    def postprocess(self, accumulator):
        """Exposure (MOT/EOT) of what was processed, spill by spill (:mod:`na64reco.exposure`);
        the merged histogram sums as ``hist.Hist``."""
        for out in accumulator.values():
            check_event_spans(out["provenance"])
            settle_exposure(out["provenance"], self._spills, self.bad_spills)
        return self._with_hists(accumulator)

    @staticmethod
    def _with_hists(accumulator: dict) -> dict:
        """``accumulator`` ({dataset: outputs}) with its histogram groups as ``hist.Hist``."""
        for out in accumulator.values():
            for group in ("hists", "nminus1"):
                if group in out:
                    out[group] = to_hists(out[group])
        return accumulator

    def _spills(self, path: str) -> dict:
        spills = self.known_spills.get(path)
        if spills is None:
            spills = _CACHED_SPILLS.get((path, file_version(path)))
        return spills if spills is not None else _raw(path).spills()

    # -- steps ----------------------------------------------------------------------------
    def file_info(self, meta: dict, events) -> FileInfo:
        """Setup, run and data/simulation of the chunk's file (data unless truth exists)."""
        path = meta.get("filename")
        if not path:  # no file to ask: treat as data (blinded), run from the events
            runs = np.unique(np.asarray(events["run"]))
            if len(runs) != 1:
                raise NA64Error(f"a chunk without file metadata must hold one run, found {runs}")
            return FileInfo("", self.SETUP, int(runs[0]), True)
        # by a local file's version too (one stat): a file replaced at the same path (a data file copied
        # over a simulated one while a notebook keeps the processor) is asked again, not taken for the
        # file it replaced.  A URL's version would cost a request per chunk: by its path
        key = (path, None if is_url(path) else file_version(path))
        if key not in self._files:
            version = key[1] or file_version(path)
            info = _file_info(path, version, self._checked(path, version) is not None)
            if info.setup != self.SETUP:
                raise SetupMismatch(f"{path}: was written for setup {info.setup!r}, but processor "
                                    f"{self.NAME} analyses {self.SETUP!r}")
            self._files[key] = info
        return self._files[key]

    def known_baskets(self, path: str):
        """Where the baskets of the ``events`` of ``path`` are (:class:`~na64reco.io.baskets.TreeBaskets`:
        the runner reads a chunk by it, without uproot's header of the tree): from what the run's
        check found in the file as it is now, else from the file (opened once per thread, as the
        processor opens it for its checksum blocks: a dask worker is told of the check without the
        maps); None for a URL (read by uproot).  A process of the futures pool looks the file up
        in the run's check cache first, as :meth:`file_info`."""
        if not path or is_url(path):
            return None
        rec = self._checked(path, file_version(path))
        baskets = rec.get("baskets") if rec is not None else None
        return baskets if baskets is not None else _raw(path).baskets("events")

    def _checked(self, path: str, version: str) -> dict | None:
        """The run's check of ``path`` at ``version`` (:func:`_checked`); a process of the futures
        pool, which cannot be told of it, looks it up in the run's check cache first."""
        if self.check_cache is not None and _checked(path, version) is None:
            _take_from_cache(self.check_cache, path, self.SETUP)
        return _checked(path, version)

    def verify(self, events, meta: dict, info: FileInfo) -> None:
        """Check the chunk against its file's content checksums (:mod:`na64reco.io.checksum`)
        and its values (:func:`~na64reco.io.raw.check_content`: the file's run, event numbers
        increasing, and the ranges of the setup's :class:`~na64reco.io.raw.ValueRanges`).  Any
        failure to read, decompress or verify is a bad-file error naming the entries."""
        if not info.path:
            return
        start = int(meta.get("entrystart") or 0)
        stop = int(meta.get("entrystop") or start + len(events))
        rec = _checked(info.path, file_version(info.path))
        ranges = ValueRanges.of(_setup(self.SETUP, info.run))  # (outside the try: a setup's error is no bad file)
        try:
            # a record's blocks for data only: a simulated file's own (it is open) check its chunks
            known = rec["blocks"] if rec is not None and info.is_data else None  # (None for version 2 too)
            blocks = known if known is not None else _raw(info.path).blocks("events")
            arrays = _branches(events, event_branches())
            verify_chunk(blocks, arrays, start, stop, info.path,
                         read=lambda a, b: _raw(info.path).arrays("events", a, b))
            check_content("events", arrays, info.run, info.path, start, ranges)
        except RawFormatError:
            raise
        except Exception as exc:  # whatever uproot/awkward raise on damaged content
            raise RawFormatError(f"{info.path}: entries {start}-{stop}: cannot read or decode: "
                                 f"{type(exc).__name__}: {exc}") from None

    def use_bad_spills(self, path) -> str:
        """Drop the spills of the bad-spill list ``path`` (``na64reco dqm``); returns the SHA-256 of
        the bytes read, which the provenance records (``bad_spills_sha256``)."""
        from na64reco.bad_spills import load_bad_spills_hashed

        self.bad_spills, self.bad_spills_sha256 = load_bad_spills_hashed(path)
        self.bad_spills_source = str(path)
        return self.bad_spills_sha256

    def conditions(self, run: int):
        if run not in self._conditions:
            self._conditions[run] = _conditions(self.SETUP, run, self.calib_tag)
        return self._conditions[run]

    def reconstruct(self, events, conditions, info: FileInfo) -> ak.Array:
        if self.reco is not None and info.is_data:
            raise BlindingError(f"{info.path or 'a chunk without file metadata'} is data: the processor's reco= "
                                "hook is refused for data (it could move events out of the signal box); "
                                "it is for simulation only")
        nested = assemble_events(events, info.path or "<events>")
        setup = _setup(self.SETUP, info.run)
        if self.reco is not None:
            reco = self.reco(nested, setup, conditions, info.path)
        else:
            reco = self._reconstruct_batched(nested, setup, conditions, info.path)
        if len(reco) != len(events):
            raise NA64Error(f"{info.path}: reconstruction returned {len(reco)} records for "
                            f"{len(events)} events")
        return reco

    def reference_protected(self, events, conditions, info: FileInfo, reco=None):
        """Data events protected when reconstructed with the installed package's setup and
        default tag (:func:`~na64reco.selection.blinding.reference_protected`): a calibration
        tag or ``NA64RECO_CALIB`` that moves the protected variable opens nothing.  None (no
        second reconstruction) when this chunk's inputs are the reference ones; ``reco`` (this
        chunk's reconstruction) lets it run again only the stages whose inputs differ."""
        from na64reco.selection.blinding import reference_protected

        def stage(nested, setup, cond, stages=None):
            return self._reconstruct_batched(nested, setup, cond, info.path, stages)

        setup = _setup(self.SETUP, info.run)
        if uses_reference_inputs(setup, conditions):  # None, without assembling the chunk again (~0.7 ms a small chunk)
            return None
        return reference_protected(assemble_events(events, info.path or "<events>"), setup, conditions, stage,
                                   reco=reco)

    def _reconstruct_batched(self, nested, setup, conditions, path, stages=None) -> ak.Array:
        """The reconstruction stage in slices of at most ``RECO_BATCH`` events (bounded memory);
        ``stages``: see :func:`na64reco.reco.event.reconstruct`."""
        kw = {"leave_out": self.fields_left_out()}
        if stages is not None:
            kw["stages"] = stages
        if len(nested) <= self.RECO_BATCH:
            return reconstruct_stage(nested, setup, conditions, path, **kw)
        return concatenate_records([reconstruct_stage(nested[a:a + self.RECO_BATCH], setup, conditions, path, **kw)
                                    for a in range(0, len(nested), self.RECO_BATCH)])

    def attach_truth(self, reco: ak.Array, info: FileInfo, meta: dict, keep=None) -> ak.Array:
        """Truth weight/process of simulated events, from the ``truth`` tree if reco lacks them
        (``keep``: the chunk's events kept, :func:`bad_spill_mask`)."""
        if "truth_weight" in reco.fields:
            return reco
        start, stop = meta.get("entrystart"), meta.get("entrystop")
        truth = _raw(info.path).truth(start, stop)
        if keep is None:  # (a RawFormatError naming the file and the entry if the rows are not the events')
            return attach_truth_stage(reco, truth, info.path, start)
        truth = {k: v[keep] for k, v in truth.items()}
        return attach_truth_stage(reco, truth, f"{info.path} entries {start}-{stop} (bad spills' events dropped)")

    def variables(self) -> list[str]:
        names = [*self.selection.variables, *self.MAIN_VARIABLES]
        return [v for v in dict.fromkeys(names) if variable_info(v, self.SETUP)]

    def fields_left_out(self) -> tuple[str, ...]:
        """The optional reco fields (:data:`na64reco.reco.event.OPTIONAL_FIELDS`) that nothing of this
        processor reads (its cuts, box and sidebands, histograms and pairs, the blinding's regions):
        the reconstruction does not compute them (e.g. the ECAL shower chi2 for NA64mu)."""
        from na64reco.reco.event import OPTIONAL_FIELDS

        protection = load_protection(self.SETUP)
        read = {*self.selection.variables, *self.variables(), *(v for pair in self.PAIRS for v in pair),
                protection.protected.variable, *(r.variable for r in protection.visible_controls)}
        return tuple(name for name in OPTIONAL_FIELDS if name not in read)

    def _fill(self, h: HistSums, cols, mask, weights, names, stage: str | None = None):
        """Fill ``h`` (axes ``[stage,] [module,] *names``, :meth:`_sums`) with the events of
        ``mask``: the values in axis order, as ``hist.Hist.fill`` by axis name would."""
        all_events = mask is None
        w = (np.ones(len(cols)) if all_events else np.ones(np.count_nonzero(mask))) if weights is None \
            else (weights if all_events else weights[mask])
        values = [cols[n] if all_events else cols[n][mask] for n in names]
        lead = () if stage is None else (stage,)
        if len(names) == 1 and values[0].ndim == 2:  # per-module variable: one entry per module
            x = values[0]
            module = np.broadcast_to(np.arange(x.shape[1]), x.shape)
            h.fill(*lead, module.ravel(), x.ravel(), weight=np.repeat(w, x.shape[1]))
            return
        h.fill(*lead, *values, weight=w)

    def _book(self, names: tuple[str, ...], stage: bool) -> hist.Hist:
        axes = [hist.axis.StrCategory(["all", "selected"], name="stage")] if stage else []
        if len(names) == 1 and _is_modules(names[0]):
            axes.append(hist.axis.Integer(0, 4, name="module", label="module"))
        axes += [_axis(n, self.binning) for n in names]
        return hist.Hist(*axes, storage=hist.storage.Weight())

    def _sums(self, names: tuple[str, ...], stage: bool) -> HistSums:
        """Empty sums of the histogram :meth:`_book` books, its template booked once per
        process (the processor is unpickled afresh for every chunk; docs/performance.md,
        "Per-file overhead", third pass)."""
        binning = self.__dict__.get("_binning_key")
        if binning is None:
            binning = self._binning_key = tuple(sorted(self.binning.items()))
        key = (type(self).__qualname__, binning, names, stage)
        template = _TEMPLATES.get(key)
        if template is None:
            template = _TEMPLATES[key] = HistTemplate(self._book(names, stage))
        return HistSums(template)

    def fill_histograms(self, reco, passed_all, weights) -> dict:
        """Every cut and main variable (and the 2-D pairs), before cuts and after all cuts."""
        cols = Columns.of(reco)
        out = {}
        for names in [(v,) for v in self.variables()] + list(self.PAIRS):
            h = self._sums(names, stage=True)
            self._fill(h, cols, None, weights, names, stage="all")
            self._fill(h, cols, passed_all, weights, names, stage="selected")
            out["_vs_".join(names)] = h
        return HistGroup(out)

    def fill_nminusone(self, reco, selection, weights) -> dict:
        """For each cut (and the box): its variable for events passing all the others."""
        names = [*self.selection.cut_names, BOX]
        cols = Columns.of(reco)
        out = {}
        for name in names:
            var = self.selection.signal_box.variable if name == BOX else self.selection.cut(name).variable
            others = selection.all(*[n for n in names if n != name])
            h = self._sums((var,), stage=False)
            self._fill(h, cols, others, weights, (var,))
            out[name] = h
        return HistGroup(out)

    def count_regions(self, reco, selection, masks, box, weights, blinded) -> dict:
        w = np.ones(len(reco)) if weights is None else weights

        def counts(m, hidden=False):
            return RegionCounts(int(np.count_nonzero(m)), float(w[m].sum()), float((w[m] ** 2).sum()),
                                hidden)

        out = {BOX: counts(selection.all(*masks) & box, hidden=blinded)}
        for sb in self.selection.sidebands:
            if sb.fails:
                cut = next(c for c in self.selection.cuts if c.name == sb.fails)
                base = selection.all(*[n for n in masks if n != sb.fails]) & failed_mask(reco, cut)
            else:
                base = selection.all(*masks)
            out[sb.name] = counts(base & region_mask(reco, sb))
        return out

    def provenance(self, events, meta, info: FileInfo, conditions, excluded: int = 0) -> Provenance:
        """``events``: every event of the chunk read (those of bad spills included, ``excluded``
        of them), so that the accounting of the events and spills closes."""
        prov = Provenance(self.NAME, self.selection.name, self.selection.sha256, self.selection.source,
                          self.calib_tag, __version__,
                          repr(self.token) if self.token is not None else None, bad_spills=self.bad_spills_source,
                          bad_spills_sha256=self.bad_spills_sha256)
        n = len(events)
        prov.events_processed, prov.chunks, prov.events_excluded = n, 1, excluded
        prov.conditions = set(getattr(conditions, "files", {}).values())
        rec = {"events": n, "chunks": 1, "data": info.is_data, "run": info.run,  # n_beam, n_spills: postprocess
               "spill_events": count_spills(events["spill"]) if "spill" in events.fields else {}}
        if info.is_data and self.token is None and conditions is not None:
            # the reference reconstruction's protected events are withheld as well (reference_protected):
            # beside the box they can fall in a sideband, which then counts short of the simulation
            rec["reference_withheld"] = not uses_reference_inputs(_setup(self.SETUP, info.run), conditions)
        if n and "event" in events.fields:  # checked across the file's chunks by postprocess
            event = np.asarray(events["event"])
            rec["event_spans"] = [(int(meta.get("entrystart") or 0), int(event[0]), int(event[-1]))]
        if info.path:
            prov.files = {info.path: rec}
        return prov
