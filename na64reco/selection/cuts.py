"""Evaluate a :class:`~na64reco.selection.schema.Selection` on reco records.

:func:`cut_masks` turns each cut into a boolean mask (NaN fails every cut);
:func:`build_selection` keeps them by name (:class:`CutMasks`, the masks a coffea
``PackedSelection`` would give, in plain numpy);
:class:`CutflowTable` is the mergeable cut-flow (events and weighted sums with their
errors after each cut, and the N-1 counts) that processors return.

Blinding (:mod:`na64reco.selection.blinding`) is applied *between* :func:`cut_masks`
and everything else; functions here never decide what may be shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np

from na64reco.errors import NA64Error
from na64reco.selection.schema import Cut, Region, Selection
from na64reco.summary import BLINDED, cutflow_lines, nminusone_lines

if TYPE_CHECKING:  # (an annotation only: importing coffea here cost every process ~0.3 s, a plot worker too)
    from coffea.analysis_tools import PackedSelection

BOX = "signal_box"


def column(reco, variable: str) -> np.ndarray:
    """A reco field as numpy (2-D for per-module variables); clear error if missing.
    ``reco``: a reco record array or a :class:`Columns` of one (its cached column)."""
    if isinstance(reco, Columns):
        return reco[variable]
    if variable not in reco.fields:
        raise NA64Error(f"reco record has no field {variable!r} (has: {', '.join(reco.fields)})")
    flat = _numpy_field(reco, variable)
    if flat is not None:
        return flat
    arr = reco[variable]
    if arr.ndim == 1:
        return np.asarray(ak.to_numpy(arr))
    if not isinstance(arr.type.content, ak.types.RegularType):  # var -> pad with NaN
        width = int(ak.max(ak.num(arr, axis=1), initial=0))
        arr = ak.fill_none(ak.pad_none(arr, width, clip=True), np.nan)
    return np.asarray(ak.to_numpy(arr), dtype=float)


def _numpy_field(reco, variable: str) -> np.ndarray | None:
    """The field's numpy buffer when the record array holds it as one (a plain numpy
    field, or a fixed-size list of one: per-module variables): what :func:`column`
    gives, without awkward's field projection and conversion (~50 us per column, ~60
    columns per chunk).  None for any other layout (sliced records, variable-length or
    option fields), which :func:`column` converts through awkward."""
    layout = getattr(reco, "layout", None)
    if not isinstance(layout, ak.contents.RecordArray) or layout.backend.name != "cpu":
        return None
    n, field = layout.length, layout.content(variable)
    if isinstance(field, ak.contents.NumpyArray) and field.data.ndim == 1:
        return np.asarray(field.data)[:n]
    if (isinstance(field, ak.contents.RegularArray) and isinstance(field.content, ak.contents.NumpyArray)
            and field.content.data.ndim == 1):
        return np.asarray(np.asarray(field.content.data)[:n * field.size].reshape(n, field.size), dtype=float)
    return None


class Columns:
    """Numpy columns of a reco record array (:func:`column`), each converted once and kept.

    Accepted wherever a reco array is (:func:`cut_masks`, :func:`region_mask`, the
    blinding): a chunk's columns are converted from awkward once, not once per use
    (docs/performance.md, "Per-chunk fixed cost").  The cached arrays are shared: callers
    must not modify them in place."""

    def __init__(self, reco: ak.Array, cols: dict[str, np.ndarray] | None = None, *,
                 taken_from: tuple[ak.Array, np.ndarray] | None = None):
        self.reco = reco
        self._cols: dict[str, np.ndarray] = cols if cols is not None else {}
        self._taken_from = taken_from  # (records, mask): ``reco`` is ``records[mask]`` (:meth:`take`)

    @classmethod
    def of(cls, reco) -> Columns:
        return reco if isinstance(reco, cls) else cls(reco)

    @property
    def fields(self) -> list[str]:
        return self.reco.fields

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cols:
            if self.reco is None:  # columns given as a dict only (e.g. a tracking stage's output)
                raise NA64Error(f"reco columns have no field {name!r} (has: {', '.join(self._cols)})")
            flat = None
            if self._taken_from is not None and name in self.reco.fields:  # numeric or fixed-size field:
                records, keep = self._taken_from  # its buffer sliced (``reco[mask]`` is an indexed view
                flat = _numpy_field(records, name)  # that awkward would convert field by field)
            self._cols[name] = column(self.reco, name) if flat is None else flat[keep]
        return self._cols[name]

    def __len__(self) -> int:
        return len(self.reco)

    def take(self, keep: np.ndarray) -> Columns:
        """The columns of the events where ``keep`` (a boolean mask) is True: the 1-D columns
        converted so far are sliced in numpy, the others, when first asked for, sliced from
        the records' numpy buffer (numeric and fixed-size fields) or converted from
        ``reco[keep]``; the same values as converting ``reco[keep]`` (a variable-length column
        is padded to the widest event *of the kept ones*, so it is converted again)."""
        if keep.all():
            return self
        return Columns(self.reco[keep], {k: v[keep] for k, v in self._cols.items() if v.ndim == 1},
                       taken_from=(self.reco, keep))


def _in_range(x: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    ok = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, bool)
    if lo is not None:
        ok &= x >= lo
    if hi is not None:
        ok &= x < hi
    return ok


def cut_mask(reco: ak.Array, cut: Cut) -> np.ndarray:
    """Boolean mask of the events passing ``cut``."""
    x = column(reco, cut.variable)
    if cut.type == "equal":
        return x == cut.value
    if cut.type == "bits":
        return (x.astype(np.uint64) & np.uint64(cut.bits)) == np.uint64(cut.bits)
    if cut.type == "range":
        return _in_range(x, cut.min, cut.max)
    # each_in_range: every (selected) module in the window; no module -> fail
    if x.ndim == 1:
        x = x[:, None]
    if cut.modules is not None:
        if max(cut.modules) >= x.shape[1]:
            raise NA64Error(f"cut {cut.name!r}: module {max(cut.modules)} requested but "
                            f"{cut.variable} has {x.shape[1]} modules")
        x = x[:, list(cut.modules)]
    if x.shape[1] == 0:
        return np.zeros(len(x), bool)
    return np.all(_in_range(x, cut.min, cut.max), axis=1)


def failed_mask(reco: ak.Array, cut: Cut) -> np.ndarray:
    """Events that fail ``cut`` by a measured value: what a sideband's ``fails: <cut>`` takes.  A NaN
    (not reconstructed) fails every cut but is no measurement beyond the cut, so it is not in the
    sideband: an event without a VETO measurement is no "VETO failed" event (and is hidden on data,
    :func:`na64reco.selection.blinding.check_sidebands`)."""
    failed = ~cut_mask(reco, cut)
    if cut.type in ("range", "each_in_range"):
        x = column(reco, cut.variable)
        if x.dtype.kind == "f":
            if x.ndim == 2:
                x = x[:, list(cut.modules)] if cut.modules is not None else x
                failed &= np.all(np.isfinite(x), axis=1)
            else:
                failed &= np.isfinite(x)
    return failed


def cut_masks(reco: ak.Array, selection: Selection) -> dict[str, np.ndarray]:
    """Mask of each cut, in the selection's order."""
    return {c.name: cut_mask(reco, c) for c in selection.cuts}


