"""The raw ROOT layout: one file per run chunk, written and read with uproot.

Trees (documented in ``docs/raw-format.md``):

``events``
    ``run``, ``spill``, ``event``, ``trigger`` (bit mask, :data:`TRIGGER_BITS`),
    ``time_in_spill`` (s); MSADC digits ``calo_det``, ``calo_chan`` (counter ``ncalo``)
    with their 32 samples each in ``calo_adc`` (``ncalo_adc = 32 * ncalo``, digit-major);
    APV digits ``apv_plane``, ``apv_chan``, ``apv_a0``, ``apv_a1``, ``apv_a2`` (``napv``);
    straw digits ``straw_plane``, ``straw_tube``, ``straw_tdc`` (``nstraw``).
``spills``
    ``run``, ``spill``, ``n_beam`` (particles on target counted by the beam counters:
    MOT or EOT), ``n_triggered``.
``truth`` (simulation only)
    one row per written event, see :data:`TRUTH_BRANCHES`.
``na64raw_sums`` (a TObjString, version 3; version 2: a tree ``<tree>_sums`` per tree)
    content checksums of each tree by block of entries (:mod:`na64reco.io.checksum`),
    verified by every reader on what it reads.
``na64raw`` (a TObjString)
    JSON metadata: format name and version, setup, run, whether truth is present,
    process codes, producer, the entries of every tree, the SHA-256 of ``na64raw_sums``
    and a checksum of itself.

The samples are stored flat (not as ``int16[][32]``) because fixed-size jagged
branches written by uproot did not read back correctly (checked with uproot 5.7).
"""

from __future__ import annotations

import functools
import json
import numbers
import operator
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import hepunits as u
import numpy as np
import uproot

from na64reco import __version__
from na64reco.constants import MAX_BEAM_PER_SPILL, SPS_NORTH_AREA_MOMENTUM, TRUTH_MOMENTUM_MAX
from na64reco.errors import BlindingError, CalibrationMissing, ConfigError, RawFormatError, SetupMismatch
from na64reco.io.baskets import TreeBaskets
from na64reco.io.checksum import (
    BOUNDS,
    Blocks,
    content_sum,
    decode_table,
    encode_table,
    meta_checksum,
    sums_tree,
    table_checksum,
)
from na64reco.io.location import connection_failure, file_info, is_url, uproot_source

FORMAT_NAME = "na64raw"
#: 2: content checksums (``<tree>_sums`` trees, metadata checksum and entry counts);
#: 3: the checksums of all trees in one string, ``na64raw_sums`` (no ``<tree>_sums`` trees,
#: whose headers cost more to read than the content of a small file);
#: 4: version 3 and where the baskets of each tree are, ``na64raw_baskets`` (its SHA-256 in the
#: metadata's ``baskets_checksum``): a reader reads no tree header.
FORMAT_VERSION = 4
#: Versions this reader reads (version 2: the checksum trees; 3: no basket maps).
READ_VERSIONS = (2, 3, 4)
META_KEY = "na64raw"
SUMS_KEY = "na64raw_sums"
#: where the baskets of each tree are (JSON of :meth:`TreeBaskets.to_dict` by tree; version 4)
BASKETS_KEY = "na64raw_baskets"
N_SAMPLES = 32

TRIGGER_BITS = {"physics": 1, "random": 2, "calibration": 4}

#: Truth process codes (``truth.process``); the names are also stored in the file metadata.
PROCESSES = {
    "beam": 0,          # beam lepton, no special interaction
    "signal": 1,        # dark bremsstrahlung X -> invisible
    "kdecay": 2,        # K -> mu nu in flight after the momentum station
    "pidecay": 3,       # pi -> mu nu in flight after the momentum station
    "hadron": 4,        # hadron in the beam interacting in the calorimeters
    "punchthrough": 5,  # leading neutral hadron from the target punching through the HCAL
    "dimuon": 6,        # mu N -> mu N mu+ mu- in the target
    "pileup": 7,        # a second beam particle in time
    "halo": 8,          # beam halo particle
    "pedestal": 9,      # random trigger, no particle (calibration)
}

EVENT_SCALARS = {"run": np.int32, "spill": np.int32, "event": np.int64, "trigger": np.uint32,
                 "time_in_spill": np.float32}
COLLECTIONS = {
    "calo": {"det": np.int16, "chan": np.int16},
    "apv": {"plane": np.int16, "chan": np.int16, "a0": np.int16, "a1": np.int16, "a2": np.int16},
    "straw": {"plane": np.int16, "tube": np.int16, "tdc": np.int32},
}
SPILL_BRANCHES = {"run": np.int32, "spill": np.int32, "n_beam": np.int64, "n_triggered": np.int64}
TRUTH_BRANCHES = {
    "run": np.int32, "spill": np.int32, "event": np.int64, "process": np.int8,
    "p_in": np.float32,      # GeV, true momentum at the incoming momentum station
    "p_out": np.float32,     # GeV, true momentum of the outgoing lepton at MS2 (NaN if none)
    "x": np.float32,         # true dark-boson energy fraction (0 if no signal)
    "vertex_z": np.float32,  # mm, interaction vertex (NaN if none)
    "e_ecal": np.float32, "e_ecal_preshower": np.float32, "e_hcal": np.float32,
    "e_vhcal": np.float32, "e_veto": np.float32, "e_srd": np.float32,  # GeV, true deposits
    "weight": np.float64,    # expected events per simulated beam particle x N (see docs)
}
#: the true deposited energies of ``truth`` (GeV: finite, >= 0)
TRUTH_ENERGIES = ("e_ecal", "e_ecal_preshower", "e_hcal", "e_vhcal", "e_veto", "e_srd")


#: Awkward parameter on the events :meth:`RawFile.events` reads from a *data* file (no
#: truth).  The public reconstruction functions refuse such events: they would return every
#: event, the protected region of the signal search included.  :mod:`na64reco.export` and
#: the event display reconstruct data and withhold that region themselves.
#:
#: The mark sits on the record array *and* on every node of each of its jagged fields (the
#: digit collections ``calo``, ``apv``, ``straw``: lists, records and numbers; or the raw
#: branches ``calo_adc``, ...): awkward keeps those parameters through selections (a mask, an
#: index array, a sort of events, a field projection, ``ak.zip``, ``ak.concatenate``,
#: pickling; inside the events a mask of digits or a replaced digit field), while a selection
#: of a record array drops the record's own.  :func:`is_data_events` looks for it anywhere in
#: the layout, so data selected from marked data stays marked.  What removes it: code that
#: rebuilds the digits from plain numbers (``ak.sort`` / ``ak.where`` of digit fields,
#: ``ak.flatten`` then ``ak.unflatten``, ``to_list``), ``ak.without_parameters``, and
#: :func:`release_data_events` (docs/unblinding.md, "What it does not stop").
DATA_PARAMETER = "na64reco_data"
#: Branches of ``events`` that identify an event and measure nothing: a data file's may be
#: read as numpy without the data mark (:meth:`RawFile.event_numbers`).
ID_BRANCHES = ("run", "spill", "event")
#: entries per read of the whole-file scans (:meth:`RawFile.scan_ids`: the event identifiers that the
#: check before a run needs; :meth:`RawFile.verify`: whole events, at :data:`VERIFY_ENTRIES`): their
#: memory is bounded by these, not by the file (a 1e7-event file is checked in the memory of a 1e5 one)
SCAN_ENTRIES = 1 << 20
VERIFY_ENTRIES = 50_000


@dataclass(frozen=True)
class EventIds:
    """What the checks of a whole file need of its event identifiers (:meth:`RawFile.scan_ids`),
    gathered in bounded memory: the first and last event numbers (the numbers strictly increase,
    checked on the way) and the events of each spill."""

    n_events: int
    first: int | None
    last: int | None
    spills: np.ndarray  # the spills of the events, ascending, once each (int64)
    counts: np.ndarray  # events of each of them

    def span_numbers(self) -> np.ndarray:
        """The first and last event numbers (none for an empty file): what
        :class:`~na64reco.io.distinct.FileIdentity` reads of the event numbers."""
        return np.zeros(0, np.int64) if self.first is None else np.array([self.first, self.last], np.int64)


