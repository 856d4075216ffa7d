"""Validate the tracking against simulation truth and write PNG plots.

    python benchmarks/validate_tracking.py BEAM.root [--signal SIG.root] [--pileup PU.root]
                                           [--outdir validation/tracking]

BEAM.root: ``na64reco simulate --process beam`` (160 GeV muons, NA64mu) or an NA64e
file.  Prints and plots:

* sigma(p)/p of p_in and p_out (events with a hit on every plane of the bend view)
  against the analytic expectation of :mod:`na64reco.reco.tracking.resolution`;
  with --signal also sigma(p_out)/p_out in bins of the true p_out;
* the efficiency (p reconstructed) against the value the plane efficiencies allow with
  the >= N-1 rule, times the geometric acceptance of the beam spot (Gaussian spot of the
  setup through the +-width/2 planes);
* the tail: fraction of 160 GeV muons (true p_out > 100 GeV) measured below 80 GeV, split
  by likely cause (second track in the station, ambiguous hit on the track, missing plane).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from na64reco.conditions import load_conditions  # noqa: E402
from na64reco.geometry import load_setup  # noqa: E402
from na64reco.io.raw import open_raw  # noqa: E402
from na64reco.reco.tracking import reconstruct_tracks  # noqa: E402
from na64reco.reco.tracking.resolution import momentum_resolution  # noqa: E402

plt.style.use(mplhep.style.ROOT)


def robust_sigma(x):
    q1, q3 = np.percentile(x, [25, 75])
    return (q3 - q1) / 1.349


def allowed_efficiency(effs):
    effs = np.asarray(effs)
    return np.prod(effs) + sum(np.prod(np.delete(effs, i)) * (1 - effs[i]) for i in range(len(effs)))


def acceptance(setup, view):
    """Fraction of the Gaussian beam spot inside +-width/2 of every plane of ``view``
    (spot centred on the reference trajectory; divergence neglected)."""
    sig = setup.beam.spot_sigma_x if view.coord == "x" else setup.beam.spot_sigma_y
    half = min(setup.planes[i].width for i in view.planes) / 2
    return 2 * norm.cdf(half / sig) - 1


def run(path, outdir):
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    cond = load_conditions(setup, raw.run)
    events, truth = raw.events(), raw.truth()
    out = reconstruct_tracks(events, setup, cond, source=str(path), return_internals=True)
    views = {(v.role, v.bend): v for v in out["_views"]}
    lines = [f"file {path}: {len(events)} events ({setup.name})"]
    roles = [r for r in ("in", "out") if f"p_{r}" in out]
    fig, axes = plt.subplots(1, len(roles), figsize=(8 * len(roles), 6))
    axes = np.atleast_1d(axes)
    for ax, role in zip(axes, roles, strict=True):
        view = views[(role, True)]
        p, tp = out[f"p_{role}"], truth[f"p_{role}"]
        full = (out[f"nhits_{role}"] == len(view.planes)) & np.isfinite(p) & np.isfinite(tp)
        rel = p[full] / tp[full] - 1
        meas = robust_sigma(rel)
        exp = momentum_resolution(setup, view, np.median(tp[full]) * 1000.0)
        lines.append(f"p_{role}: sigma(p)/p measured {meas:.4f} (IQR/1.349, {full.sum()} full-hit events), "
                     f"analytic {exp:.4f}, ratio {meas / exp:.3f}; median bias {np.median(rel):+.5f}")
        bins = np.linspace(-5 * exp, 5 * exp, 81)
        ax.hist(rel, bins=bins, histtype="step", label=f"reco, sigma={meas:.4f}")
        x = 0.5 * (bins[1:] + bins[:-1])
        ax.plot(x, full.sum() * (bins[1] - bins[0]) * norm.pdf(x, 0, exp), label=f"analytic, sigma={exp:.4f}")
        ax.set_xlabel(f"p_{role} / p_{role}(true) - 1 (all planes hit)")
        ax.set_ylabel("events")
        ax.legend(fontsize=12)
        # efficiency
        allowed = allowed_efficiency([setup.planes[i].efficiency for i in view.planes])
        acc = acceptance(setup, view)
        has_true = np.isfinite(tp)
        eff = np.isfinite(p[has_true]).mean()
        lines.append(f"p_{role}: efficiency {eff:.4f}; allowed by planes (>= N-1 of {len(view.planes)}) "
                     f"{allowed:.4f} x spot acceptance {acc:.4f} = {allowed * acc:.4f}; "
                     f"ratio {eff / (allowed * acc):.4f}")
        n_tr = out[f"n_tracks_{role}"][has_true]
        lines.append(f"p_{role}: n_tracks distribution (-1 busy, 0, 1, 2, 3+): "
                     f"{[int(np.sum(n_tr == k)) for k in (-1, 0, 1, 2)] + [int(np.sum(n_tr >= 3))]}")
    fig.tight_layout()
    fig.savefig(outdir / f"{setup.name}_resolution.png", dpi=80)
    plt.close(fig)
    if "p_out" in out:
        tail_plot(out, truth, setup, views, outdir, lines)
    return lines


def tail_plot(out, truth, setup, views, outdir, lines):
    p, tp = out["p_out"], truth["p_out"]
    beam = np.isfinite(tp) & (tp > 100)
    reco = beam & np.isfinite(p)
    low = reco & (p < 80)
    frac = low.sum() / max(reco.sum(), 1)
    h = out["_hits"]
    sel = out["_tracks"]["hits"]
    vi = [i for i, v in enumerate(out["_views"]) if v.role == "out" and v.bend][0]
    idx = np.flatnonzero(low)
    amb = np.array([any(h["ambiguous"][k] for k in sel[e, vi] if k >= 0) for e in idx], bool)
    second = out["n_tracks_out"][idx] >= 2
    missing = out["nhits_out"][idx] < len(views[("out", True)].planes)
    pu = truth["process"][idx] == 7
    lines.append(f"tail: {low.sum()} of {reco.sum()} reconstructed muons with true p_out > 100 GeV measured "
                 f"< 80 GeV: fraction {frac:.2e} (90% CL upper {upper90(low.sum()) / max(reco.sum(), 1):.2e})")
    lines.append(f"tail causes (not exclusive): >=2 tracks in MS2 {second.sum()}, pile-up process {pu.sum()}, "
                 f"ambiguous hit (MM single channel / straw L-R) on the track {amb.sum()}, a plane missing "
                 f"{missing.sum()}")
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.hist(p[reco], bins=np.linspace(0, 250, 126), histtype="step", label="reco p_out (true > 100 GeV)")
    ax.axvline(80, color="r", ls="--", label=f"80 GeV: tail {low.sum()}/{reco.sum()}")
    ax.set_yscale("log")
    ax.set_xlabel("p_out [GeV]")
    ax.set_ylabel("events")
    ax.legend(fontsize=12)
    fig.tight_layout()
    fig.savefig(outdir / f"{setup.name}_pout_tail.png", dpi=80)
    plt.close(fig)


def upper90(n):
    from scipy.stats import chi2

    return chi2.ppf(0.9, 2 * (n + 1)) / 2


def signal_resolution(path, outdir):
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    cond = load_conditions(setup, raw.run)
    events, truth = raw.events(), raw.truth()
    out = reconstruct_tracks(events, setup, cond, return_internals=True)
    view = [v for v in out["_views"] if v.role == "out" and v.bend][0]
    full = (out["nhits_out"] == len(view.planes)) & np.isfinite(out["p_out"]) & np.isfinite(truth["p_out"])
    tp = truth["p_out"][full]
    rel = out["p_out"][full] / tp - 1
    edges = np.array([10, 20, 30, 45, 60, 80, 110, 170])
    centers, meas, err, exp = [], [], [], []
    lines = [f"signal file {path}: {len(events)} events, {full.sum()} with full-hit outgoing tracks"]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (tp >= a) & (tp < b)
        if m.sum() < 30:
            continue
        s = robust_sigma(rel[m])
        c = np.median(tp[m])
        centers.append(c)
        meas.append(s)
        err.append(s / np.sqrt(2 * (m.sum() - 1)) * 1.36)
        exp.append(momentum_resolution(setup, view, c * 1000.0))
        lines.append(f"  p_out {a:3d}-{b:3d} GeV ({m.sum():5d} ev): sigma/p {s:.4f} +- {err[-1]:.4f}, "
                     f"analytic {exp[-1]:.4f}, ratio {s / exp[-1]:.3f}")
    grid = np.linspace(8, 170, 100)
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.errorbar(centers, meas, yerr=err, fmt="o", label="reco (IQR sigma, full-hit tracks)")
    ax.plot(grid, [momentum_resolution(setup, view, g * 1000.0) for g in grid], label="analytic (points + MS)")
    ax.plot(grid, [momentum_resolution(setup, view, g * 1000.0, scattering=False) for g in grid], ls=":",
            label="analytic, point resolution only")
    ax.set_xlabel("true p_out [GeV]")
    ax.set_ylabel("sigma(p_out)/p_out")
    ax.legend(fontsize=12)
    fig.tight_layout()
    fig.savefig(outdir / f"{setup.name}_pout_resolution_vs_p.png", dpi=80)
    plt.close(fig)
    return lines


def pileup_counts(path):
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    out = reconstruct_tracks(raw.events(), setup, load_conditions(setup, raw.run))
    lines = [f"pile-up file {path}:"]
    for role in ("in", "out"):
        n = out[f"n_tracks_{role}"]
        lines.append(f"  n_tracks_{role}: fraction >= 2: {np.mean(n >= 2):.3f}; distribution (0,1,2,3+): "
                     f"{[int(np.sum(n == k)) for k in (0, 1, 2)] + [int(np.sum(n >= 3))]}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("beam")
    ap.add_argument("--signal")
    ap.add_argument("--pileup")
    ap.add_argument("--outdir", default="validation/tracking")
    args = ap.parse_args(argv)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    lines = run(args.beam, outdir)
    if args.signal:
        lines += signal_resolution(args.signal, outdir)
    if args.pileup:
        lines += pileup_counts(args.pileup)
    text = "\n".join(lines)
    print(text)
    (outdir / "summary.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