def region_mask(reco: ak.Array, region: Region) -> np.ndarray:
    """Events inside a region's range (not including the cuts)."""
    return _in_range(column(reco, region.variable), region.min, region.max)


def outside_mask(reco: ak.Array, region: Region) -> np.ndarray:
    """Events provably outside a region: a NaN value is *not* provably outside."""
    x = column(reco, region.variable).astype(float)
    out = np.zeros(len(x), bool)
    if region.min is not None:
        out |= x < region.min
    if region.max is not None:
        out |= x >= region.max
    return out


class CutMasks:
    """The boolean mask of each cut (and the signal box), in order, by name: what the
    processors ask of a selection (:meth:`all`, and the cut-flow and N-1 masks of
    :meth:`CutflowTable.from_selection`), in plain numpy.  It gives the same masks as a
    coffea ``PackedSelection`` of the same cuts (``tests/test_selection.py``) at a tenth of
    its cost per chunk (no packing into bit words, no awkward conversion of each mask:
    docs/performance.md, "Per-chunk fixed cost")."""

    def __init__(self, masks: dict[str, np.ndarray] | None = None):
        self._masks: dict[str, np.ndarray] = {}
        for name, m in (masks or {}).items():
            self.add(name, m)

    def add(self, name: str, mask: np.ndarray) -> None:
        m = np.asarray(mask)
        if m.dtype != bool or m.ndim != 1:
            raise NA64Error(f"selection mask {name!r} must be a 1-D boolean array, got {m.dtype} of shape {m.shape}")
        if name in self._masks:
            raise NA64Error(f"selection mask {name!r} added twice")
        if self._masks and len(m) != len(self):
            raise NA64Error(f"selection mask {name!r} has {len(m)} entries, the others {len(self)}")
        self._masks[name] = m

    @property
    def names(self) -> list[str]:
        return list(self._masks)

    def __len__(self) -> int:
        return len(next(iter(self._masks.values()))) if self._masks else 0

    def all(self, *names: str) -> np.ndarray:
        """Events passing every cut in ``names``; with no names, every cut of the selection
        (as ``PackedSelection.all()``, so that the outputs stay what they were)."""
        return self._and(names or self.names)

    def _and(self, names) -> np.ndarray:
        out = np.ones(len(self), bool)
        for name in names:
            out &= self._mask(name)
        return out

    def _mask(self, name: str) -> np.ndarray:
        if name not in self._masks:
            raise NA64Error(f"selection has no cut {name!r} (has: {', '.join(self._masks)})")
        return self._masks[name]

    def cutflow_masks(self, *names: str) -> list[np.ndarray]:
        """Events passing the first 1, 2, ... ``len(names)`` cuts of ``names``."""
        running, out = np.ones(len(self), bool), []
        for name in names:
            running = running & self._mask(name)
            out.append(running)
        return out

    def nminusone_masks(self, *names: str) -> list[np.ndarray]:
        """For each cut of ``names``: events passing all the others (:meth:`all`)."""
        return [self.all(*[n for n in names if n != name]) for name in names]