def _spill_totals(spills: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Events per spill summed over the chunks' ``(spills, counts)``."""
    if not spills:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    numbers, where = np.unique(np.concatenate(spills), return_inverse=True)
    return numbers, np.bincount(where, weights=np.concatenate(counts), minlength=len(numbers)).astype(np.int64)


@dataclass(frozen=True)
class ValueRanges:
    """The ranges of the ``events`` values that depend on the setup (docs/raw-format.md),
    checked by :func:`check_content`; :meth:`of` makes them from a
    :class:`~na64reco.geometry.Setup`."""

    setup: str
    #: s: ``time_in_spill`` lies in ``0..spill_s`` (the setup's ``beam.spill_duration``)
    spill_s: float
    #: ``straw_tdc`` lies in ``0..straw_tdc_max`` counts: the TDC window (``straw_noise_window``,
    #: opening at the trigger) plus the longest drift time (half the widest straw pitch over the
    #: drift velocity), in ``straw_tdc_lsb``
    straw_tdc_max: int
    straw_window_ns: float
    straw_drift_ns: float
    straw_lsb_ns: float
    #: ``apv_a0/a1/a2`` (pedestal-subtracted) lie in ``-apv_max_adc..apv_max_adc``
    apv_max_adc: int

    @classmethod
    def of(cls, setup) -> ValueRanges:
        ro = setup.readout
        pitch = max((p.pitch for p in setup.planes if p.type == "straw"), default=0.0)
        drift = 0.5 * pitch / ro.straw_drift_velocity if ro.straw_drift_velocity > 0 else 0.0
        window = ro.straw_noise_window[1]
        return cls(setup.name, setup.beam.spill_duration / u.s,
                   int(np.rint((window + drift) / ro.straw_tdc_lsb)) if ro.straw_tdc_lsb > 0 else 0,
                   window / u.ns, drift / u.ns, ro.straw_tdc_lsb / u.ns, ro.apv_max_adc)


#: branches of ``events`` whose range :class:`ValueRanges` gives
RANGED_BRANCHES = ("time_in_spill", "straw_tdc", "apv_a0", "apv_a1", "apv_a2")


def _has_mark(layout) -> bool:
    if isinstance(layout, ak.record.Record):
        layout = layout.array
    if not isinstance(layout, ak.contents.Content):
        return False
    if layout.parameter(DATA_PARAMETER):
        return True
    if isinstance(layout, (ak.contents.RecordArray, ak.contents.UnionArray)):
        return any(_has_mark(c) for c in layout.contents)
    content = getattr(layout, "content", None)
    return content is not None and _has_mark(content)


def is_data_events(events) -> bool:
    """True for events read from a data file by :meth:`RawFile.events` (or raw arrays read by
    :meth:`RawFile.read_verified` / :meth:`RawFile.arrays`), and for anything selected or built
    from their collections (see :data:`DATA_PARAMETER`)."""
    try:
        return _has_mark(ak.to_layout(events, allow_record=True))
    except (TypeError, ValueError):
        return False


def numpy_field(records: ak.Array, name: str) -> np.ndarray:
    """``np.asarray(records[name])``; a numeric field of a plain record array from its buffer (~1 us
    against awkward's projection, ~100 us)."""
    layout = records.layout
    if isinstance(layout, ak.contents.RecordArray) and name in layout.fields:
        field = layout.content(name)
        if isinstance(field, ak.contents.NumpyArray) and not field.parameters:
            return np.asarray(field.data)[:layout.length]
    return np.asarray(records[name])


def refuse_data_events(events, what: str) -> None:
    """Raise :class:`BlindingError` if ``events`` come from a data file (see :data:`DATA_PARAMETER`)."""
    if is_data_events(events):
        raise BlindingError(f"{what} of data events would return every event, including the protected region "
                            "of the signal search: use na64reco.export.iterate_reco / `na64reco reco` (which "
                            "withhold it) or a processor (which blinds it)")


def _without_mark(layout):
    """``layout`` with the data mark taken off every node (no data copied)."""
    params = {k: v for k, v in layout.parameters.items() if k != DATA_PARAMETER}
    if isinstance(layout, (ak.contents.RecordArray, ak.contents.UnionArray)):
        return layout.copy(contents=[_without_mark(c) for c in layout.contents], parameters=params)
    if getattr(layout, "content", None) is not None:
        return layout.copy(content=_without_mark(layout.content), parameters=params)
    return layout.copy(parameters=params)


def _with_mark(layout, collection: bool = False):
    """``layout`` with the data mark on its outermost node and, below the outermost record
    array, on every node of each jagged field (the digit collections: their lists, records
    and numbers, so that a selection inside the events, ``ev.calo[ev.calo.chan >= 0]``, or a
    field of the digits replaced, keeps it too); numbers of the outer record (run, event, ...)
    are left as they are (no data copied)."""
    if collection:
        return _mark_tree(layout)
    params = {**layout.parameters, DATA_PARAMETER: True}
    if isinstance(layout, ak.contents.RecordArray):
        return layout.copy(contents=[_with_mark(c, _is_jagged(c)) for c in layout.contents], parameters=params)
    if getattr(layout, "content", None) is None:
        return layout  # a number field of the outer record: nothing to mark
    return layout.copy(content=_with_mark(layout.content), parameters=params)


def _is_jagged(layout) -> bool:
    while isinstance(layout, (ak.contents.IndexedArray, ak.contents.IndexedOptionArray, ak.contents.UnmaskedArray,
                              ak.contents.ByteMaskedArray, ak.contents.BitMaskedArray)):
        layout = layout.content
    return isinstance(layout, (ak.contents.ListOffsetArray, ak.contents.ListArray, ak.contents.RegularArray))


def _mark_tree(layout):
    params = {**layout.parameters, DATA_PARAMETER: True}
    if isinstance(layout, (ak.contents.RecordArray, ak.contents.UnionArray)):
        return layout.copy(contents=[_mark_tree(c) for c in layout.contents], parameters=params)
    if getattr(layout, "content", None) is not None:
        return layout.copy(content=_mark_tree(layout.content), parameters=params)
    return layout.copy(parameters=params)


def mark_data_events(arrays: ak.Array) -> ak.Array:
    """``arrays`` (events, or the raw branches of ``events``, of a data file) with the data mark."""
    return ak.Array(_with_mark(ak.to_layout(arrays)), behavior=arrays.behavior, attrs=arrays.attrs)


def release_data_events(events):
    """``events`` without the data mark, for callers that withhold the protected region of
    what they reconstruct themselves (:mod:`na64reco.export`, :mod:`na64reco.display`)."""
    if not is_data_events(events):
        return events
    return ak.Array(_without_mark(ak.to_layout(events)), behavior=events.behavior, attrs=events.attrs)


def jagged(counts: np.ndarray, **fields: np.ndarray) -> ak.Array:
    """Build a jagged record array from per-event ``counts`` and flat field arrays."""
    counts = np.asarray(counts, dtype=np.int64)
    rec = ak.zip({k: v for k, v in fields.items()}, depth_limit=1)
    return ak.unflatten(rec, counts)


def collection_arrays(coll, names) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The inverse of :func:`jagged`: ``(offsets, {name: flat array})`` of the jagged record
    collection ``coll`` (e.g. ``events["calo"]``), offsets (int64, ``len(coll) + 1``) from 0.
    When the layout is the one :func:`assemble_events` makes (a ``ListOffsetArray`` of a
    ``RecordArray`` of numbers, or of ``RegularArray`` s of numbers: the samples), the arrays
    are views of its buffers (~20 us per collection); any other layout (a masked or
    re-indexed selection of events) goes through ``ak.num`` / ``ak.flatten`` (~1 ms): the same
    values and dtypes either way (``tests/test_raw_assemble.py``)."""
    lay = ak.to_layout(coll)
    if isinstance(lay, ak.contents.ListOffsetArray) and isinstance(lay.content, ak.contents.RecordArray):
        flat = {n: _numbers(lay.content[n]) for n in names}
        if all(a is not None for a in flat.values()):
            off = np.asarray(lay.offsets).astype(np.int64)
            lo, hi = off[0], off[-1]
            return off - lo, {n: a[lo:hi] for n, a in flat.items()}
    off = np.zeros(len(coll) + 1, np.int64)
    np.cumsum(ak.to_numpy(ak.num(coll, axis=1)), out=off[1:])
    return off, {n: ak.to_numpy(ak.flatten(coll[n], axis=1)) for n in names}


def _numbers(content) -> np.ndarray | None:
    """The numpy array of a field's layout: a ``NumpyArray``, or a ``RegularArray`` of one
    (rows of ``size``); None for anything else."""
    if isinstance(content, ak.contents.NumpyArray):
        return np.asarray(content.data)
    if (isinstance(content, ak.contents.RegularArray) and isinstance(content.content, ak.contents.NumpyArray)
            and content.content.data.ndim == 1 and content.size > 0):
        return np.asarray(content.content.data)[: len(content) * content.size].reshape(len(content), content.size)
    return None


# ----------------------------------------------------------------------------------------
class RawWriter:
    """Write raw files in chunks (bounded memory).

    >>> with RawWriter("run.root", setup="na64mu", run=1, has_truth=True) as w:
    ...     w.write_events(events)            # dict of flat arrays + counts, see below
    ...     w.write_truth(truth); w.write_spills(spills)

    ``write_events`` takes a dict with the :data:`EVENT_SCALARS`, and for each
    collection ``c`` a ``n_c`` array of counts plus ``c_<field>`` flat arrays; the
    samples are ``calo_adc`` of shape (total digits, 32).
    """

    def __init__(self, path, *, setup: str, run: int, has_truth: bool, extra_meta: dict | None = None,
                 compression=None, basket_maps: bool = True):
        self.path = Path(path)
        self.basket_maps = basket_maps  # False: no na64raw_baskets, format version 3 (as written before stop 29)
        try:
            self._file = uproot.recreate(self.path, compression=compression or uproot.ZSTD(1))
        except OSError as exc:
            raise RawFormatError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        self.has_truth = has_truth
        self.meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "setup": setup,
                     "run": int(run), "has_truth": bool(has_truth), "processes": PROCESSES,
                     "trigger_bits": TRIGGER_BITS, "producer": f"na64reco {__version__}",
                     **(extra_meta or {})}
        self._trees_made = False
        self.n_events = 0
        self.entries = {"events": 0, "spills": 0, **({"truth": 0} if has_truth else {})}
        #: the block tables (``na64raw_sums``), written at :meth:`close`
        self.tables = {tree: {"entry_start": [], "entry_stop": [], "sums": {b: [] for b in types}}
                       for tree, types in data_branch_types(has_truth).items()}

    def _extend(self, tree: str, arrays: dict, flat: dict[str, np.ndarray], n: int) -> None:
        """Append ``n`` entries to ``tree`` and their block of content sums (``flat``: the
        flattened content of every branch) to its block table."""
        if n == 0:
            return  # an empty block would check nothing
        start = self.entries[tree]
        table = self.tables[tree]
        sums = {b: int(content_sum(v)) for b, v in flat.items()}
        if set(sums) != set(table["sums"]):
            raise ValueError(f"tree {tree!r}: branches {sorted(sums)}, expected {sorted(table['sums'])}")
        self._file[tree].extend(arrays)
        table["entry_start"].append(start)
        table["entry_stop"].append(start + n)
        for b, v in sums.items():
            table["sums"][b].append(v)
        self.entries[tree] = start + n

    def _make_trees(self):
        types = dict(EVENT_SCALARS)
        for name, fields in COLLECTIONS.items():
            types[name] = ak.types.RecordType([ak.types.NumpyType(_prim(t)) for t in fields.values()],
                                              list(fields))
        self._file.mktree("events", {**{k: v for k, v in EVENT_SCALARS.items()},
                                     **{c: ak.types.ListType(types[c]) for c in COLLECTIONS},
                                     "calo_adc": ak.types.ListType(ak.types.NumpyType("int16"))})
        self._file.mktree("spills", dict(SPILL_BRANCHES))
        if self.has_truth:
            self._file.mktree("truth", dict(TRUTH_BRANCHES))
        self._trees_made = True

    def write_events(self, ev: dict) -> None:
        if not self._trees_made:
            self._make_trees()
        out = {k: np.asarray(ev[k], dtype=t) for k, t in EVENT_SCALARS.items()}
        flat = dict(out)
        n = len(out["run"])
        for name, fields in COLLECTIONS.items():
            counts = np.asarray(ev[f"n_{name}"], dtype=np.int64)
            if counts.shape != (n,):
                raise ValueError(f"n_{name} has shape {counts.shape}, expected ({n},)")
            values = {f: np.asarray(ev[f"{name}_{f}"], dtype=t) for f, t in fields.items()}
            out[name] = jagged(counts, **values)
            flat[f"n{name}"] = counts.astype(np.int32)  # counters are stored as int32
            flat.update({f"{name}_{f}": v for f, v in values.items()})
        adc = np.asarray(ev["calo_adc"], dtype=np.int16).reshape(-1)
        adc_counts = np.asarray(ev["n_calo"], dtype=np.int64) * N_SAMPLES
        out["calo_adc"] = ak.unflatten(adc, adc_counts)
        flat["ncalo_adc"], flat["calo_adc"] = adc_counts.astype(np.int32), adc
        self._extend("events", out, flat, n)
        self.n_events += n

    def write_spills(self, spills: dict) -> None:
        if not self._trees_made:
            self._make_trees()
        arrays = {k: np.asarray(spills[k], dtype=t) for k, t in SPILL_BRANCHES.items()}
        self._extend("spills", arrays, arrays, len(arrays["spill"]))

    def write_truth(self, truth: dict) -> None:
        if not self.has_truth:
            raise ValueError("this writer was opened with has_truth=False")
        if not self._trees_made:
            self._make_trees()
        arrays = {k: np.asarray(truth[k], dtype=t) for k, t in TRUTH_BRANCHES.items()}
        self._extend("truth", arrays, arrays, len(arrays["event"]))

    def close(self) -> None:
        """Close the trees, then add the checksum table, with the basket map of each tree read
        back from the closed file (:class:`~na64reco.io.baskets.TreeBaskets`: a reader then reads
        no tree header, docs/raw-format.md), and the metadata."""
        if not self._trees_made:
            self._make_trees()
        self._file.close()
        baskets = None
        if self.basket_maps:
            with uproot.open(self.path, array_cache=None) as f:
                maps = {tree: TreeBaskets.of_tree(f[tree]) for tree in self.tables if self.entries[tree] > 0}
            baskets = json.dumps({t: m.to_dict() for t, m in maps.items() if m is not None}, separators=(",", ":"))
        sums = encode_table(self.tables)  # (content only: two files of the same events have the same table)
        meta = {**self.meta, "entries": dict(self.entries), "sums_checksum": table_checksum(sums),
                **({"baskets_checksum": table_checksum(baskets)} if baskets is not None
                   else {"format_version": min(self.meta["format_version"], 3)})}
        meta["checksum"] = meta_checksum(meta)
        with uproot.update(self.path) as f:
            f[SUMS_KEY] = sums
            if baskets is not None:
                f[BASKETS_KEY] = baskets
            f[META_KEY] = json.dumps(meta)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self._file.close()


def _prim(t) -> str:
    return np.dtype(t).name


# ----------------------------------------------------------------------------------------
@dataclass
class RawFile:
    """An opened, checked raw file.  Use :func:`open_raw`.

    The metadata and the checksum tables are checked when the file is opened; each tree's
    structure (its entries against the metadata, its branches and their types against the
    format) the first time it is used (:meth:`tree`), or at opening with
    ``open_raw(..., structure=True)``: nothing is read from a tree that was not checked.
    """

    path: Path | str   # a Path, or the URL of a remote file
    meta: dict
    n_events: int
    _file: object = field(repr=False, default=None)
    # read-only (:attr:`has_truth`): it decides whether the events carry the data mark; set from the
    # open file's own trees, never an argument (``dataclasses.replace`` cannot make a data file simulation)
    _has_truth: bool = field(init=False, repr=False, default=False)
    _blocks: dict = field(repr=False, default_factory=dict)
    _trees: dict = field(repr=False, default_factory=dict)
    _baskets: dict = field(repr=False, default_factory=dict)
    _ranges: ValueRanges | None = field(repr=False, default=None)

    def __post_init__(self):
        keys = self._file.keys(cycle=False) if self._file is not None else ()
        self._has_truth = bool(self.meta.get("has_truth")) and "truth" in keys

    @property
    def has_truth(self) -> bool:
        """Whether the file is simulation (a ``truth`` tree); False for data, whose events are marked."""
        return self._has_truth

    @has_truth.setter
    def has_truth(self, value) -> None:
        raise BlindingError(f"{self.path}: has_truth is read from the file and cannot be set (a data file's "
                            "events stay marked as data)")

    @property
    def setup(self) -> str:
        return self.meta["setup"]

    @property
    def run(self) -> int:
        return int(self.meta["run"])

    @property
    def version(self) -> int:
        return int(self.meta["format_version"])

    def value_ranges(self) -> ValueRanges:
        """The ranges of the file's setup for its run (:class:`ValueRanges`); a
        :class:`ConfigError` naming the file if the setup or the run's period does not exist."""
        if self._ranges is None:
            self._ranges = ValueRanges.of(self.run_setup())
        return self._ranges

    def run_setup(self):
        """The description of the file's setup in its run's period (``load_setup(setup, run=run)``);
        a :class:`ConfigError` naming the file if the setup or the run's period does not exist."""
        from na64reco.geometry import load_setup

        try:
            return load_setup(self.setup, run=self.run)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: setup {self.setup!r}, run {self.run}: {exc}") from None

    def run_conditions(self, setup, calib_tag: str | None = None):
        """The conditions of the file's run in ``calib_tag`` (default: the setup's tag); a
        :class:`CalibrationMissing` naming the file if none cover its run."""
        from na64reco.conditions import load_conditions

        try:
            return load_conditions(setup, self.run, calib_tag)
        except CalibrationMissing as exc:
            raise CalibrationMissing(f"{self.path}: {exc}") from None

    @property
    def uuid(self):
        """The ROOT file's UUID (what coffea identifies a file by)."""
        return self._file.file.fUUID

    def tree(self, name: str):
        """The uproot TTree ``name``, its structure checked against the format and the
        metadata the first time (reads the tree's header: ~2-8 ms)."""
        if name not in self._trees:
            expected = branch_types(self.has_truth, self.version)
            if name not in expected:
                raise RawFormatError(f"{self.path}: has no tree {name!r} (format version {self.version})")
            try:
                self._trees[name] = _check_tree(self._file, name, expected[name], self.meta, self.path)
            except RawFormatError:
                raise
            except Exception as exc:  # damaged TTree headers and the like
                raise connection_failure(self.path, exc) or RawFormatError(
                    f"{self.path}: unreadable tree {name!r}: {type(exc).__name__}: {exc}") from None
        return self._trees[name]

    def blocks(self, tree: str) -> Blocks:
        """The checksum blocks of ``tree`` (version 3: checked at opening; version 2: read
        from ``<tree>_sums`` once)."""
        if tree not in self._blocks:
            if self.version >= 3:
                raise RawFormatError(f"{self.path}: has no tree {tree!r}")
            n = self._entries(tree)
            self.tree(sums_tree(tree))
            sums = _read_flat(self._file, sums_tree(tree), None, self.path)
            self._blocks[tree] = Blocks.from_arrays(tree, sums, n, self.path)
        return self._blocks[tree]

    def baskets(self, tree: str) -> TreeBaskets | None:
        """Where the baskets of ``tree`` are (:class:`~na64reco.io.baskets.TreeBaskets`: from the
        file's ``na64raw_baskets`` (version 4), checked when the file was opened, else from the
        tree's header, :meth:`tree`), or None if a branch is out of that reader's scope."""
        if tree not in self._baskets:
            self._baskets[tree] = TreeBaskets.of_tree(self.tree(tree))
        return self._baskets[tree]

    def _read(self, tree: str, branches, start: int, stop: int, library: str):
        """uproot's ``arrays(branches, start, stop, library=library)`` of ``tree`` (all branches if
        ``branches`` is None), read from the basket map for a local file (the same arrays without
        uproot's header and per-branch machinery: 0.32 s instead of 0.49 s of CPU for the 94k
        events of a 100k-MOT file, docs/performance.md "The chunk read from the basket map")."""
        baskets = None if is_url(self.path) else self.baskets(tree)
        if baskets is not None:
            names = list(baskets.names) if branches is None else list(branches)
            got = baskets.read(self.path, names, start, stop)
            if library != "np":
                return ak.Array(ak.contents.RecordArray(
                    [ak.contents.NumpyArray(v) if isinstance(v, np.ndarray) else v for v in got.values()], names,
                    length=stop - start))
            if all(isinstance(v, np.ndarray) for v in got.values()):
                return got
        return self.tree(tree).arrays(None if branches is None else list(branches), entry_start=start,
                                      entry_stop=stop, library=library)

    def _entries(self, tree: str) -> int:
        """Entries of ``tree``: from the metadata, which is checked against each tree when
        the tree is first used (reading a tree's header only for its entry count costs ~3 ms)."""
        n = (self.meta.get("entries") or {}).get(tree)
        return int(n) if n is not None else int(self.tree(tree).num_entries)

    def arrays(self, tree: str, entry_start: int, entry_stop: int) -> ak.Array:
        """Entries of ``tree`` as read, unchecked (see :meth:`read_verified`); the events of a
        data file carry :data:`DATA_PARAMETER`."""
        return self._mark(tree, self._read(tree, None, entry_start, entry_stop, "ak"))

    def _mark(self, tree: str, arrays):
        """``arrays`` of ``tree`` with the data mark if they are the events of a data file (so that
        :func:`assemble_events` of them is refused by the public reconstruction, as :meth:`events`)."""
        if tree != "events" or self.has_truth:
            return arrays
        if not isinstance(arrays, ak.Array) and set(arrays) <= set(ID_BRANCHES):
            return arrays  # identifiers only (:meth:`event_numbers`): no measured quantity
        if not isinstance(arrays, ak.Array):
            raise BlindingError(f"{self.path}: the events of a data file are read as awkward arrays only "
                                "(library='ak'), which keep the data mark of the blinding")
        return mark_data_events(arrays)

    def read_verified(self, tree: str, entry_start: int | None = None, entry_stop: int | None = None,
                      library: str = "ak", branches: tuple[str, ...] | None = None):
        """Entries ``[entry_start, entry_stop)`` of ``tree`` (its ``branches``, default all),
        checked against its checksums.  The bounds are those of a Python slice: negative ones count
        from the end, and a range that ends before it starts is empty.

        The range is widened to whole checksum blocks for the check, then cut back.  Any
        failure to read, decompress or verify is a :class:`RawFormatError` naming the file,
        the tree and the entries.
        """
        for name, bound in (("entry_start", entry_start), ("entry_stop", entry_stop)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, numbers.Integral)):
                raise TypeError(f"{self.path}: {name} of tree {tree!r} must be an integer or None, got {bound!r}")
        n = self._entries(tree)
        start, stop, _ = slice(entry_start, entry_stop).indices(n)
        stop = max(start, stop)
        try:
            blocks = self.blocks(tree)
            lo, hi = blocks.widen(start, stop)
            arrays = self._read(tree, branches, lo, hi, library)
            blocks.verify(arrays, lo, hi, self.path, branches)
        except RawFormatError:
            raise
        except Exception as exc:  # uproot/awkward raise many types for damaged content
            raise connection_failure(self.path, exc) or RawFormatError(
                f"{self.path}: cannot read tree {tree!r} entries {start}-{stop}: {type(exc).__name__}: {exc}") from None
        if (lo, hi) != (start, stop):
            arrays = ({k: v[start - lo:stop - lo] for k, v in arrays.items()} if library == "np"
                      else arrays[start - lo:stop - lo])
        ranged = tree == "events" and (branches is None or bool(set(branches) & set(RANGED_BRANCHES)))
        check_content(tree, arrays, self.run, self.path, start, self.value_ranges() if ranged else None)
        return self._mark(tree, arrays)

    def events(self, entry_start: int | None = None, entry_stop: int | None = None) -> ak.Array:
        """Events ``[entry_start, entry_stop)`` (a Python slice's bounds: ``events(-10)`` the last ten) as an
        awkward record array with ``calo.adc`` of shape (digits, 32); those of a data file carry
        :data:`DATA_PARAMETER` (the public reconstruction refuses them)."""
        arrays = self.read_verified("events", entry_start, entry_stop)
        try:
            events = assemble_events(arrays, self.path)
            return events if self.has_truth else mark_data_events(events)
        except RawFormatError:
            raise
        except Exception as exc:
            raise RawFormatError(f"{self.path}: cannot decode tree 'events' entries {entry_start}-{entry_stop}: "
                                 f"{type(exc).__name__}: {exc}") from None

    def spills(self) -> dict[str, np.ndarray]:
        return self.read_verified("spills", library="np")

    def event_numbers(self) -> np.ndarray:
        """The ``events.event`` numbers of the whole file, read with ``events.run`` alone (no
        digits: ~1.5 % of the plain read of a 94k-event file, docs/performance.md "Input
        identity and event order") and verified against their checksums; a
        :class:`RawFormatError` if a ``run`` is not the file's or the numbers do not strictly
        increase (:func:`check_content`), wherever the chunks of a run would later cut the file."""
        return self.read_verified("events", library="np", branches=("run", "event"))["event"]

    def truth(self, entry_start: int | None = None, entry_stop: int | None = None) -> dict[str, np.ndarray]:
        if not self.has_truth:
            raise RawFormatError(f"{self.path}: has no truth (a data-like file)")
        return self.read_verified("truth", entry_start, entry_stop, library="np")

    def scan_ranges(self, tree: str, step: int) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering ``tree`` in order, each of whole checksum blocks and
        at least ``step`` entries (the last one may be shorter): the reads of a whole-file scan."""
        blocks = self.blocks(tree)
        out: list[tuple[int, int]] = []
        start = 0
        for stop in (int(x) for x in blocks.stops):
            if stop - start >= step:
                out.append((start, stop))
                start = stop
        n = self._entries(tree)
        if start < n:
            out.append((start, n))
        return out

    def scan_ids(self, step: int = SCAN_ENTRIES) -> EventIds:
        """The event identifiers of the whole file, read ``step`` entries at a time (``events.run``,
        ``spill`` and ``event``, verified and checked as :meth:`event_numbers`, the order across
        the reads too): their first and last event numbers and the events of each spill, in memory
        bounded by ``step``, not by the file."""
        first = last = None
        spills, counts = [], []
        n = 0
        for start, stop in self.scan_ranges("events", step):
            ids = self.read_verified("events", start, stop, library="np", branches=ID_BRANCHES)
            numbers = ids["event"]
            if not len(numbers):
                continue
            if last is not None:
                check_event_order(numbers[:1], self.path, start, last)
            first = int(numbers[0]) if first is None else first
            last = int(numbers[-1])
            s, c = np.unique(np.asarray(ids["spill"]).astype(np.int64), return_counts=True)
            spills.append(s)
            counts.append(c)
            n += len(numbers)
        numbers, totals = _spill_totals(spills, counts)
        return EventIds(n, first, last, numbers, totals)

    def verify(self, step: int = VERIFY_ENTRIES) -> dict[str, int]:
        """Read and check every tree whole, as a run reads it, ``step`` events at a time (memory
        bounded by it, not by the file): the checksums, the values (:func:`check_content`), the
        event order and the events of each spill against the ``spills`` tree (:meth:`scan_ids`,
        :func:`check_spill_counts_of`), the events assembled (the digits' branches agreeing event
        by event) and the truth rows against the events; returns the entries of each tree.

        Also every tree's header, which a local read from the basket map never needs: its entries
        against the metadata and its baskets against the map (a flipped bit in a header passed
        here and failed every other reader, ROOT's and a URL's; integrity review, stop 48)."""
        for name in branch_types(self.has_truth, self.version):
            header = self.tree(name)
            short = [b.name for b in header.branches if int(b.num_entries) != int(header.num_entries)]
            if short:
                raise RawFormatError(f"{self.path}: tree {name!r}: the header gives branch {short[0]!r} another number "
                                     f"of entries than the tree's {int(header.num_entries)} (a corrupt tree header)")
            known = self._baskets.get(name)
            if known is not None and TreeBaskets.of_tree(header) != known:
                raise RawFormatError(f"{self.path}: tree {name!r}: its header does not describe the baskets the file's "
                                     "basket map holds (a corrupt tree header)")
        spills = self.spills()
        ids = self.scan_ids()
        check_spill_counts_of(ids.spills, ids.counts, spills, self.path)
        for start, stop in self.scan_ranges("events", step):
            events = self.events(start, stop)
            if self.has_truth:
                check_truth_rows(self.truth(start, stop)["event"], events["event"], self.path, start)
        entries = {"events": ids.n_events, "spills": len(spills["spill"])}
        if self.has_truth:
            entries["truth"] = self._entries("truth")
            if entries["truth"] != ids.n_events:
                raise RawFormatError(f"{self.path}: truth rows do not match the events: {entries['truth']} truth rows "
                                     f"for {ids.n_events} events")
        return entries

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def check_content(tree: str, arrays, run: int, source, start: int = 0, ranges: ValueRanges | None = None) -> None:
    """The values of entries ``start...`` of ``tree`` (``arrays``: its branches, awkward or
    numpy) that the checksums cannot vouch for, as the format defines them
    (``docs/raw-format.md``): every row's ``run`` is the file's ``run``; ``events``: event
    numbers strictly increasing (unique, in order; :func:`check_event_order`), a non-empty
    ``trigger`` mask of known bits, a finite ``time_in_spill``; with ``ranges`` (the setup's,
    :class:`ValueRanges`) ``time_in_spill`` in ``0..`` the spill duration, every ``straw_tdc``
    inside the TDC window and every APV sample inside the ADC's range; ``spills``: ``n_beam``
    and ``n_triggered`` at least 0, ``n_beam`` at least ``n_triggered`` (the beam counters count
    every triggered particle) and at most :data:`~na64reco.constants.MAX_BEAM_PER_SPILL`;
    ``truth``: a finite ``weight`` >= 0, a known ``process`` code, ``p_in`` and ``p_out`` NaN
    (none) or in ``0..`` :data:`~na64reco.constants.TRUTH_MOMENTUM_MAX`.  A
    :class:`RawFormatError` naming the file, the branch, the entry and the value otherwise (a
    file written wrongly with valid checksums would give a wrong MOT, a NaN cut-flow or an
    untracked event).  One vectorised pass per branch (a minimum and a maximum for the digits)."""
    if tree not in ("events", "spills", "truth"):
        return

    def values(name):
        return np.asarray(arrays[name])

    def fail(name, bad, what):
        i, k = int(np.flatnonzero(bad)[0]), int(np.count_nonzero(bad))
        raise RawFormatError(f"{source}: branch {tree}.{name} of entry {start + i} is {values(name)[i].item()!r}; "
                             f"expected {what} ({k} entr{'y' if k == 1 else 'ies'} of {start}-{start + len(bad)})")

    names = _names(arrays)
    runs = values("run")
    if len(runs) and (runs != run).any():
        fail("run", runs != run, f"the file's run {run} (metadata)")
    if tree == "events":
        if len(runs) > 1:
            check_event_order(values("event"), source, start)
        if "trigger" in names:
            trig = values("trigger").astype(np.int64)
            if ((trig & ~_KNOWN_TRIGGER_BITS) != 0).any() or (trig == 0).any():
                fail("trigger", ((trig & ~_KNOWN_TRIGGER_BITS) != 0) | (trig == 0),
                     f"a non-empty mask of the trigger bits {TRIGGER_BITS}")
        if "time_in_spill" in names:
            t = values("time_in_spill")
            if not np.isfinite(t).all():
                fail("time_in_spill", ~np.isfinite(t), "a finite time (s)")
            if ranges is not None and len(t):
                top = t.dtype.type(ranges.spill_s) if t.dtype.kind == "f" else ranges.spill_s  # (float32: as stored)
                if t.min() < 0 or t.max() > top:
                    fail("time_in_spill", (t < 0) | (t > top), f"a time in the spill, 0..{ranges.spill_s:g} s (the "
                                                                f"spill duration of setup {ranges.setup!r})")
        if ranges is not None:
            _check_digit_ranges(arrays, names, source, start, ranges)
        _check_unique_digits(arrays, names, source, start)
    elif tree == "spills":
        for name in ("n_beam", "n_triggered"):
            if (values(name) < 0).any():
                fail(name, values(name) < 0, "a count >= 0")
        n_beam, written = values("n_beam"), values("n_triggered")
        if (n_beam < written).any():
            bad = n_beam < written
            i = int(np.flatnonzero(bad)[0])
            fail("n_beam", bad, f"at least the spill's n_triggered, {written[i].item()!r} (the beam counters count "
                                "every particle that triggered an event)")
        if (n_beam > MAX_BEAM_PER_SPILL).any():
            fail("n_beam", n_beam > MAX_BEAM_PER_SPILL,
                 f"a count of beam particles per spill <= {MAX_BEAM_PER_SPILL:.0e} (na64reco.constants."
                 "MAX_BEAM_PER_SPILL)")
    elif tree == "truth":
        weight = values("weight")
        ok = np.isfinite(weight) & (weight >= 0) & (weight <= 1)
        if not ok.all():  # (events per beam particle: a probability, each particle makes at most one event)
            fail("weight", ~ok, "a weight in 0..1 (expected events per beam particle)")
        if "process" in names:
            known = np.isin(values("process"), list(PROCESSES.values()))
            if not known.all():
                fail("process", ~known, f"a process code of {PROCESSES}")
        rules = [(name, lambda v: np.isfinite(v) & (v >= 0), "a finite deposited energy >= 0 (GeV)")
                 for name in TRUTH_ENERGIES]
        rules += [("x", lambda v: (v >= 0) & (v <= 1), "an energy fraction E_X / E_0 in 0..1 (0 if no signal)"),
                  ("vertex_z", lambda v: ~np.isinf(v), "a finite position (mm) or NaN for none")]
        for name, rule, what in rules:
            if name in names and not (ok := rule(values(name))).all():
                fail(name, ~ok, what)
        top = TRUTH_MOMENTUM_MAX / u.GeV
        for name in ("p_in", "p_out"):
            if name in names:
                p = values(name)
                ok = np.isnan(p) | ((p >= 0) & (p <= top))
                if not ok.all():
                    fail(name, ~ok, f"a momentum in 0..{top:g} GeV or NaN for none (na64reco.constants."
                                    f"TRUTH_MOMENTUM_MAX: above the {SPS_NORTH_AREA_MOMENTUM / u.GeV:g} GeV/c of the "
                                    "SPS protons of the North Area beams)")


def _check_digit_ranges(arrays, names: set[str], source, start: int, ranges: ValueRanges) -> None:
    """The straw TDC counts and the APV samples of entries ``start...`` inside ``ranges``: a minimum
    and a maximum of each flat branch; the first digit outside, its entry, and the count only
    when one is."""
    lsb = ranges.straw_lsb_ns
    checks = [("straw_tdc", 0, ranges.straw_tdc_max,
               f"TDC counts 0..{ranges.straw_tdc_max} (the straw TDC window of setup {ranges.setup!r}: "
               f"{ranges.straw_window_ns:g} ns from the trigger plus the {ranges.straw_drift_ns:g} ns longest drift, "
               f"at {lsb:g} ns per count)")]
    checks += [(f"apv_{a}", -ranges.apv_max_adc, ranges.apv_max_adc,
                f"a pedestal-subtracted APV sample in -{ranges.apv_max_adc}..{ranges.apv_max_adc} (the ADC range "
                f"of setup {ranges.setup!r}, trackers.apv_max_adc)") for a in ("a0", "a1", "a2")]
    for name, lo, hi, what in checks:
        if name not in names:
            continue
        flat, offsets = _flat_values(arrays[name])
        if not flat.size or (flat.min() >= lo and flat.max() <= hi):
            continue
        bad = (flat < lo) | (flat > hi)
        d, k = int(np.flatnonzero(bad)[0]), int(np.count_nonzero(bad))
        i = int(np.searchsorted(offsets, d, side="right")) - 1
        raise RawFormatError(f"{source}: branch events.{name} of entry {start + i} (digit {d - int(offsets[i])} "
                             f"of the entry) is {flat[d].item()!r}; expected {what} ({k} digit{'' if k == 1 else 's'} "
                             f"of entries {start}-{start + len(offsets) - 1})")


#: the digits read once per event: one MSADC digit per calorimeter channel, one APV digit per
#: tracker channel (a straw tube may have several hits: not here)
UNIQUE_DIGITS = (("calo_det", "calo_chan"), ("apv_plane", "apv_chan"))


def _check_unique_digits(arrays, names: set[str], source, start: int) -> None:
    """No MSADC or APV channel twice in an entry (the reconstruction would add both digits: a
    calorimeter cell with twice its energy): a :class:`RawFormatError` naming the first repeated
    digit.  Digits in channel order (as written) are checked in one pass of neighbour comparisons;
    other orders are sorted."""
    for a, b in UNIQUE_DIGITS:
        if a not in names or b not in names:
            continue
        first, offsets = _flat_values(arrays[a])
        second = _flat_values(arrays[b])[0]
        if first.size < 2:
            continue
        channel = first.astype(np.int32)  # (plane or detector) << 16 | channel, in place: int16 branches
        np.left_shift(channel, 16, out=channel)
        np.bitwise_or(channel, second.view(np.uint16), out=channel, casting="unsafe")
        rising = channel[1:] > channel[:-1]  # (2.3x faster than the first version: ~9 ms per 94k events)
        edges = offsets[1:-1] - 1  # the last digit of each entry but the last: the next entry's starts anew
        rising[edges[(edges >= 0) & (edges < rising.size)]] = True
        if rising.all():
            continue
        # digits not in channel order (another writer): a sort finds a repeat; the slower stable
        # argsort only names the first one
        entry = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
        key = (entry << 32) | (channel.astype(np.int64) & 0xFFFFFFFF)
        if np.all(np.diff(np.sort(key)) != 0):
            continue
        order = np.argsort(key, kind="stable")
        same = np.flatnonzero(np.diff(key[order]) == 0)
        d = int(order[same[0] + 1])
        i = int(entry[d])
        k = int(same.size)
        raise RawFormatError(
            f"{source}: entry {start + i} has {a.split('_')[0]} digit {a}={first[d].item()} {b}={second[d].item()} "
            f"twice; expected each channel at most once per entry ({k} repeated digit{'' if k == 1 else 's'} of "
            f"entries {start}-{start + len(offsets) - 1})")


def _flat_values(branch) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets from 0)`` of a jagged branch: awkward (an array or a layout: views of
    its buffers when it is a list of numbers) or numpy (an array of arrays, ``library="np"``)."""
    if isinstance(branch, np.ndarray):
        counts = np.fromiter((len(x) for x in branch), np.int64, len(branch))
        flat = np.concatenate(list(branch)) if counts.sum() else np.zeros(0, np.int64)
    else:
        layout = ak.to_layout(branch)
        while isinstance(layout, ak.contents.IndexedArray):
            layout = layout.project()
        if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
            off = np.asarray(layout.offsets.data, np.int64)
            return np.asarray(layout.content.data)[off[0]:off[-1]], off - off[0]
        counts = ak.to_numpy(ak.num(branch, axis=1)).astype(np.int64)
        flat = ak.to_numpy(ak.flatten(branch, axis=1))
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return flat, offsets


