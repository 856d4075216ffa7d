"""Control plots (PNG) of a processor output, and small helpers for notebooks.

``control_plots(out, outdir)`` writes, per dataset: the cut-flow (fraction of the
initial events after each cut, with the counts written on the bars; a blinded row is a
hatched bar reading "blinded"), the N-1 distribution of every cut with its window
marked, and the distributions before cuts and after all cuts but the box.  Every figure carries the
"NA64 Simulation" / "NA64 Internal" label (simulation / data) and the MOT or EOT, every
y axis reads "Events / <bin width> <unit>", and on *blinded data* every range that
blinding hides is drawn as a hatched band labelled "blinded", read from
``selections/blinding.yaml`` (:func:`~na64reco.selection.blinding.load_protection`)
and the selection's signal box, so an empty range and a hidden one cannot be confused.

Plots only read the (already blinded) output; they never see events.  Figures are drawn
in mplhep's neutral ROOT style inside :func:`na64_style` (the caller's global matplotlib
style is left alone) on :class:`matplotlib.figure.Figure` objects, so no backend is
forced and no pyplot figure is left open (notebooks keep their inline figures).

Notebook helpers: :func:`na64_style`, :func:`exp_label`, :func:`events_label`,
:func:`draw_blinded`, :func:`blinded_intervals`, :func:`data_points`,
:func:`project_modules`.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import hist
import matplotlib.colors
import matplotlib.patches
import matplotlib.style
import matplotlib.ticker
import mplhep
import numpy as np
from matplotlib.figure import Figure

from na64reco.selection.cuts import BLINDED, BOX

EXPERIMENT = "NA64"
#: mplhep's experiment-neutral style (not CMS/ATLAS/LHCb).
STYLE = mplhep.style.ROOT
BLINDED_HATCH = "///"
DPI = 80

_UNIT = re.compile(r"\s*\[([^\]]+)\]\s*$")


# ---------------------------------------------------------------------------------------
# style and labels
@contextmanager
def na64_style():
    """Draw (and save) figures made inside in the NA64 plot style; the global style is
    restored on exit."""
    with matplotlib.style.context(STYLE):
        yield


def exp_label(ax, *, data: bool, rlabel: str = "", unblinded: bool = False):
    """"NA64 Internal" (data) or "NA64 Simulation" above ``ax``, ``rlabel`` on the right."""
    llabel = ("Internal, unblinded" if unblinded else "Internal") if data else "Simulation"
    # scilocator_adjust=False: mplhep's adjustment for a y offset text looks the axes up
    # with plt.gca(), which opens a pyplot figure; our linear y axes have no offset text.
    return mplhep.label.exp_label(exp=EXPERIMENT, llabel=llabel, rlabel=rlabel, loc=0, ax=ax,
                                  scilocator_adjust=False)


def beam_label(setup: str, n_beam: float) -> str:
    """``"20 000 MOT"`` / ``"9.4 x 10^11 EOT"`` for a setup's beam particles on target."""
    from na64reco.errors import NA64Error
    from na64reco.geometry import load_setup

    try:
        unit = "MOT" if load_setup(setup).beam.particle.startswith("mu") else "EOT"
    except NA64Error:  # an unknown setup still gets a label
        unit = "on target"
    if not n_beam:
        return setup
    return f"{_number(n_beam)} {unit}"


def _number(x: float) -> str:
    if x < 1e5:
        return f"{x:,.0f}".replace(",", " ")
    exp = int(np.floor(np.log10(x)))
    return rf"${x / 10 ** exp:.3g} \times 10^{{{exp}}}$"


def axis_unit(label: str) -> str | None:
    """The unit in brackets at the end of an axis label (``"$p_{out}$ [GeV]"`` -> ``"GeV"``)."""
    m = _UNIT.search(label or "")
    return m.group(1) if m else None


def symbol(label: str) -> str:
    """An axis label without its unit (``"$p_{out}$ [GeV]"`` -> ``"$p_{out}$"``)."""
    return _UNIT.sub("", label or "")


def display_scale(label: str, edges) -> tuple[float, str]:
    """Factor and label to draw an axis in: GeV axes that end below 0.5 GeV are drawn in MeV."""
    if axis_unit(label) == "GeV" and edges[-1] <= 0.5:
        return 1000.0, _UNIT.sub(" [MeV]", label)
    return 1.0, label


