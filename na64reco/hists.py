"""Histograms filled chunk by chunk as numpy sums, turned into ``hist.Hist`` once merged.

A processor used to book its ~30 ``hist.Hist`` afresh for every chunk (~60 us each:
~2 ms per chunk, as much as filling them) and coffea merged them chunk by chunk.
:class:`HistSums` keeps, for one histogram, the sum of weights and the sum of squared
weights of every bin (flow bins included) as two numpy arrays, next to an empty booked
template (:class:`HistTemplate`) that it shares and never fills.  A fill finds each value's bin with the
template's own axes (boost-histogram's ``axis.index``, the bin boost-histogram's fill
puts it in) and adds the weights with ``np.bincount`` (entries in their order, as
boost-histogram's fill adds them); merging adds the arrays (``+`` and ``+=``, what
coffea's accumulation calls).  :meth:`HistSums.to_hist` gives the ``hist.Hist`` that
booking the template and filling it chunk by chunk gives, to the last bit
(``tests/test_hists.py``).
"""

from __future__ import annotations

import copy
import hashlib
import pickle

import numpy as np

from na64reco.errors import NA64Error


class HistTemplate:
    """An empty booked ``hist.Hist`` (weighted storage, no growing axis; shared, never
    filled) with what a fill needs of its axes, worked out once."""

    __slots__ = ("hist", "shape", "_axes", "_pickled")

    def __init__(self, h):
        self.hist = h
        self.shape = tuple(int(n) for n in h.axes.extent)
        strides = np.cumprod((1, *self.shape[:0:-1]))[::-1]  # C order, flow bins included
        #: per axis: (axis, index offset of its first bin, extent, stride, has both flow bins)
        self._axes = tuple((ax, int(ax.traits.underflow), int(ax.extent), int(st),
                            bool(ax.traits.underflow and ax.traits.overflow))
                           for ax, st in zip(h.axes, strides, strict=True))

    def __reduce__(self):
        """Pickled as its axes (not the empty storage of every bin) and their digest: a process
        that unpickles many chunks' histograms (a dask or futures worker merging outputs, the
        client) books each template once (:func:`_rebuild_template`)."""
        try:
            pickled = self._pickled
        except AttributeError:
            blob = pickle.dumps((tuple(self.hist.axes), type(self.hist.storage_type())))
            pickled = self._pickled = (hashlib.sha256(blob).digest(), blob)
        return _rebuild_template, pickled

    def flat_index(self, values) -> tuple[np.ndarray | int, np.ndarray | None]:
        """(flat bin index, flow bins included, of each entry; the entries kept, None for
        all): the bin ``axis.index`` gives on every axis, as boost-histogram's fill finds it;
        an entry outside an axis without a flow bin on that side is not filled."""
        if len(values) != len(self._axes):
            raise NA64Error(f"histogram {self.hist.axes.name}: {len(values)} values for {len(self._axes)} axes")
        flat, keep = 0, None
        for (ax, offset, extent, stride, flows), v in zip(self._axes, values, strict=True):
            i = ax.index(v)
            if offset:
                i = i + offset
            if not flows:
                inside = (np.asarray(i) >= 0) & (np.asarray(i) < extent)
                keep = inside if keep is None else keep & inside
            flat = flat + (i * stride if stride != 1 else i)
        return flat, keep


#: templates unpickled in this process, by the digest of their pickled axes (most recent last)
_UNPICKLED: dict[bytes, HistTemplate] = {}
_MAX_UNPICKLED = 1024


def _rebuild_template(digest: bytes, blob: bytes) -> HistTemplate:
    """The template of the pickled axes ``blob`` (:meth:`HistTemplate.__reduce__`): the one this
    process unpickled already for the same digest, else booked now.  Unpickling a chunk's ~45
    histograms booked each one again (~0.3 ms with its axes: ~17 ms per chunk output), and the
    sums of two chunks then had different templates, compared axis by axis when merged."""
    template = _UNPICKLED.pop(digest, None)
    if template is None:
        import hist

        axes, storage = pickle.loads(blob)
        template = HistTemplate(hist.Hist(*axes, storage=storage()))
        template._pickled = (digest, blob)
        while len(_UNPICKLED) >= _MAX_UNPICKLED:
            _UNPICKLED.pop(next(iter(_UNPICKLED)))
    _UNPICKLED[digest] = template
    return template