#: the bits a ``trigger`` word may have (:data:`TRIGGER_BITS`)
_KNOWN_TRIGGER_BITS = functools.reduce(operator.or_, TRIGGER_BITS.values())


def _names(arrays) -> set[str]:
    return set(arrays.fields) if isinstance(arrays, ak.Array) else set(arrays)


def check_truth_rows(truth_event, event, source, start: int = 0) -> None:
    """The ``truth`` rows of entries ``start...`` are those of the events (``truth.event`` equal
    to ``events.event`` entry by entry); a :class:`RawFormatError` naming the file and the
    first entry that differs otherwise (a file written wrongly, with valid checksums)."""
    t_event, e_event = np.asarray(truth_event), np.asarray(event)
    if len(t_event) != len(e_event):
        raise RawFormatError(f"{source}: truth rows do not match the events: {len(t_event)} truth rows for "
                             f"{len(e_event)} events from entry {start}")
    if not np.array_equal(t_event, e_event):
        i = int(np.flatnonzero(t_event != e_event)[0])
        raise RawFormatError(f"{source}: truth rows do not match the events: entry {start + i} has truth.event "
                             f"{t_event[i]} and events.event {e_event[i]}")


def check_spill_counts_of(seen, counts, spills: dict, source) -> None:
    """The events of each spill of a file (``seen``: the spill numbers of its events, ascending and
    once each; ``counts``: the events of each) against its ``spills`` tree: each spill listed once,
    every event's spill listed, and no spill with more events than its ``n_triggered`` says were
    written; a :class:`RawFormatError` naming the file, the spill and both counts otherwise (the
    run would otherwise find it only after processing the file, when the exposure is settled, too
    late to skip it)."""
    seen, counts = np.asarray(seen, np.int64), np.asarray(counts, np.int64)
    numbers = np.asarray(spills["spill"]).astype(np.int64)
    written = np.asarray(spills["n_triggered"]).astype(np.int64)
    listed, twice = np.unique(numbers, return_counts=True)
    if (twice > 1).any():
        raise RawFormatError(f"{source}: the spills tree lists spill {int(listed[twice > 1][0])} "
                             f"{int(twice[twice > 1][0])} times; expected one entry per spill")
    unknown = seen[~np.isin(seen, numbers)]
    if unknown.size:
        raise RawFormatError(f"{source}: events of spill(s) {unknown[:5].tolist()} that the spills tree does not list")
    order = np.argsort(numbers)
    allowed = written[order][np.searchsorted(numbers[order], seen)]  # (every seen spill is listed)
    if (counts > allowed).any():
        i = int(np.flatnonzero(counts > allowed)[0])
        raise RawFormatError(f"{source}: spill {int(seen[i])} has {int(counts[i])} events in the events tree, but "
                             f"spills.n_triggered says {int(allowed[i])} were written")


