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
from collections.abc import Callable

import numpy as np

from na64reco.errors import NA64Error


class HistTemplate:
    """An empty booked ``hist.Hist`` (weighted storage, no growing axis; shared, never
    filled) with what a fill needs of its axes, worked out once."""

    __slots__ = ("hist", "shape", "_axes")

    def __init__(self, h):
        self.hist = h
        self.shape = tuple(int(n) for n in h.axes.extent)
        strides = np.cumprod((1, *self.shape[:0:-1]))[::-1]  # C order, flow bins included
        #: per axis: (axis, index offset of its first bin, extent, stride, has both flow bins)
        self._axes = tuple((ax, int(ax.traits.underflow), int(ax.extent), int(st),
                            bool(ax.traits.underflow and ax.traits.overflow))
                           for ax, st in zip(h.axes, strides, strict=True))

    def __reduce__(self):  # pickled as its axes: not the (empty) storage of every bin
        return _rebuild_template, (tuple(self.hist.axes), type(self.hist.storage_type()))

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


class ChunkBins:
    """The bins of one chunk's events on the axes of the histograms it fills, each
    variable's found once and shared by every histogram with the same axis (the variable's
    histogram of all events and of the selected ones, its N-1 histogram, the 2-D pairs).

    Finding an entry's bin (boost-histogram's ``axis.index``, ~7 ns a value) was the
    largest part of a fill, and a variable was binned three to four times per chunk
    (docs/performance.md, "Ninth pass").  :meth:`fill` adds a histogram's entries of several
    event selections with one ``np.bincount`` per sum (:meth:`HistSums.add_flat`): the same
    sums as :meth:`HistSums.fill` of each selection in turn, to the last bit
    (``tests/test_hists.py``)."""

    __slots__ = ("_column", "_bins")

    def __init__(self, column: Callable[[str], np.ndarray]):
        self._column = column  # name -> numpy column (1-D; 2-D (events, modules) per module)
        self._bins: dict[str, tuple] = {}  # name -> (axis, bin of each value, inside or None)

    def _axis_bins(self, axis_info: tuple, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        ax, offset, extent, _, flows = axis_info
        hit = self._bins.get(name)
        if hit is None or hit[0] != ax:
            x = np.asarray(self._column(name))
            i = np.asarray(ax.index(x.reshape(-1)), dtype=np.intp).reshape(x.shape)
            if offset:
                i = i + offset
            inside = None if flows else (i >= 0) & (i < extent)
            hit = self._bins[name] = (ax, i, inside)
        return hit[1], hit[2]

    def fill(self, h: HistSums, names: tuple[str, ...], selections, weights: np.ndarray | None,
             modules: bool = False) -> None:
        """Fill ``h`` (axes ``[label axis,] [module,] *names``) with the events of each
        ``(label, mask)`` of ``selections`` (label: the value on the leading category axis,
        None without one; mask None: every event), in that order; ``weights`` one per event
        (None: 1).  ``modules``: ``names`` is one per-module variable (a 2-D column), filled
        with one entry per module."""
        axes = h.template._axes
        lead = len(axes) - len(names) - (1 if modules else 0)
        flat, inside = 0, None
        for info, name in zip(axes[len(axes) - len(names):], names, strict=True):
            i, ok = self._axis_bins(info, name)
            flat = flat + (i * info[3] if info[3] != 1 else i)
            inside = ok if inside is None else (inside if ok is None else inside & ok)
        if np.ndim(flat) != (2 if modules else 1):
            raise NA64Error(f"histogram {h.template.hist.axes.name}: columns of {names} have {np.ndim(flat)} "
                            f"dimension(s), expected {2 if modules else 1}")
        if modules:
            info = axes[lead]
            n_mod = np.shape(flat)[1]
            i = np.asarray(info[0].index(np.arange(n_mod)), dtype=np.intp) + info[1]
            flat = flat + i * info[3]
            if not info[4]:
                ok = np.broadcast_to((i >= 0) & (i < info[2]), np.shape(flat))
                inside = ok if inside is None else inside & ok
        parts, wparts = [], []
        for label, mask in selections:
            f = flat if mask is None else flat[mask]
            keep = None if inside is None else (inside if mask is None else inside[mask])
            if lead:
                info = axes[0]
                j = int(info[0].index(label)) + info[1]
                if not info[4] and not 0 <= j < info[2]:
                    continue
                f = f + j * info[3]
            w = None if weights is None else (weights if mask is None else weights[mask])
            if modules:
                if w is not None:
                    w = np.repeat(w, f.shape[1])
                f = f.reshape(-1)
                keep = None if keep is None else keep.reshape(-1)
            if keep is not None:
                f = f[keep]
                w = None if w is None else w[keep]
            parts.append(f)
            wparts.append(w)
        if not parts:
            return
        flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if weights is None:
            h.add_flat(flat, None)
        else:
            h.add_flat(flat, wparts[0] if len(wparts) == 1 else np.concatenate(wparts))


def _rebuild_template(axes, storage) -> HistTemplate:
    import hist

    return HistTemplate(hist.Hist(*axes, storage=storage()))


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

    def add_flat(self, flat: np.ndarray, weight: np.ndarray | None) -> None:
        """Add entries by flat bin index (flow bins included, C order: :class:`ChunkBins`),
        one weight each (``None``: weight 1), bin by bin in the entries' order (``np.bincount``
        adds them one after the other as ``np.add.at`` and boost-histogram's fill do: the
        same sums to the last bit)."""
        size = self.sumw.size
        if weight is None:
            counts = np.bincount(flat, minlength=size).astype(float)
            self.sumw.reshape(-1)[:] += counts
            self.sumw2.reshape(-1)[:] += counts
            return
        weight = np.asarray(weight, dtype=float)
        self.sumw.reshape(-1)[:] += np.bincount(flat, weight, minlength=size)
        self.sumw2.reshape(-1)[:] += np.bincount(flat, weight * weight, minlength=size)

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