def bin_width_text(edges, unit: str | None) -> str | None:
    """``"2 GeV"``: the width of equal bins with its unit (None if the bins differ)."""
    widths = np.diff(np.asarray(edges, dtype=float))
    if not np.allclose(widths, widths[0], rtol=1e-6):
        return None
    return f"{widths[0]:.3g} {unit}" if unit else f"{widths[0]:.3g}"


def events_label(edges, unit: str | None, what: str = "Events", integer: bool = False) -> str:
    """``"Events / 2 GeV"``: the y label of a histogram with bin ``edges`` in ``unit``
    (``what`` alone for integer axes, ``"/ bin"`` for unequal bins)."""
    if integer:
        return what
    width = bin_width_text(edges, unit)
    return f"{what} / {width}" if width else f"{what} / bin"


def value_unit(variable: str, setup: str) -> str | None:
    """The unit of a reco variable's values (GeV for energies and momenta, else None)."""
    from na64reco.selection.schema import variable_info

    info = variable_info(variable, setup)
    return "GeV" if info and info[1] == "energy" else None


def range_text(name: str, lo: float | None, hi: float | None, unit: str | None) -> str:
    """``"$p_{out}$ < 80 GeV"``, ``"0.5 < $E$ < 5 GeV"``, ``"$E$ >= 25 MeV"`` (GeV values all
    below 1 GeV are written in MeV)."""
    values = [v for v in (lo, hi) if v is not None]
    scale = 1.0
    if unit == "GeV" and values and all(0 < abs(v) < 1 for v in values):
        scale, unit = 1000.0, "MeV"
    u = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        return f"{lo * scale:g} < {name} < {hi * scale:g}{u}"
    if hi is not None:
        return f"{name} < {hi * scale:g}{u}"
    if lo is not None:
        return rf"{name} $\geq$ {lo * scale:g}{u}"
    return name


# ---------------------------------------------------------------------------------------
# blinding
@dataclass(frozen=True)
class Blinding:
    """What blinding hides in a data output: events inside any of ``regions`` (the
    setup's protected region and the selection's signal box) unless inside one of
    ``controls``."""

    regions: tuple
    controls: tuple = ()

    @classmethod
    def of(cls, selection) -> Blinding:
        from na64reco.selection.blinding import load_protection

        protection = load_protection(selection.setup)
        return cls((protection.protected, selection.signal_box), tuple(protection.visible_controls))


def _merge(intervals):
    out = []
    for lo, hi in sorted((a, b) for a, b in intervals if b > a):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def blinded_intervals(blinding: Blinding, variable: str, lo: float, hi: float, *,
                      inside_box: bool = False) -> list[tuple[float, float]]:
    """Ranges of ``variable`` within ``[lo, hi]`` where data events are hidden.

    Normally: the protected region and the signal box, where they are ranges of
    ``variable``.  ``inside_box`` (the N-1 distribution of a cut other than the box,
    which holds only box events): everything but the visible controls on ``variable``.
    """
    def clip(region):
        return (max(lo, region.min if region.min is not None else lo),
                min(hi, region.max if region.max is not None else hi))

    if inside_box:
        shown = _merge(clip(c) for c in blinding.controls if c.variable == variable)
        hidden, start = [], lo
        for a, b in shown:
            hidden.append((start, a))
            start = b
        hidden.append((start, hi))
        return _merge(hidden)
    return _merge(clip(r) for r in blinding.regions if r.variable == variable)


def draw_blinded(ax, intervals, label: str | None = BLINDED, *, vertical: bool = True, scale: float = 1.0,
                 shift: float = 0.0, filled: bool = True):
    """Hatched bands over the hidden ``intervals`` (x ranges, or y ranges if not
    ``vertical``; drawn at ``(x + shift) * scale``), one legend entry ``label``; returns
    the patches."""
    patches = []
    span = ax.axvspan if vertical else ax.axhspan
    for i, (lo, hi) in enumerate(intervals):
        patches.append(span((lo + shift) * scale, (hi + shift) * scale, facecolor="0.92" if filled else "none",
                            edgecolor="0.45", hatch=BLINDED_HATCH, lw=0, zorder=0.5 if filled else 3,
                            label=label if i == 0 else None))
    return patches