def check_event_order(event, source, start: int = 0, previous: int | None = None) -> None:
    """Event numbers ``event`` of entries ``start...`` strictly increasing, and above
    ``previous`` (the event number of entry ``start - 1``, read before: the chunk before);
    a :class:`RawFormatError` naming the file, the entry and both numbers otherwise."""
    event = np.asarray(event)
    if previous is not None and len(event):
        event, start = np.concatenate([np.asarray([previous], event.dtype), event]), start - 1
    step = np.diff(event)
    if (step <= 0).any():
        i = int(np.flatnonzero(step <= 0)[0])
        raise RawFormatError(f"{source}: branch events.event of entry {start + i + 1} is {event[i + 1]}, after "
                             f"{event[i]} at entry {start + i}; expected event numbers strictly increasing "
                             f"({'duplicated' if step[i] == 0 else 'out of order'})")


def event_branches() -> list[str]:
    """Names of all branches of the ``events`` tree (as written by uproot)."""
    names = list(EVENT_SCALARS)
    for c, fields in COLLECTIONS.items():
        names += [f"n{c}"] + [f"{c}_{f}" for f in fields]
    return names + ["ncalo_adc", "calo_adc"]


def assemble_events(arrays: ak.Array, source="<arrays>") -> ak.Array:
    """Turn the flat branches of ``events`` into nested collections.

    ``arrays`` has the branch names of the file (``calo_det``, ``calo_adc``, ...).  Each
    collection is built as one ``ListOffsetArray`` of a ``RecordArray`` of its branches'
    contents, after checking that the branches' offsets agree (a :class:`RawFormatError`
    naming the branch and the event if not), the calo samples as a ``RegularArray`` of 32;
    the same type, form and values as ``ak.zip`` of the branches, 0.3 ms for 940 events
    instead of 3.4 (docs/performance.md, "Per-file overhead", fourth pass;
    ``tests/test_raw_assemble.py``).
    Arrays with behaviours or attrs of their own (coffea's NanoEvents) take ``ak.zip``.
    Arrays read from a data file (:data:`DATA_PARAMETER`) give events marked as data too.
    """
    if is_data_events(arrays):
        return mark_data_events(_assemble(arrays, source))
    return _assemble(arrays, source)


