"""Plots of a run-quality assessment (:mod:`na64reco.dqm`), in the NA64 style.

One PNG per quantity: the per-spill rates as points against the spill, the MSADC channel
and tracker plane quantities as maps (spill x channel/plane).  Spills in the bad-spill
list are drawn in red on the rate plots; on the maps every (spill, channel) out of
tolerance is boxed in red.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator

from na64reco.dqm import Assessment
from na64reco.plotting import DPI, beam_label, exp_label, na64_style, new_figure

_MARGINS = {"left": 0.15, "right": 0.86, "bottom": 0.12, "top": 0.92}
NO_DATA_COLOR = "0.8"  # map cells without enough entries to judge
_MARGINS_1D = {"left": 0.15, "right": 0.96, "bottom": 0.12, "top": 0.92}
BAD_COLOR = "tab:red"


def _spill_axis(a: Assessment) -> tuple[np.ndarray, list[str], str]:
    """x positions, tick labels and axis label of the spills of all files."""
    runs = [f.run for f in a.files for _ in f.spill]
    spills = [int(s) for f in a.files for s in f.spill]
    x = np.arange(len(spills))
    if len(set(runs)) == 1:
        return x, [str(s) for s in spills], f"spill (run {runs[0]})"
    return x, [f"{r}/{s}" for r, s in zip(runs, spills, strict=True)], "run/spill"


def _label(ax, a: Assessment) -> None:
    runs = sorted({f.run for f in a.files})
    n_beam = sum(int(f.n_beam.sum()) for f in a.files)
    text = f"run {runs[0]}" if len(runs) == 1 else f"runs {runs[0]}-{runs[-1]}"
    exp_label(ax, data=any(f.is_data for f in a.files), rlabel=f"{text}, {beam_label(a.files[0].setup, n_beam)}")


def _rotated(labels: list[str]) -> bool:
    """Spill labels written across (run/spill: "1001/10"), which need a deeper bottom margin."""
    return len(labels[0]) > 3


def _margins(base: dict, labels: list[str]) -> dict:
    return {**base, "bottom": 0.2} if _rotated(labels) else base


def _ticks(ax, x, labels, label, axis="x") -> None:
    step = max(1, int(np.ceil(len(x) / 25)))
    getattr(ax, f"set_{axis}ticks")(x[::step], labels[::step], rotation=90 if _rotated(labels) else 0)
    getattr(ax, f"set_{axis}label")(label)


def _bad_rows(a: Assessment) -> np.ndarray:
    bad = {(b["file"], b["spill"]) for b in a.bad}
    return np.array([(f.path, int(s)) in bad for f in a.files for s in f.spill])


def figure_rates(a: Assessment):
    """Triggers per beam particle of each spill, with binomial errors; bad spills in red."""
    x, labels, xlabel = _spill_axis(a)
    tpb = np.concatenate([f.trigger_per_beam for f in a.files])
    n = np.concatenate([f.n_beam for f in a.files]).astype(float)
    err = np.sqrt(np.clip(tpb * (1 - tpb), 0, None) / np.maximum(n, 1))
    bad = _bad_rows(a)
    fig = new_figure(margins=_margins(_MARGINS_1D, labels))
    ax = fig.add_subplot()
    ax.errorbar(x[~bad], tpb[~bad], err[~bad], fmt="o", color="k", label="good spills")
    if bad.any():
        ax.errorbar(x[bad], tpb[bad], err[bad], fmt="s", color=BAD_COLOR, label="bad spills (any check)")
    med = a.medians["trigger_per_beam"][0]
    if np.isfinite(med):
        ax.axhline(med, color="tab:blue", ls="--", label="median over spills")
    _ticks(ax, x, labels, xlabel)
    ax.set_ylabel("triggers per beam particle")
    ax.legend(loc="best")
    _label(ax, a)
    return fig


def figure_events(a: Assessment):
    """Beam particles (counters) and triggered events of each spill."""
    x, labels, xlabel = _spill_axis(a)
    fig = new_figure(margins=_margins(_MARGINS_1D, labels))
    ax = fig.add_subplot()
    for name, label, style in (("n_beam", "beam particles (counters)", "o"),
                               ("n_triggered", "triggered events", "s"), ("n_events", "events read", "x")):
        ax.plot(x, np.concatenate([getattr(f, name) for f in a.files]), style, label=label)
    bad = _bad_rows(a)
    for i in np.flatnonzero(bad):
        ax.axvspan(i - 0.5, i + 0.5, color=BAD_COLOR, alpha=0.15, lw=0)
    _ticks(ax, x, labels, xlabel)
    ax.set_ylabel("entries per spill")
    top = max(int(f.n_beam.max(initial=0)) for f in a.files)
    ax.set_ylim(0, 1.2 * top if top else 1)
    ax.legend(loc="lower left", title="red band: bad spill" if bad.any() else None)
    _label(ax, a)
    return fig


def _map(a: Assessment, values: np.ndarray, pulls: np.ndarray, rows: list[str], row_label: str, zlabel: str, *,
         diverging: bool = False, groups: list[tuple[str, int, int]] | None = None):
    """Spill (x) x channel/plane (y) map of ``values``; cells with pull > 1 boxed in red."""
    x, labels, xlabel = _spill_axis(a)
    fig = new_figure(figsize=(13, 9), margins=_margins(_MARGINS, labels))
    ax = fig.add_subplot()
    ax.set_facecolor(NO_DATA_COLOR)
    v = np.ma.masked_invalid(values.T)
    kw = {"cmap": "viridis"}
    if diverging:
        lim = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        kw = {"cmap": "RdBu_r", "vmin": -lim or -1, "vmax": lim or 1}
    mesh = ax.pcolormesh(np.arange(len(x) + 1) - 0.5, np.arange(len(rows) + 1) - 0.5, v, **kw)
    fig.colorbar(mesh, ax=ax, pad=0.02).set_label(zlabel, fontsize="small")
    fig.text(0.01, 0.01, "grey: too few entries; red box: out of tolerance", ha="left", va="bottom",
             fontsize="x-small")  # (in the figure's corner: clear of the spill labels, however long)
    for s, k in zip(*np.nonzero(np.nan_to_num(pulls) > 1.0), strict=True):
        ax.add_patch(Rectangle((s - 0.5, k - 0.5), 1, 1, fill=False, ec=BAD_COLOR, lw=2))
    _ticks(ax, x, labels, xlabel)
    if groups:
        ax.set_yticks([(lo + hi - 1) / 2 for _, lo, hi in groups], [g for g, _, _ in groups])
        for _, lo, _ in groups[1:]:
            ax.axhline(lo - 0.5, color="w", lw=1)
        ax.set_ylabel(row_label)
    else:
        ax.set_yticks(np.arange(len(rows)), rows, fontsize="x-small")
        ax.set_ylabel(row_label)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlim(-0.5, len(x) - 0.5)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    _label(ax, a)
    return fig


def _detector_groups(channels) -> list[tuple[str, int, int]]:
    """(label, first row, end row) of each detector; single-channel counters are grouped."""
    sizes = {}
    for det, _ in channels:
        sizes[det] = sizes.get(det, 0) + 1
    groups = []
    for i, (det, _) in enumerate(channels):
        det = "counters" if sizes[det] == 1 else det
        if groups and groups[-1][0] == det:
            groups[-1] = (det, groups[-1][1], i + 1)
        else:
            groups.append((det, i, i + 1))
    return groups


def dqm_figures(a: Assessment) -> dict[str, object]:
    """``{file name: Figure}`` of every DQM plot."""
    channels = a.files[0].channels
    planes = a.files[0].planes
    groups = _detector_groups(channels)
    rows = [f"{d}:{c}" for d, c in channels]

    def cat(name):
        return np.concatenate([getattr(f, name) for f in a.files])

    min_n = a.tolerances.calo_min_entries
    ped_shift = np.where(cat("pedestal_entries") >= min_n, cat("pedestal") - a.medians["pedestal"], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain_ratio = np.where(cat("gain_entries") >= a.tolerances.gain_min_entries,
                              cat("gain") / a.medians["gain"], np.nan)
    noise = np.where(cat("digits") >= min_n, cat("noise"), np.nan)
    return {
        "rates_trigger_per_beam.png": figure_rates(a),
        "rates_events_per_spill.png": figure_events(a),
        "calo_occupancy.png": _map(a, cat("occupancy"), a.pulls["occupancy"], rows, "MSADC channel",
                                   "occupancy [digits per event]", groups=groups),
        "calo_pedestal_shift.png": _map(a, ped_shift, a.pulls["pedestal"], rows, "MSADC channel",
                                        "pedestal - median over spills [ADC]", diverging=True, groups=groups),
        "calo_noise.png": _map(a, noise, a.pulls["noise"], rows, "MSADC channel",
                               "pedestal noise (r.m.s. of the pedestal samples) [ADC]", groups=groups),
        "calo_gain_proxy.png": _map(a, gain_ratio - 1.0, a.pulls["gain_ratio"], rows, "MSADC channel",
                                    "MIP-like amplitude / median over spills - 1", diverging=True, groups=groups),
        "tracker_hit_fraction.png": _map(a, cat("hit_fraction"), a.pulls["hit_fraction"], planes,
                                         "tracker plane", "events with a hit on the plane (fraction)"),
        "tracker_hits_per_event.png": _map(a, cat("hits_per_event"), a.pulls["hits_per_event"], planes,
                                           "tracker plane", "hits per event"),
    }


def dqm_plots(a: Assessment, outdir) -> list[Path]:
    """Write the DQM plots (PNG) into ``outdir``; returns their paths."""
    outdir = Path(outdir)
    paths = []
    with na64_style():
        for name, fig in dqm_figures(a).items():
            path = outdir / name
            fig.savefig(path, dpi=DPI)
            paths.append(path)
    return paths