# ---------------------------------------------------------------------------------------
# notebook helpers
def project_modules(h):
    """Sum a per-module histogram over modules (plots show the per-module values)."""
    return h.project(h.axes[-1].name) if "module" in h.axes.name else h


def data_points(ax, h, scale: float = 1.0, shift: float = 0.0, **kw):
    """Data as points with Poisson errors, non-empty bins only (clearer on a log scale);
    x drawn at ``(x + shift) * scale``."""
    x, n = (h.axes[0].centers + shift) * scale, h.values()
    m = n > 0
    kw = {"fmt": "ko", "ms": 5, **kw}
    return ax.errorbar(x[m], n[m], yerr=np.sqrt(n[m]), **kw)


# ---------------------------------------------------------------------------------------
# figures
@dataclass
class PlotContext:
    """How to label the plots of one dataset."""

    data: bool = False                 # real data (no truth)
    blinding: Blinding | None = None   # set for blinded data
    rlabel: str = ""
    name: str = ""                     # dataset name
    setup: str = ""
    symbols: dict = field(default_factory=dict)  # variable -> symbol (from the histogram axes)

    @property
    def unblinded(self) -> bool:
        return self.data and self.blinding is None

    def sym(self, variable: str) -> str:
        return self.symbols.get(variable, variable)

    def label(self, ax):
        """The experiment label of this dataset above ``ax``."""
        return exp_label(ax, data=self.data, rlabel=self.rlabel, unblinded=self.unblinded)

    def hidden_text(self) -> str:
        """``"$p_{out}$ < 80 GeV"`` (and ``"unless $E_{VETO}$ >= 25 MeV"``): what blinding hides."""
        def text(region):
            return range_text(self.sym(region.variable), region.min, region.max,
                              value_unit(region.variable, self.setup))

        b = self.blinding
        out = " or ".join(dict.fromkeys(text(r) for r in b.regions))
        # (not provably outside: without the variable, e.g. no outgoing track, most of the withheld events)
        out += "\nor " + " or ".join(dict.fromkeys(f"no {self.sym(r.variable)}" for r in b.regions))
        if b.controls:
            out += "\nunless " + " or ".join(text(c) for c in b.controls)
        return out


@dataclass(frozen=True)
class _XAxis:
    """A histogram axis as drawn: at ``(x + shift) * scale`` (integers centred on their bin,
    GeV axes below 0.5 GeV in MeV)."""

    name: str
    label: str
    edges: np.ndarray
    integer: bool
    scale: float = 1.0
    shift: float = 0.0

    @classmethod
    def of(cls, axis) -> _XAxis:
        edges = np.asarray(axis.edges, dtype=float)
        integer = isinstance(axis, hist.axis.Integer)
        scale, label = display_scale(axis.label or axis.name, edges)
        return cls(axis.name, label, edges, integer, scale, -0.5 if integer else 0.0)

    @property
    def unit(self) -> str | None:
        return axis_unit(self.label)

    @property
    def drawn(self) -> np.ndarray:
        return self.to(self.edges)

    def to(self, x):
        return (np.asarray(x, dtype=float) + self.shift) * self.scale


def new_figure(figsize=(10, 8), margins: dict | None = None) -> Figure:
    """A figure not kept by pyplot: constrained layout, or fixed ``margins`` (figure
    fractions for ``subplots_adjust``; much faster to lay out)."""
    if margins is None:
        return Figure(figsize=figsize, layout="constrained")
    fig = Figure(figsize=figsize)
    fig.subplots_adjust(**margins)
    return fig


#: Margins of the 10 x 8 in one-axes figures (ROOT style fonts).
_MARGINS_1D = {"left": 0.15, "right": 0.96, "bottom": 0.12, "top": 0.92}
_MARGINS_2D = {"left": 0.12, "right": 0.86, "bottom": 0.12, "top": 0.92}


def freeze_layout(fig: Figure, top_margin: float = 0.55) -> Figure:
    """Run the figure's constrained layout once, leaving ``top_margin`` inches above the
    axes for :func:`exp_label`, and keep it: mplhep places the label's second word from
    the first one's size at call time, so the axes must not move afterwards."""
    engine = fig.get_layout_engine()
    engine.set(rect=(0, 0, 1, 1 - top_margin / fig.get_figheight()))
    engine.execute(fig)
    fig.set_layout_engine("none")
    return fig