def _assemble(arrays, source) -> ak.Array:
    if isinstance(arrays, ak.Array) and (arrays.behavior or arrays.attrs):
        return _assemble_zipped(arrays, source)
    fields_of = _field_layouts(arrays)
    out = {k: fields_of(k) for k in EVENT_SCALARS}
    for c, fields in COLLECTIONS.items():
        branches = [f"{c}_{f}" for f in fields]
        offsets, contents = _agreeing_lists(fields_of, branches, source)
        if offsets is None:  # a layout other than plain lists of numbers
            return _assemble_zipped(arrays, source)
        n = int(offsets[-1])
        if c == "calo":
            adc_offsets, adc = _agreeing_lists(fields_of, ["calo_adc"], source)
            if adc_offsets is None:
                return _assemble_zipped(arrays, source)
            if not np.array_equal(adc_offsets, offsets * N_SAMPLES):
                raise RawFormatError(f"{source}: calo_adc does not hold {N_SAMPLES} samples per calo digit")
            contents.append(ak.contents.RegularArray(ak.contents.NumpyArray(adc[0][:n * N_SAMPLES]), N_SAMPLES,
                                                     zeros_length=n))
            fields = [*fields, "adc"]
        content = ak.contents.RecordArray([ak.contents.NumpyArray(x[:n]) if isinstance(x, np.ndarray) else x
                                           for x in contents], list(fields), length=n)
        out[c] = ak.contents.ListOffsetArray(ak.index.Index64(offsets), content)
    return _event_record(out)


