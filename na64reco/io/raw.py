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
``na64raw`` (a TObjString)
    JSON metadata: format name and version, setup, run, whether truth is present,
    process codes, producer.

The samples are stored flat (not as ``int16[][32]``) because fixed-size jagged
branches written by uproot did not read back correctly (checked with uproot 5.7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from na64reco import __version__
from na64reco.errors import RawFormatError, SetupMismatch
from na64reco.io.location import connection_failure, file_info, is_url, uproot_source

FORMAT_NAME = "na64raw"
FORMAT_VERSION = 1
META_KEY = "na64raw"
N_SAMPLES = 32

TRIGGER_BITS = {"physics": 1, "random": 2, "calibration": 4}

#: Truth process codes (``truth.process``); the names are also stored in the file metadata.
PROCESSES = {
    "beam": 0,          # beam lepton, no special interaction
    "signal": 1,        # dark bremsstrahlung X -> invisible
    "kdecay": 2,        # K -> mu nu in flight after the momentum station
    "pidecay": 3,       # pi -> mu nu in flight after the momentum station
    "hadron": 4,        # hadron in the beam interacting in the calorimeters
    "punchthrough": 5,  # hadron leaking through the HCAL
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


def jagged(counts: np.ndarray, **fields: np.ndarray) -> ak.Array:
    """Build a jagged record array from per-event ``counts`` and flat field arrays."""
    counts = np.asarray(counts, dtype=np.int64)
    rec = ak.zip({k: v for k, v in fields.items()}, depth_limit=1)
    return ak.unflatten(rec, counts)


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
                 compression=None):
        self.path = Path(path)
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
        n = len(out["run"])
        for name, fields in COLLECTIONS.items():
            counts = np.asarray(ev[f"n_{name}"], dtype=np.int64)
            if counts.shape != (n,):
                raise ValueError(f"n_{name} has shape {counts.shape}, expected ({n},)")
            out[name] = jagged(counts, **{f: np.asarray(ev[f"{name}_{f}"], dtype=t) for f, t in fields.items()})
        adc = np.asarray(ev["calo_adc"], dtype=np.int16).reshape(-1)
        out["calo_adc"] = ak.unflatten(adc, np.asarray(ev["n_calo"], dtype=np.int64) * N_SAMPLES)
        self._file["events"].extend(out)
        self.n_events += n

    def write_spills(self, spills: dict) -> None:
        if not self._trees_made:
            self._make_trees()
        self._file["spills"].extend({k: np.asarray(spills[k], dtype=t) for k, t in SPILL_BRANCHES.items()})

    def write_truth(self, truth: dict) -> None:
        if not self.has_truth:
            raise ValueError("this writer was opened with has_truth=False")
        if not self._trees_made:
            self._make_trees()
        self._file["truth"].extend({k: np.asarray(truth[k], dtype=t) for k, t in TRUTH_BRANCHES.items()})

    def close(self) -> None:
        if not self._trees_made:
            self._make_trees()
        self._file[META_KEY] = json.dumps(self.meta)
        self._file.close()

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
    """An opened, checked raw file.  Use :func:`open_raw`."""

    path: Path | str   # a Path, or the URL of a remote file
    meta: dict
    n_events: int
    has_truth: bool
    _file: object = field(repr=False, default=None)

    @property
    def setup(self) -> str:
        return self.meta["setup"]

    @property
    def run(self) -> int:
        return int(self.meta["run"])

    def events(self, entry_start: int | None = None, entry_stop: int | None = None) -> ak.Array:
        """Events as an awkward record array with ``calo.adc`` of shape (digits, 32)."""
        tree = self._file["events"]
        try:
            arrays = tree.arrays(entry_start=entry_start, entry_stop=entry_stop)
        except Exception as exc:  # uproot raises many types for damaged baskets
            raise connection_failure(self.path, exc) or RawFormatError(
                f"{self.path}: cannot read tree 'events': {exc}") from None
        return assemble_events(arrays, self.path)

    def spills(self) -> dict[str, np.ndarray]:
        return _read_flat(self._file, "spills", SPILL_BRANCHES, self.path)

    def truth(self, entry_start: int | None = None, entry_stop: int | None = None) -> dict[str, np.ndarray]:
        if not self.has_truth:
            raise RawFormatError(f"{self.path}: has no truth (a data-like file)")
        return _read_flat(self._file, "truth", TRUTH_BRANCHES, self.path, entry_start, entry_stop)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def event_branches() -> list[str]:
    """Names of all branches of the ``events`` tree (as written by uproot)."""
    names = list(EVENT_SCALARS)
    for c, fields in COLLECTIONS.items():
        names += [f"n{c}"] + [f"{c}_{f}" for f in fields]
    return names + ["ncalo_adc", "calo_adc"]


def assemble_events(arrays: ak.Array, source="<arrays>") -> ak.Array:
    """Turn the flat branches of ``events`` into nested collections.

    ``arrays`` has the branch names of the file (``calo_det``, ``calo_adc``, ...).
    """
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
    missing = [b for b in branches if b not in tree.keys()]
    if missing:
        raise RawFormatError(f"{path}: tree {name!r} lacks branch(es) {', '.join(missing)}")
    try:
        return tree.arrays(list(branches), entry_start=start, entry_stop=stop, library="np")
    except Exception as exc:
        raise connection_failure(path, exc) or RawFormatError(f"{path}: cannot read tree {name!r}: {exc}") from None


def open_raw(path, *, setup: str | None = None) -> RawFile:
    """Open and check a raw file: existence, ROOT structure, format version, branches, setup.

    ``path`` is a local path or a URL that fsspec reads (``root://``, ``https://``,
    ``s3://``; see :mod:`na64reco.io.location`).  ``RawFile.path`` is a ``Path`` for a
    local file and the URL string for a remote one.
    """
    path = path if is_url(path) else Path(path)
    if file_info(path).size == 0:  # raises "<path>: file not found"
        raise RawFormatError(f"{path}: file is empty (0 bytes)")
    try:
        f = uproot.open(uproot_source(path))
        keys = f.keys(cycle=False)
    except Exception as exc:
        raise connection_failure(path, exc) or RawFormatError(
            f"{path}: not a readable ROOT file (truncated or corrupt?): {exc}") from None
    if META_KEY not in keys:
        f.close()
        raise RawFormatError(f"{path}: no '{META_KEY}' metadata: not an na64reco raw file "
                             "(or truncated before it was closed)")
    try:
        meta = json.loads(str(f[META_KEY]))
    except Exception as exc:
        f.close()
        raise RawFormatError(f"{path}: unreadable '{META_KEY}' metadata: {exc}") from None
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        f.close()
        raise RawFormatError(
            f"{path}: format {meta.get('format')!r} version {meta.get('format_version')!r}; this "
            f"na64reco reads {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    if setup is not None and meta.get("setup") != setup:
        f.close()
        raise SetupMismatch(f"{path}: was written for setup {meta.get('setup')!r}, not {setup!r}")
    for tree in ("events", "spills"):
        if tree not in keys:
            f.close()
            raise RawFormatError(f"{path}: has no tree {tree!r}")
    present = set(f["events"].keys())
    missing = [b for b in event_branches() if b not in present]
    if missing:
        f.close()
        raise RawFormatError(f"{path}: tree 'events' lacks branch(es) {', '.join(missing)}")
    has_truth = bool(meta.get("has_truth")) and "truth" in keys
    return RawFile(path, meta, int(f["events"].num_entries), has_truth, f)