def _finish(fig: Figure, ax, ctx: PlotContext) -> Figure:
    if fig.get_layout_engine() is not None:
        freeze_layout(fig)
    ctx.label(ax)
    return fig


def _save(fig: Figure, path) -> Path:
    fig.savefig(path, dpi=DPI)
    return Path(path)


def _legend(ax, handles=None, labels=None, **kw):
    """A legend on a white box, so lines and bands behind it do not cross its text."""
    args = (handles, labels) if handles is not None else ()
    kw = {"fontsize": "x-small", "title_fontsize": "x-small", **kw}
    return ax.legend(*args, alignment="left", frameon=True, framealpha=1.0, facecolor="white", edgecolor="0.7",
                     **kw)


def figure_cutflow(table, ctx: PlotContext | None = None, title: str = "") -> Figure:
    """Horizontal bars: fraction of the initial events after each cut (linear), the
    counts written at the bar ends; blinded rows hatched and reading "blinded"."""
    ctx = ctx or PlotContext()
    rows = table.rows()
    n = len(rows)
    fig = new_figure((15, 2.5 + 0.62 * n))
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    first = rows[0]["sumw"] if rows and rows[0]["sumw"] not in (BLINDED, 0) else None
    done_pass = done_blind = False
    for yi, r in zip(y, rows, strict=True):
        if r["sumw"] == BLINDED:
            ax.barh(yi, 1.0, height=0.7, facecolor="0.92", edgecolor="0.45", hatch=BLINDED_HATCH, lw=0,
                    label=None if done_blind else BLINDED)
            ax.text(0.5, yi, BLINDED, ha="center", va="center", fontsize="x-small", fontweight="bold")
            done_blind = True
            continue
        frac = r["sumw"] / first if first else 0.0
        ax.barh(yi, frac, height=0.7, color="#5790fc", label=None if done_pass else "events passing")
        done_pass = True
        count = f"{r['sumw']:.4g}" if table.weighted else f"{r['events']:,}".replace(",", " ")
        ax.text(frac + 0.01, yi, f"{count} ({frac:.1%})", va="center", fontsize="xx-small")
    ax.set_yticks(y, [r["cut"] for r in rows], fontsize="x-small")
    ax.tick_params(axis="y", which="both", left=False, right=False)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, 1.45)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("Fraction of initial events" + (" (weighted)" if table.weighted else ""))
    ax.set_ylabel("Cut (applied in order, top to bottom)", fontsize="small")
    legend_title = title or ctx.name
    if ctx.blinding is not None:
        legend_title += "\nblinded data: events with\n" + ctx.hidden_text() + "\nremoved before counting"
    _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=legend_title)
    return _finish(fig, ax, ctx)


def _draw_series(ax, h, xa: _XAxis, *, label, style):
    """One histogram: ``style`` "points" (data, Poisson errors), "filled" or "step[:colour]"."""
    values = np.asarray(h.values(), dtype=float)
    if style == "points":
        return data_points(ax, h, xa.scale, xa.shift, label=label)
    if style == "filled":
        return mplhep.histplot(values, bins=xa.drawn, ax=ax, histtype="fill", color="0.8", label=label, flow=None)
    var = h.variances()
    err = np.sqrt(var) if var is not None else np.sqrt(np.abs(values))
    colour = {"color": style[5:]} if style.startswith("step:") else {}
    return mplhep.histplot(values, bins=xa.drawn, ax=ax, yerr=err, histtype="step", label=label, flow=None,
                           **colour)


def _y_range(ax, hs, data: bool, empty_text: str | None = "no events"):
    """Log scale (decades labelled) when the contents span more than 1.5 decades, else
    linear; the top ~40 % left free for the legend; "no events" if empty."""
    vals = np.concatenate([np.asarray(h.values(), dtype=float).ravel() for h in hs])
    pos = vals[vals > 0]
    if pos.size == 0:
        ax.set_ylim(0, 1)
        if empty_text:
            ax.text(0.5, 0.3, empty_text, transform=ax.transAxes, ha="center", va="center", fontsize="small",
                    color="0.3")
        return
    bottom = 0.5 if data else pos.min() / 2
    top = pos.max()
    if top / bottom < 30:
        ax.set_ylim(0, _top_with_errors(hs) * 1.75)
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # no offset text under the label
        return
    top = _top_with_errors(hs)
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(bottom, top * 10 ** (0.75 * np.log10(top / bottom)))