def _field_layouts(arrays):
    """``name -> layout`` of the fields of ``arrays`` (a record array or a dict of arrays);
    a plain ``RecordArray``'s fields without awkward's high-level projection (~30 us each)."""
    layout = arrays.layout if isinstance(arrays, ak.Array) else None
    if isinstance(layout, ak.contents.RecordArray):
        return layout.content
    return lambda name: ak.to_layout(arrays[name])


def _event_record(out: dict) -> ak.Array:
    """``ak.zip(out, depth_limit=1)`` as one ``RecordArray`` of the fields' layouts (``ak.zip``
    itself, and its error, for fields of different lengths)."""
    layouts = list(out.values())
    if len({layout.length for layout in layouts}) != 1:
        return ak.zip({k: ak.Array(v) for k, v in out.items()}, depth_limit=1)
    return ak.Array(ak.contents.RecordArray(layouts, list(out), length=layouts[0].length))


def _agreeing_lists(fields_of, branches: list[str], source):
    """``(offsets from 0, [flat numpy contents])`` of the jagged ``branches``, or ``(None,
    None)`` if one is not a plain list of numbers; a :class:`RawFormatError` naming the
    branch whose offsets differ from those of the first."""
    offsets, contents = None, []
    for b in branches:
        layout = fields_of(b)
        if isinstance(layout, ak.contents.IndexedArray):
            layout = layout.project()
        if isinstance(layout, ak.contents.ListArray):
            layout = layout.to_ListOffsetArray64(True)
        if not isinstance(layout, ak.contents.ListOffsetArray) or layout.parameters:
            return None, None
        inner = layout.content
        if not isinstance(inner, ak.contents.NumpyArray) or inner.parameters or inner.data.ndim != 1:
            return None, None
        here, data = np.asarray(layout.offsets.data, dtype=np.int64), inner.data
        if here[0] != 0:
            here, data = here - here[0], data[here[0]:]
        if offsets is None:
            offsets = here
        elif len(here) != len(offsets) or not np.array_equal(here, offsets):
            raise RawFormatError(f"{source}: branch {b!r} does not have the entries per event of "
                                 f"{branches[0]!r} (event {_first_difference(offsets, here)} of the chunk; "
                                 "corrupt file?)")
        contents.append(data)
    return offsets, contents


