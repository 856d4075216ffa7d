"""Control plots (PNG, mplhep style) of a processor output.

``control_plots(out, outdir)`` writes, per dataset: the cut-flow (events after each
cut, log scale; a blinded signal-box row is drawn as a hatched "blinded" label, never
as a bar), the N-1 distribution of every cut with its window marked, and the key
distributions before cuts and after all cuts.  Plots only read the (already blinded)
output; they never see events.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import matplotlib.pyplot as plt
import mplhep
import numpy as np

from na64reco.selection.cuts import BLINDED, BOX


def plot_cutflow(table, title: str, path: Path) -> None:
    rows = table.rows()
    labels = [r["cut"] for r in rows]
    values = [np.nan if r["sumw"] == BLINDED else r["sumw"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 6))
    x = np.arange(len(labels))
    ax.bar(x, values, color="tab:blue")
    for i, r in enumerate(rows):
        if r["sumw"] == BLINDED:
            ax.text(i, 0.03, BLINDED, rotation=90, ha="center", va="bottom", color="tab:red",
                    transform=ax.get_xaxis_transform(), fontsize=11, fontweight="bold")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("weighted events" if table.weighted else "events")
    ax.set_title(title, fontsize=10)
    fig.subplots_adjust(bottom=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _marks(ax, lo, hi):
    for v in (lo, hi):
        if v is not None:
            ax.axvline(v, color="tab:red", ls="--", lw=1)


def plot_hist1d(h, title: str, path: Path, *, lo=None, hi=None, labels=None) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    hs = h if isinstance(h, list) else [h]
    mplhep.histplot(hs, ax=ax, label=labels, yerr=[np.sqrt(x.variances()) for x in hs])
    _marks(ax, lo, hi)
    if any(x.values().sum() > 0 for x in hs):
        ax.set_yscale("log")
    if labels:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_hist2d(h, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    mplhep.hist2dplot(h, ax=ax, norm=matplotlib.colors.LogNorm() if h.values().max() > 0 else None)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def project_modules(h):
    """Sum a per-module histogram over modules (plots show the per-module values)."""
    return h.project(h.axes[-1].name) if "module" in h.axes.name else h


def data_points(ax, h, **kw):
    """Data as points with Poisson errors, non-empty bins only (clearer on a log scale)."""
    x, n = h.axes[0].centers, h.values()
    m = n > 0
    ax.errorbar(x[m], n[m], yerr=np.sqrt(n[m]), fmt="ko", ms=4, **kw)


def control_plots(out: dict, outdir: str | Path, selection=None) -> list[Path]:
    """Write the control plots of every dataset in ``out``; return the files written."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset, acc in out.items():
        if "cutflow" not in acc:
            continue
        sel = selection
        if sel is None:
            from na64reco.selection import load_selection

            sel = load_selection(acc["provenance"].selection_file)
        tag = " (data, blinded)" if acc["cutflow"].blinded else ""
        p = outdir / f"{dataset}_cutflow.png"
        plot_cutflow(acc["cutflow"], f"{dataset}: cut-flow{tag}", p)
        written.append(p)
        for name, h in acc["nminus1"].items():
            if name == BOX:
                region, var = sel.signal_box, sel.signal_box.variable
                lo, hi = region.min, region.max
            else:
                cut = sel.cut(name)
                var, lo, hi = cut.variable, cut.min, cut.max
                if cut.type == "equal":
                    lo, hi = cut.value, cut.value + 1
            p = outdir / f"{dataset}_nminus1_{name}.png"
            plot_hist1d(project_modules(h), f"{dataset}: N-1 {name} ({var}){tag}", p, lo=lo, hi=hi)
            written.append(p)
        for name, h in acc["hists"].items():
            p = outdir / f"{dataset}_{name}.png"
            if name.count("_vs_"):
                plot_hist2d(h[{"stage": "selected"}], f"{dataset}: {name}, all cuts{tag}", p)
            else:
                plot_hist1d([project_modules(h[{"stage": s}]) for s in ("all", "selected")],
                            f"{dataset}: {name}{tag}", p, labels=["before cuts", "after all cuts"])
            written.append(p)
    return written