def _top_with_errors(hs) -> float:
    return max(float(np.max(np.asarray(h.values(), float) + np.sqrt(np.abs(_variances(h))))) for h in hs)


def _variances(h):
    var = h.variances()
    return np.asarray(h.values() if var is None else var, dtype=float)


def _fit_range(xa: _XAxis, hs, keep=()) -> tuple[float, float]:
    """The drawn x range: the axis, trimmed to the filled bins (and the values in
    ``keep``: cut edges, bands) when more than a third of it is empty."""
    lo, hi = xa.edges[0], xa.edges[-1]
    filled = np.zeros(len(xa.edges) - 1, bool)
    for h in hs:
        filled |= np.asarray(h.values(), dtype=float) > 0
    if not filled.any():
        return lo, hi
    idx = np.nonzero(filled)[0]
    pts = [xa.edges[idx[0]], xa.edges[idx[-1] + 1], *[k for k in keep if k is not None and lo <= k <= hi]]
    a, b = min(pts), max(pts)
    if (b - a) > (hi - lo) * 2 / 3:
        return lo, hi
    pad = max(0.15 * (b - a), 2 * (xa.edges[1] - xa.edges[0]))
    if xa.integer:
        pad = 1
    return max(lo, a - pad), min(hi, b + pad)


def figure_hist1d(h, ctx: PlotContext | None = None, *, title: str = "", lo=None, hi=None, labels=None,
                  cut_label: str | None = None, inside_box: bool = False, ylabel_what: str = "Events",
                  spans=()) -> Figure:
    """One variable: one or more histograms (data drawn as points), the cut window
    ``lo``/``hi`` (dashed lines, legend ``cut_label``), shaded ``spans`` ``(lo, hi,
    label, colour)`` (``None`` for an open end) and, for blinded data, hatched "blinded"
    bands (``inside_box``: all events are box events, see :func:`blinded_intervals`)."""
    ctx = ctx or PlotContext()
    hs = h if isinstance(h, list) else [h]
    xa = _XAxis.of(hs[0].axes[-1])
    fig = new_figure(margins=_MARGINS_1D)
    ax = fig.add_subplot()
    labels = labels or [ctx.name or "events"]
    if ctx.data:
        styles = ["filled", "points"] if len(hs) == 2 else ["points"] * len(hs)
    else:
        styles = ["step:#5790fc", "step:#e42536"] if len(hs) == 2 else ["step"] * len(hs)
    for hx, lab, st in zip(hs, labels, styles, strict=False):
        _draw_series(ax, hx, xa, label=lab, style=st)
    marks = [v for v in (lo, hi) if v is not None]
    for i, v in enumerate(marks):
        ax.axvline(xa.to(v), color="#e42536", ls="--", lw=2, label=(cut_label or "cut") if i == 0 else None)
    for a, b, text, colour in spans:
        ax.axvspan(xa.to(xa.edges[0] if a is None else a), xa.to(xa.edges[-1] if b is None else b), color=colour,
                   alpha=0.15, lw=0, label=text, zorder=0.4)
    blinded = []
    if ctx.blinding is not None:
        blinded = blinded_intervals(ctx.blinding, xa.name, xa.edges[0], xa.edges[-1], inside_box=inside_box)
        text = "blinded (signal-box events)" if inside_box else "blinded: " + ctx.hidden_text()
        draw_blinded(ax, blinded, text, scale=xa.scale, shift=xa.shift)
    everything = len(blinded) == 1 and blinded[0] == (xa.edges[0], xa.edges[-1])
    _y_range(ax, hs, ctx.data, empty_text=None if everything else "no events")
    # the shaded spans (signal box, sidebands) stay in view even where no event is: an open end
    # reaches the axis edge
    span_ends = [v for a, b, *_ in spans for v in (xa.edges[0] if a is None else a, xa.edges[-1] if b is None else b)]
    x0, x1 = _fit_range(xa, hs, [*marks, *(v for iv in blinded for v in iv), *span_ends])
    ax.set_xlim(xa.to(x0), xa.to(x1))
    if xa.integer:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.tick_params(axis="x", which="minor", bottom=False, top=False)
    ax.set_xlabel(xa.label)
    ax.set_ylabel(events_label(xa.drawn, xa.unit, ylabel_what, xa.integer))
    _legend(ax, loc="upper right", title=title or None)
    return _finish(fig, ax, ctx)