def _first_difference(a: np.ndarray, b: np.ndarray) -> int:
    """The first event whose list lengths differ between offsets ``a`` and ``b``."""
    n = min(len(a), len(b)) - 1
    diff = np.flatnonzero(np.diff(a[:n + 1]) != np.diff(b[:n + 1]))
    return int(diff[0]) if len(diff) else max(n, 0)


def _assemble_zipped(arrays, source) -> ak.Array:
    """:func:`assemble_events` by ``ak.zip`` (arrays with behaviours or other layouts)."""
    out = {k: arrays[k] for k in EVENT_SCALARS}
    for c, fields in COLLECTIONS.items():
        out[c] = ak.zip({f: arrays[f"{c}_{f}"] for f in fields})
    counts = ak.num(arrays["calo_det"], axis=1)
    adc_counts = ak.num(arrays["calo_adc"], axis=1)
    if not np.array_equal(np.asarray(adc_counts), np.asarray(counts) * N_SAMPLES):
        raise RawFormatError(f"{source}: calo_adc does not hold {N_SAMPLES} samples per calo digit")
    flat = np.asarray(ak.flatten(arrays["calo_adc"])).reshape(-1, N_SAMPLES)
    samples = ak.unflatten(ak.from_numpy(flat, regulararray=True), np.asarray(counts))
    out["calo"] = ak.with_field(out["calo"], samples, "adc")
    return ak.zip(out, depth_limit=1)


def _read_flat(file, name, branches, path, start=None, stop=None):
    try:
        tree = file[name]
    except Exception:
        raise RawFormatError(f"{path}: has no tree {name!r}") from None
    branches = list(tree.keys()) if branches is None else list(branches)
    missing = [b for b in branches if b not in tree.keys()]
    if missing:
        raise RawFormatError(f"{path}: tree {name!r} lacks branch(es) {', '.join(missing)}")
    try:
        return tree.arrays(branches, entry_start=start, entry_stop=stop, library="np")
    except Exception as exc:
        raise connection_failure(path, exc) or RawFormatError(
            f"{path}: cannot read tree {name!r}: {type(exc).__name__}: {exc}") from None


def _trees(has_truth: bool) -> tuple[str, ...]:
    return ("events", "spills", "truth") if has_truth else ("events", "spills")


def data_branch_types(has_truth: bool) -> dict[str, dict[str, np.dtype]]:
    """The numpy type of every branch of every data tree (jagged branches: of their values)."""
    events = {k: np.dtype(t) for k, t in EVENT_SCALARS.items()}
    for c, fields in COLLECTIONS.items():
        events[f"n{c}"] = np.dtype(np.int32)
        events.update({f"{c}_{f}": np.dtype(t) for f, t in fields.items()})
    events["ncalo_adc"], events["calo_adc"] = np.dtype(np.int32), np.dtype(np.int16)
    types = {"events": events, "spills": {k: np.dtype(t) for k, t in SPILL_BRANCHES.items()}}
    if has_truth:
        types["truth"] = {k: np.dtype(t) for k, t in TRUTH_BRANCHES.items()}
    return types


def branch_types(has_truth: bool, version: int = FORMAT_VERSION) -> dict[str, dict[str, np.dtype]]:
    """The numpy type of every branch of every tree of a file of format ``version``
    (version 2 adds a ``<tree>_sums`` tree per data tree)."""
    types = data_branch_types(has_truth)
    if version == 2:
        for tree in list(types):
            types[sums_tree(tree)] = {**{b: np.dtype(np.int64) for b in BOUNDS},
                                      **{b: np.dtype(np.uint64) for b in types[tree]}}
    return types


def _objects(has_truth: bool, version: int) -> set[str]:
    """Every key a file of this version holds."""
    return (set(branch_types(has_truth, version)) | {META_KEY} | ({SUMS_KEY} if version >= 3 else set())
            | ({BASKETS_KEY} if version >= 4 else set()))


def _check_unexpected(keys, meta: dict, path) -> None:
    """No object the metadata does not imply (a tree added to a file, e.g. ``truth`` to data)."""
    expected = _objects(bool(meta.get("has_truth")), int(meta["format_version"]))
    unexpected = sorted(set(keys) - expected)
    if unexpected:
        raise RawFormatError(f"{path}: unexpected object(s) {', '.join(map(repr, unexpected))}: the "
                             f"metadata says the file holds {', '.join(sorted(expected - {META_KEY}))} "
                             "(modified file?)")


def _check_present(keys, meta: dict, path) -> None:
    """Every tree the metadata implies is there, and the metadata counts the entries of each."""
    has_truth, version = bool(meta.get("has_truth")), int(meta["format_version"])
    for tree in branch_types(has_truth, version):
        if tree not in keys:
            raise RawFormatError(f"{path}: has no tree {tree!r}")
    if version >= 3 and SUMS_KEY not in keys:
        raise RawFormatError(f"{path}: has no '{SUMS_KEY}' checksum table")
    entries = meta.get("entries") or {}
    if set(entries) != set(_trees(has_truth)):
        raise RawFormatError(f"{path}: metadata 'entries' lists {sorted(entries)}, expected "
                             f"{sorted(_trees(has_truth))}")


def _check_tree(f, tree: str, types: dict[str, np.dtype], meta: dict, path):
    """The TTree ``tree`` of ``f``, its entries (data trees) and branch types checked."""
    t = f[tree]
    if not isinstance(t, uproot.TTree):
        raise RawFormatError(f"{path}: {tree!r} is a {type(t).__name__.removeprefix('Model_')}, expected a TTree")
    entries = meta.get("entries") or {}
    if tree in entries and int(t.num_entries) != int(entries[tree]):
        raise RawFormatError(f"{path}: tree {tree!r} has {t.num_entries} entries, the metadata says "
                             f"{entries[tree]} (corrupt file)")
    _check_branches(tree, {b.name: b.interpretation for b in t.branches}, types, path,
                    {b.name: isinstance(b.interpretation, uproot.interpretation.jagged.AsJagged) for b in t.branches})
    return t