def build_selection(masks: dict[str, np.ndarray], box: np.ndarray) -> CutMasks:
    """The selection's masks: every cut and, last, the signal box."""
    sel = CutMasks(masks)
    sel.add(BOX, box)
    return sel


# ----------------------------------------------------------------------------------------
@dataclass
class CutflowTable:
    """Cut-flow and N-1 counts, mergeable across chunks (``a + b``).

    ``labels`` are ``initial``, each cut, and ``signal_box``.  For every label:
    ``n`` (events), ``sumw`` and ``sumw2`` (weighted sum and sum of squared weights; the
    error of the weighted sum is ``sqrt(sumw2)``) after that cut and all before it.
    ``nm1_*`` hold the N-1 counts: all cuts (and the box) except that one.
    ``blinded`` marks a table with data: its signal-box row (and the N-1 row with every
    cut) is reported as ``"blinded"``, never as a number.
    """

    labels: list[str]
    n: np.ndarray
    sumw: np.ndarray
    sumw2: np.ndarray
    nm1_n: np.ndarray
    nm1_sumw: np.ndarray
    nm1_sumw2: np.ndarray
    blinded: bool = False
    weighted: bool = False
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_selection(cls, sel: CutMasks | PackedSelection, cuts: list[str], weights: np.ndarray | None,
                       *, blinded: bool) -> CutflowTable:
        """From the masks of :func:`build_selection` (or a coffea ``PackedSelection`` of
        the same cuts and the box)."""
        names = [*cuts, BOX]
        if isinstance(sel, CutMasks):
            w = np.ones(len(sel)) if weights is None else np.asarray(weights, dtype=float)
            flow_masks = [np.ones(len(w), bool), *sel.cutflow_masks(*names)]
            nm1_masks = sel.nminusone_masks(*names)
        else:
            w = np.ones(len(sel._data)) if weights is None else np.asarray(weights, dtype=float)
            flow = sel.cutflow(*names).result()
            nm1 = sel.nminusone(*names).result()
            flow_masks = [np.ones(len(w), bool), *flow.maskscutflow]
            nm1_masks = nm1.masks[:-1]  # N - each cut; the last (all) is the cut-flow's last row
        return cls(
            labels=["initial", *names],
            n=np.array([np.count_nonzero(m) for m in flow_masks], dtype=np.int64),
            sumw=np.array([w[m].sum() for m in flow_masks]),
            sumw2=np.array([(w[m] ** 2).sum() for m in flow_masks]),
            nm1_n=np.array([np.count_nonzero(m) for m in nm1_masks], dtype=np.int64),
            nm1_sumw=np.array([w[m].sum() for m in nm1_masks]),
            nm1_sumw2=np.array([(w[m] ** 2).sum() for m in nm1_masks]),
            blinded=blinded, weighted=weights is not None,
        )

    def __add__(self, other: CutflowTable) -> CutflowTable:
        if self.labels != other.labels:
            raise NA64Error(f"cannot merge cut-flows with different cuts: {self.labels} vs {other.labels}")
        return CutflowTable(
            list(self.labels), self.n + other.n, self.sumw + other.sumw, self.sumw2 + other.sumw2,
            self.nm1_n + other.nm1_n, self.nm1_sumw + other.nm1_sumw, self.nm1_sumw2 + other.nm1_sumw2,
            self.blinded or other.blinded, self.weighted or other.weighted, {**self.meta, **other.meta},
        )

    def rows(self) -> list[dict]:
        """The cut-flow as rows ``{cut, events, sumw, sumw_err, efficiency, cumulative}``.

        For a blinded table the signal-box row carries ``"blinded"`` in every number.
        """
        out = []
        for i, label in enumerate(self.labels):
            if self.blinded and label == BOX:
                out.append({"cut": label, "events": BLINDED, "sumw": BLINDED, "sumw_err": BLINDED,
                            "efficiency": BLINDED, "cumulative": BLINDED})
                continue
            prev = self.sumw[i - 1] if i else self.sumw[0]
            out.append({
                "cut": label, "events": int(self.n[i]), "sumw": float(self.sumw[i]),
                "sumw_err": float(np.sqrt(self.sumw2[i])),
                "efficiency": float(self.sumw[i] / prev) if prev else float("nan"),
                "cumulative": float(self.sumw[i] / self.sumw[0]) if self.sumw[0] else float("nan"),
            })
        return out

    def nminusone_rows(self) -> list[dict]:
        """N-1 rows ``{cut, events, sumw, sumw_err}``: events passing all but ``cut``."""
        out = []
        for i, label in enumerate(self.labels[1:]):
            out.append({"cut": label, "events": int(self.nm1_n[i]), "sumw": float(self.nm1_sumw[i]),
                        "sumw_err": float(np.sqrt(self.nm1_sumw2[i]))})
        if self.blinded:
            out.append({"cut": "none (all cuts and box)", "events": BLINDED, "sumw": BLINDED,
                        "sumw_err": BLINDED})
        else:
            out.append({"cut": "none (all cuts and box)", "events": int(self.n[-1]),
                        "sumw": float(self.sumw[-1]), "sumw_err": float(np.sqrt(self.sumw2[-1]))})
        return out

    def to_dict(self) -> dict:
        return {"blinded": self.blinded, "weighted": self.weighted, "cutflow": self.rows(),
                "nminusone": self.nminusone_rows()}

    def format(self, title: str = "") -> str:
        """A text table of the cut-flow (events, weighted sum +- error, efficiencies) and N-1."""
        lines = [title] if title else []
        lines += cutflow_lines(self.rows())
        lines.append("N-1 (all cuts but one):")
        lines += nminusone_lines(self.nminusone_rows())
        return "\n".join(lines)