def figure_hist2d(h, ctx: PlotContext | None = None, *, title: str = "") -> Figure:
    """A 2-D histogram (colour scale with a labelled colour bar) with hatched "blinded"
    bands over hidden ranges of either axis for blinded data."""
    ctx = ctx or PlotContext()
    xa, ya = _XAxis.of(h.axes[0]), _XAxis.of(h.axes[1])
    fig = new_figure((11, 8), margins=_MARGINS_2D)
    ax = fig.add_subplot()
    values = np.asarray(h.values(), dtype=float)
    pos = values[values > 0]
    vmax = pos.max() if pos.size else 1.0
    vmin = pos.min() if pos.size else 1.0
    norm = (matplotlib.colors.LogNorm(vmin=vmin, vmax=vmax) if vmax / vmin > 30
            else matplotlib.colors.Normalize(vmin=0, vmax=vmax))
    mesh = ax.pcolormesh(xa.drawn, ya.drawn, np.where(values > 0, values, np.nan).T, norm=norm, cmap="viridis")
    cbar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.02)
    wx, wy = bin_width_text(xa.drawn, xa.unit), bin_width_text(ya.drawn, ya.unit)
    cbar.set_label(f"Events / ({wx} $\\times$ {wy})" if wx and wy else "Events / bin", loc="top")
    bands = ([], [])
    if ctx.blinding is not None:
        b = ctx.blinding
        bands = (blinded_intervals(b, xa.name, xa.edges[0], xa.edges[-1]),
                 blinded_intervals(b, ya.name, ya.edges[0], ya.edges[-1]))
        # a band of one axis is hidden only where the other axis is outside the visible controls (NA64e's
        # E_ECAL < 50 GeV band stops at E_HCAL = 2 GeV: above, the events are shown)
        rest = (blinded_intervals(b, xa.name, xa.edges[0], xa.edges[-1], inside_box=True),
                blinded_intervals(b, ya.name, ya.edges[0], ya.edges[-1], inside_box=True))
        boxes = [(x, y) for x in bands[0] for y in rest[1]] + [(x, y) for y in bands[1] for x in rest[0]]
        text = "blinded: " + ctx.hidden_text()
        for i, ((x0, x1), (y0, y1)) in enumerate(boxes):
            lo = ((x0 + xa.shift) * xa.scale, (y0 + ya.shift) * ya.scale)
            ax.add_patch(matplotlib.patches.Rectangle(
                lo, (x1 + xa.shift) * xa.scale - lo[0], (y1 + ya.shift) * ya.scale - lo[1], facecolor="none",
                edgecolor="0.45", hatch=BLINDED_HATCH, lw=0, zorder=3, label=text if i == 0 else None))
    for which, a, proj, band in (("x", xa, values.sum(axis=1), bands[0]), ("y", ya, values.sum(axis=0), bands[1])):
        lo, hi = _fit_range(a, [_Values(proj)], [v for iv in band for v in iv])
        (ax.set_xlim if which == "x" else ax.set_ylim)(a.to(lo), a.to(hi))
    ax.set_xlabel(xa.label)
    ax.set_ylabel(ya.label)
    handles, labels = ax.get_legend_handles_labels()
    _legend(ax, handles, labels, loc="upper right", title=title or None)
    return _finish(fig, ax, ctx)


@dataclass(frozen=True)
class _Values:
    """Bin contents standing in for a histogram (for :func:`_fit_range`)."""

    v: np.ndarray

    def values(self):
        return self.v


# ---------------------------------------------------------------------------------------
# the control plots of an output
def plot_context(dataset: str, acc: dict, selection) -> PlotContext:
    """Labels of one dataset: data or simulation, blinding, beam particles on target."""
    prov = acc.get("provenance")
    files = getattr(prov, "files", {}) or {}
    data = any(rec.get("data") for rec in files.values()) if files else bool(acc["cutflow"].blinded)
    symbols = {}
    for group in ("hists", "nminus1"):
        for h in acc.get(group, {}).values():
            for a in h.axes:
                if a.name not in ("stage", "module"):
                    symbols.setdefault(a.name, symbol(a.label or a.name))
    return PlotContext(
        data=data,
        blinding=Blinding.of(selection) if acc["cutflow"].blinded else None,
        rlabel=beam_label(selection.setup, getattr(prov, "n_beam", 0)),
        name=dataset,
        setup=selection.setup,
        symbols=symbols,
    )