class HistSums:
    """Sums of weights and squared weights of the bins (flow bins included) of a
    :class:`HistTemplate`'s histogram."""

    __slots__ = ("template", "sumw", "sumw2")

    def __init__(self, template: HistTemplate, sumw: np.ndarray | None = None, sumw2: np.ndarray | None = None):
        self.template = template
        self.sumw = np.zeros(template.shape) if sumw is None else sumw
        self.sumw2 = np.zeros(template.shape) if sumw2 is None else sumw2

    def fill(self, *values, weight: np.ndarray) -> None:
        """Fill one entry per element of the arrays ``values`` (one per axis, in axis order;
        a category axis takes one label for all entries) with ``weight`` (an array of the
        same length), adding the weights bin by bin in the entries' order (as boost-histogram)."""
        flat, keep = self.template.flat_index(values)
        weight = np.asarray(weight, dtype=float)
        if keep is not None:
            if not np.ndim(keep):
                if not keep:
                    return
            else:
                flat, weight = np.broadcast_to(flat, keep.shape)[keep], weight[keep]
        if np.shape(flat) != weight.shape:
            flat = np.broadcast_to(flat, weight.shape)
        np.add.at(self.sumw.reshape(-1), flat, weight)
        np.add.at(self.sumw2.reshape(-1), flat, weight * weight)

    def _check(self, other: HistSums) -> None:
        if self.template is not other.template and (
                self.sumw.shape != other.sumw.shape or self.template.hist.axes != other.template.hist.axes):
            raise NA64Error(f"cannot merge histograms with different axes: {self.template.hist.axes.name} "
                            f"{self.sumw.shape} vs {other.template.hist.axes.name} {other.sumw.shape}")

    def __add__(self, other: HistSums) -> HistSums:
        self._check(other)
        return HistSums(self.template, self.sumw + other.sumw, self.sumw2 + other.sumw2)

    def __iadd__(self, other: HistSums) -> HistSums:
        self._check(other)
        self.sumw += other.sumw
        self.sumw2 += other.sumw2
        return self

    def to_hist(self):
        """The filled ``hist.Hist`` (a copy of the template with these sums)."""
        h = copy.copy(self.template.hist)
        view = h.view(flow=True)
        view.value = self.sumw
        view.variance = self.sumw2
        return h


class HistGroup:
    """Named :class:`HistSums` merged as one accumulator.  coffea's accumulation walks a
    dict entry by entry, with two ``isinstance`` checks against its ``Addable`` protocol
    per entry (~25 us each): for the ~45 histograms of a chunk that was ~2 ms per chunk;
    a group is one entry.  Merging follows coffea's for dicts: sums of the same name add,
    the others are copied."""

    __slots__ = ("sums",)

    def __init__(self, sums: dict[str, HistSums]):
        self.sums = sums

    @staticmethod
    def _copy(h: HistSums) -> HistSums:
        return HistSums(h.template, h.sumw.copy(), h.sumw2.copy())

    def __add__(self, other: HistGroup) -> HistGroup:
        out = {k: v + other.sums[k] if k in other.sums else self._copy(v) for k, v in self.sums.items()}
        out.update({k: self._copy(v) for k, v in other.sums.items() if k not in self.sums})
        return HistGroup(out)

    def __iadd__(self, other: HistGroup) -> HistGroup:
        for k, v in other.sums.items():
            if k in self.sums:
                self.sums[k] += v
            else:
                self.sums[k] = self._copy(v)
        return self

    def to_hists(self) -> dict:
        """``{name: hist.Hist}``."""
        return {name: h.to_hist() for name, h in self.sums.items()}


def to_hists(group) -> dict:
    """``{name: hist.Hist}`` of a :class:`HistGroup` or of a dict of :class:`HistSums`
    (``hist.Hist`` values are kept)."""
    if isinstance(group, HistGroup):
        return group.to_hists()
    return {name: h.to_hist() if isinstance(h, HistSums) else h for name, h in group.items()}