#: the branches of ``events`` that hold a list per entry (the digits' fields and samples); every other
#: branch of the format holds one number per entry
LIST_BRANCHES = frozenset({f"{c}_{f}" for c, fields in COLLECTIONS.items() for f in fields} | {"calo_adc"})


def _check_branches(tree: str, present: dict, types: dict[str, np.dtype], path, lists: dict) -> None:
    """Every branch of ``types`` in ``present`` (name -> uproot interpretation, or the stored numpy
    type of a basket map) with the format's kind and size of number, and a list per entry where the
    format has one (``lists``: name -> whether the branch is stored as a list per entry)."""
    missing = [b for b in types if b not in present]
    if missing:
        raise RawFormatError(f"{path}: tree {tree!r} lacks branch(es) {', '.join(missing)}")
    for name, want in types.items():
        stored = present[name]
        got = np.dtype(stored) if isinstance(stored, str | np.dtype) else _value_dtype(stored)
        if got is None or got.kind != want.kind or got.itemsize != want.itemsize:
            raise RawFormatError(f"{path}: branch {tree}.{name} holds {got.name if got is not None else stored}, "
                                 f"expected {want.name}")
        is_list = tree == "events" and name in LIST_BRANCHES
        if bool(lists[name]) != is_list:
            raise RawFormatError(f"{path}: branch {tree}.{name} holds {'a list of ' if lists[name] else 'one '}"
                                 f"{got.name} per entry, expected {'a list of ' if is_list else 'one '}{want.name} "
                                 "per entry")


def _value_dtype(interpretation) -> np.dtype | None:
    inner = getattr(interpretation, "content", interpretation)
    dtype = getattr(inner, "to_dtype", None)
    return np.dtype(dtype) if dtype is not None else None


def _checked_string(f, key: str, what: str, checksum, path) -> str:
    """The string object ``key`` of ``f`` (``what``: its name in messages), checked against the
    metadata's ``checksum`` of it."""
    try:
        text = str(f[key])
    except Exception as exc:
        raise connection_failure(path, exc) or RawFormatError(
            f"{path}: unreadable '{key}' {what} (truncated or corrupt file?): {type(exc).__name__}: {exc}") from None
    if table_checksum(text) != checksum:
        raise RawFormatError(f"{path}: {what} mismatch: '{key}' is corrupt or was edited")
    return text


def _read_tables(f, meta: dict, path) -> dict[str, Blocks]:
    """The block tables of a version-3 file, checked against the metadata's ``sums_checksum``."""
    text = _checked_string(f, SUMS_KEY, "checksum table", meta.get("sums_checksum"), path)
    types = data_branch_types(bool(meta.get("has_truth")))
    return decode_table(text, meta["entries"], {t: list(b) for t, b in types.items()}, path)


def _read_maps(f, keys, meta: dict, path) -> dict[str, TreeBaskets]:
    """The basket maps of a file written with them (``baskets_checksum`` in the metadata), checked
    against that checksum, the entries and the format's branches and types; {} for a file without."""
    if int(meta["format_version"]) < 4:
        return {}
    if meta.get("baskets_checksum") is None:
        raise RawFormatError(f"{path}: format version {meta['format_version']} without 'baskets_checksum' in its "
                             f"metadata (a writer's error)")
    if BASKETS_KEY not in keys:
        raise RawFormatError(f"{path}: has no '{BASKETS_KEY}' basket map, which its metadata lists")
    text = _checked_string(f, BASKETS_KEY, "basket map", meta["baskets_checksum"], path)
    try:
        maps = json.loads(text)
        entries = meta.get("entries")
        if not isinstance(maps, dict) or not isinstance(entries, dict) or not set(maps) <= set(entries):
            raise ValueError(f"trees {sorted(maps) if isinstance(maps, dict) else maps!r}, entries of {entries!r}")
    except ValueError as exc:
        raise RawFormatError(f"{path}: unreadable '{BASKETS_KEY}' basket map: {exc}") from None
    types = data_branch_types(bool(meta.get("has_truth")))
    return {tree: _checked_map(TreeBaskets.from_dict(tree, d, int(meta["entries"][tree]), path), types[tree], path)
            for tree, d in maps.items()}


def _checked_map(baskets: TreeBaskets, types: dict[str, np.dtype], path) -> TreeBaskets:
    """A tree's basket map with the branches and types of the format (as :func:`_check_tree` checks
    a tree's header)."""
    _check_branches(baskets.tree, dict(zip(baskets.names, baskets.dtypes, strict=True)), types, path,
                    dict(zip(baskets.names, baskets.jagged, strict=True)))
    return baskets


def open_raw(path, *, setup: str | None = None, structure: bool | tuple[str, ...] = True) -> RawFile:
    """Open and check a raw file: existence, format version, metadata, objects, checksum
    tables, setup, and (``structure``) the trees' branches and entries.

    ``path`` is a local path or a URL that fsspec reads (``root://``, ``https://``,
    ``s3://``; see :mod:`na64reco.io.location`).  ``RawFile.path`` is a ``Path`` for a
    local file and the URL string for a remote one.

    ``structure``: True checks every tree now; False, or a tuple of the trees to check now,
    checks the others when they are first used (reading a tree's header costs ~2-8 ms), for
    readers that use some trees only (the runner's check before a run, the processors).
    Either way nothing is read from a tree whose structure was not checked, and every read
    is verified against the content checksums.
    """
    path = path if is_url(path) else Path(path)
    size = file_info(path).size  # raises "<path>: file not found"
    if size == 0:
        raise RawFormatError(f"{path}: file is empty (0 bytes)")
    try:
        f = uproot.open(uproot_source(path), array_cache=None)  # no cache: every read is verified, then the caller's
        keys = f.keys(cycle=False)
    except Exception as exc:
        raise connection_failure(path, exc) or RawFormatError(
            f"{path}: not a readable ROOT file (truncated or corrupt?): {exc}") from None
    end = getattr(f.file, "fEND", None)
    if isinstance(end, (int, np.integer)) and size < end:  # (cut short after its data: the records at its end)
        f.close()
        raise RawFormatError(f"{path}: file is truncated: {size} bytes, its header says {int(end)}")
    try:
        meta = _read_meta(f, keys, path)
        if setup is not None and meta.get("setup") != setup:
            raise SetupMismatch(f"{path}: was written for setup {meta.get('setup')!r}, not {setup!r}")
        _check_unexpected(keys, meta, path)
        raw = RawFile(path, meta, -1, f)
        trees = branch_types(raw.has_truth, raw.version)
        now = tuple(trees) if structure is True else tuple(structure or ())
        raw._baskets.update(_read_maps(f, keys, meta, path))  # (checked: a tree with one needs no header)
        for tree in now:
            if tree not in keys:
                raise RawFormatError(f"{path}: has no tree {tree!r}")
            if tree not in raw._baskets:
                raw.tree(tree)
        _check_present(keys, meta, path)
        raw.n_events = int(meta["entries"]["events"])
        if raw.version >= 3:
            raw._blocks.update(_read_tables(f, meta, path))
    except (RawFormatError, SetupMismatch):
        f.close()
        raise
    except Exception as exc:  # damaged TTree headers and the like
        f.close()
        raise RawFormatError(f"{path}: unreadable tree structure: {type(exc).__name__}: {exc}") from None
    return raw


def declared_meta(path) -> dict | None:
    """The metadata ``path`` declares, read *without any check* (no checksum, format version or
    size), or None if it cannot be read: what a file refused by :func:`open_raw` (truncated,
    say) says it holds, for naming its dataset in a report.  Never use it to read data."""
    path = path if is_url(path) else Path(path)
    try:
        with uproot.open(uproot_source(path), array_cache=None) as f:
            meta = json.loads(str(f[META_KEY]))
    except Exception:
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME else None


def _read_meta(f, keys, path) -> dict:
    """The file's metadata, its format version and self-checksum checked."""
    if META_KEY not in keys:
        raise RawFormatError(f"{path}: no '{META_KEY}' metadata: not an na64reco raw file "
                             "(or truncated before it was closed)")
    try:
        meta = json.loads(str(f[META_KEY]))
    except Exception as exc:
        raise RawFormatError(f"{path}: unreadable '{META_KEY}' metadata: {exc}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or version not in READ_VERSIONS:
        meta = meta if isinstance(meta, dict) else {}
        old = " (written before content checksums: re-simulate it)" if meta.get("format_version") == 1 else ""
        raise RawFormatError(
            f"{path}: format {meta.get('format')!r} version {meta.get('format_version')!r}{old}; this "
            f"na64reco reads {FORMAT_NAME!r} versions {', '.join(map(str, READ_VERSIONS))}"
        )
    if meta.get("checksum") != meta_checksum(meta):
        raise RawFormatError(f"{path}: metadata checksum mismatch: the '{META_KEY}' metadata is corrupt or was edited")
    return meta