def cut_window(selection, name: str, ctx: PlotContext):
    """(lo, hi, legend text) of a cut or of the signal box: the lines drawn on its N-1."""
    if name == BOX:
        box = selection.signal_box
        unit = value_unit(box.variable, selection.setup)
        return box.min, box.max, "signal box: " + range_text(ctx.sym(box.variable), box.min, box.max, unit)
    cut = selection.cut(name)
    sym = ctx.sym(cut.variable)
    if cut.type == "equal":
        return cut.value, cut.value + 1, f"cut {name}: {sym} = {cut.value}"
    if cut.min is None and cut.max is None:
        return None, None, f"cut {name}: {cut.text}"
    return cut.min, cut.max, f"cut {name}: " + range_text(sym, cut.min, cut.max,
                                                          value_unit(cut.variable, selection.setup))


def control_specs(out: dict, selection=None) -> Iterator[tuple[str, Callable[[], Figure]]]:
    """(file stem, figure maker) of every control plot of every dataset in ``out``."""
    for dataset, acc in out.items():
        if "cutflow" not in acc:
            continue
        sel = selection
        if sel is None:
            from na64reco.selection import load_selection

            sel = load_selection(acc["provenance"].selection_file)
        ctx = plot_context(dataset, acc, sel)
        kind = "data" if ctx.data else "simulation"

        def cutflow(acc=acc, ctx=ctx):
            return figure_cutflow(acc["cutflow"], ctx, f"{ctx.name}: cut-flow")
        yield f"{dataset}_cutflow", cutflow
        for name, h in acc["nminus1"].items():
            hp = project_modules(h)
            lo, hi, text = cut_window(sel, name, ctx)
            what = "Module entries" if "module" in h.axes.name else "Events"

            def nminus1(hp=hp, name=name, lo=lo, hi=hi, text=text, what=what, ctx=ctx, kind=kind):
                title = f"{ctx.name}: N-1 of {name}" + ("" if name == BOX else "\n(all other cuts and the box)")
                return figure_hist1d(hp, ctx, title=title, lo=lo, hi=hi, cut_label=text,
                                     labels=[f"{kind}, all other cuts"], inside_box=name != BOX, ylabel_what=what)
            yield f"{dataset}_nminus1_{name}", nminus1
        for name, h in acc["hists"].items():
            if name.count("_vs_"):
                def hist2d(h=h, ctx=ctx):
                    return figure_hist2d(h[{"stage": "selected"}], ctx, title=f"{ctx.name}: after all cuts but the box")
                yield f"{dataset}_{name}", hist2d
                continue
            what = "Module entries" if "module" in h.axes.name else "Events"

            def hist1d(h=h, ctx=ctx, what=what):
                return figure_hist1d([project_modules(h[{"stage": s}]) for s in ("all", "selected")], ctx,
                                     title=ctx.name, labels=["before cuts", "after all cuts but the box"],
                                     ylabel_what=what)
            yield f"{dataset}_{name}", hist1d


def control_figures(out: dict, selection=None) -> dict[str, Figure]:
    """Every control plot of ``out`` as a figure (for tests and notebooks), by file stem."""
    with na64_style():
        return {stem: make() for stem, make in control_specs(out, selection)}


#: control plots per drawing process at least (a process's start-up, ~2-4 s, is worth ~10 plots)
PLOTS_PER_WORKER = 12


def control_plots(out: dict, outdir: str | Path, selection=None, *, workers: int | None = None) -> list[Path]:
    """Write the control plots of every dataset in ``out``; return the files written.

    Each plot takes ~0.3 s (matplotlib's ticks and text), ~100 for three datasets: ``workers``
    processes draw them, each every ``workers``-th plot (default: one per usable core, at most
    8, and at most one per :data:`PLOTS_PER_WORKER` plots; 1 draws them all here).  The others
    are fresh interpreters (``python -m na64reco.plot_worker``), so no script of the caller's is
    run again in them; a worker's failure is an error naming its plots' share and its message.
    Outputs that cannot be pickled are all drawn here.
    The files are the same whichever process draws them (``tests/test_plotting.py``)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stems = [stem for stem, _ in control_specs(out, selection)]
    n = _plot_workers(len(stems)) if workers is None else max(1, min(int(workers), len(stems)))
    inputs = _picklable((out, selection)) if n > 1 else None
    n = n if inputs is not None else 1  # (something only this process can draw: all of it here)
    with _plot_processes(inputs, outdir, n) as wait:
        write_control_share(out, outdir, selection, 0, n)
        wait()
    return [outdir / f"{stem}.png" for stem in stems]


def write_control_share(out: dict, outdir: Path, selection, share: int, shares: int) -> None:
    """Write the control plots number ``share``, ``share + shares``, ... of :func:`control_specs`."""
    with na64_style():
        for i, (stem, make) in enumerate(control_specs(out, selection)):
            if i % shares == share:
                _save(make(), Path(outdir) / f"{stem}.png")


def _plot_workers(n_plots: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8, n_plots // PLOTS_PER_WORKER))


def _picklable(obj) -> bytes | None:
    import pickle

    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


@contextmanager
def _plot_processes(inputs: bytes | None, outdir: Path, shares: int):
    """Start the processes drawing shares 1 .. ``shares - 1`` of the pickled ``(out, selection)``
    ``inputs``; yields a function that waits for
    them and raises :class:`~na64reco.errors.NA64Error` if one failed (they are stopped if the
    caller's own share fails)."""
    if shares <= 1:
        yield lambda: None
        return
    import subprocess
    import sys
    import tempfile

    from na64reco.errors import NA64Error

    with tempfile.TemporaryDirectory(prefix="na64reco-plots-") as tmp:
        path = Path(tmp) / "inputs.pickle"
        path.write_bytes(inputs)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the caller's imports
        logs = [Path(tmp) / f"share{k}.log" for k in range(1, shares)]  # (a file: a full pipe would stall it)
        procs = []
        for k, log in enumerate(logs, start=1):
            with open(log, "wb") as err:
                procs.append(subprocess.Popen([sys.executable, "-m", "na64reco.plot_worker", str(path), str(outdir),
                                               str(k), str(shares)], stdout=subprocess.DEVNULL, stderr=err, env=env))

        def wait():
            failed = []
            interrupted = False
            for k, (proc, log) in enumerate(zip(procs, logs, strict=True), start=1):
                if proc.wait() != 0:
                    text = log.read_bytes().decode(errors="replace").strip().splitlines()
                    failed.append(f"share {k} of {shares}: {text[-1] if text else f'exit code {proc.returncode}'}")
                    # (Ctrl-C reaches the drawing processes too: the run was interrupted, nothing failed)
                    interrupted |= proc.returncode == -signal.SIGINT or bool(text and text[-1] == "KeyboardInterrupt")
            if interrupted:
                raise KeyboardInterrupt
            if failed:
                raise NA64Error(f"control plots in {outdir}: a drawing process failed ({'; '.join(failed)})")

        try:
            yield wait
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


# ---------------------------------------------------------------------------------------
# one-figure writers kept for callers that pass a title and a path
def plot_cutflow(table, title: str, path: Path, ctx: PlotContext | None = None) -> None:
    """Write the cut-flow figure of ``table`` to ``path``."""
    if ctx is None:
        ctx = PlotContext(data=not table.weighted, blinding=None)
    with na64_style():
        _save(figure_cutflow(table, ctx, title), path)


def plot_hist1d(h, title: str, path: Path, *, lo=None, hi=None, labels=None, ctx: PlotContext | None = None,
                **kw) -> None:
    """Write one 1-D figure (see :func:`figure_hist1d`) to ``path``."""
    with na64_style():
        _save(figure_hist1d(h, ctx, title=title, lo=lo, hi=hi, labels=labels, **kw), path)


def plot_hist2d(h, title: str, path: Path, ctx: PlotContext | None = None) -> None:
    """Write one 2-D figure (see :func:`figure_hist2d`) to ``path``."""
    with na64_style():
        _save(figure_hist2d(h, ctx, title=title), path)
