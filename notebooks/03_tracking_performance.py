# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 — Tracking performance: resolution, efficiency, the low-p_out tail
#
# Momenta come from the kick of the track in the bend view of each spectrometer
# (MS1 -> p_in, MS2 -> p_out).  We compare the measured resolution with the analytic
# expectation of `na64reco.reco.tracking.resolution` (plane resolutions + multiple
# scattering in the planes and the air, Highland), look at the efficiency against what the
# plane efficiencies allow, and at the tail that matters for the background: 160 GeV beam
# muons measured below 80 GeV.  Samples: 6000 beam muons (run 1001, the 2022 period) and 3000 Z'
# signal muons (p_out spread over 10-160 GeV), in a temporary directory.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from hepunits import GeV, MeV
from scipy.stats import chi2, norm

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.reco.tracking.resolution import momentum_resolution
from na64reco.reco.tracking.stage import reconstruct_tracks
from na64reco.sim.generate import simulate

plt.style.use(mplhep.style.ROOT)  # experiment-neutral mplhep style (NA64 is not CMS)
workdir = Path(tempfile.mkdtemp(prefix="na64reco-03-"))
# the calibration trigger (beam counters only) records every muon; the physics trigger keeps the ~1 %
# deflected ones, too few for a resolution or an efficiency
simulate("na64mu", 6000, seed=3, run=1001, output=workdir / "beam.root", process="beam", trigger="calibration")
simulate("na64mu", 3000, seed=4, run=1001, output=workdir / "signal.root", process="signal", mass=300 * MeV)
setup = load_setup("na64mu", run=1001)
conditions = load_conditions(setup, 1001)


def tracks_and_truth(path):
    with open_raw(path) as raw:
        events, truth = raw.events(), raw.truth()
    out = reconstruct_tracks(events, setup, conditions, source=str(path), return_internals=True)
    views = {(v.role, v.bend): v for v in out["_views"]}
    return out, truth, views


def robust_sigma(x):
    """Gaussian-equivalent width from the inter-quartile range (insensitive to tails)."""
    q1, q3 = np.percentile(x, [25, 75])
    return (q3 - q1) / (2 * norm.ppf(0.75))


beam, beam_truth, views = tracks_and_truth(workdir / "beam.root")
print({k: len(v.planes) for k, v in views.items()}, "planes per (station, bend view)")

# %% [markdown]
# ## Resolution of 160 GeV muons: p_in and p_out
# Events with a hit on every plane of the bend view (the analytic expectation assumes all
# planes); width from the inter-quartile range.

# %%
fig, axes = plt.subplots(1, 2, figsize=(16, 6))
for ax, role in zip(axes, ("in", "out"), strict=True):
    view = views[(role, True)]
    p, tp = beam[f"p_{role}"], beam_truth[f"p_{role}"]
    full = (beam[f"nhits_{role}"] == len(view.planes)) & np.isfinite(p) & np.isfinite(tp)
    rel = p[full] / tp[full] - 1
    measured = robust_sigma(rel)
    expected = momentum_resolution(setup, view, np.median(tp[full]) * GeV)
    bins = np.linspace(-5 * expected, 5 * expected, 81)
    ax.hist(rel, bins=bins, histtype="step", lw=2, label=f"reco: $\\sigma$ = {measured:.4f}")
    x = 0.5 * (bins[1:] + bins[:-1])
    ax.plot(x, full.sum() * np.diff(bins)[0] * norm.pdf(x, 0, expected), label=f"analytic: $\\sigma$ = {expected:.4f}")
    ax.set_xlabel(f"$p_{{{role}}}/p_{{{role}}}^{{true}} - 1$")
    ax.set_ylabel("events")
    ax.legend(fontsize=12)
    print(f"p_{role}: sigma(p)/p measured {measured:.4f}, analytic {expected:.4f}, ratio {measured / expected:.2f}; "
          f"median bias {np.median(rel):+.5f} ({full.sum()} events)")
plt.show()

# %% [markdown]
# ## sigma(p_out)/p_out vs momentum (signal muons)
# The scattered muon of a Z' event has p_out = (1 - x) E0; the multiple scattering term
# grows towards low momentum.

# %%
sig, sig_truth, sviews = tracks_and_truth(workdir / "signal.root")
view = sviews[("out", True)]
full = (sig["nhits_out"] == len(view.planes)) & np.isfinite(sig["p_out"]) & np.isfinite(sig_truth["p_out"])
tp = sig_truth["p_out"][full]
rel = sig["p_out"][full] / tp - 1
edges = np.array([10, 20, 30, 45, 60, 80, 110, 170])
centres, measured, errors = [], [], []
for lo, hi in zip(edges[:-1], edges[1:], strict=True):
    m = (tp >= lo) & (tp < hi)
    if m.sum() < 30:
        continue
    s = robust_sigma(rel[m])
    centres.append(np.median(tp[m]))
    measured.append(s)
    errors.append(1.36 * s / np.sqrt(2 * (m.sum() - 1)))  # IQR-width error, Gaussian approximation
grid = np.linspace(8, 170, 100)
fig, ax = plt.subplots(figsize=(10, 6))
ax.errorbar(centres, measured, errors, fmt="ko", label="reconstructed (IQR width)")
ax.plot(grid, [momentum_resolution(setup, view, g * GeV) for g in grid], label="analytic: planes + scattering")
ax.plot(grid, [momentum_resolution(setup, view, g * GeV, scattering=False) for g in grid], ls=":",
        label="analytic: plane resolution only")
ax.set_xlabel(r"true $p_{out}$ [GeV]")
ax.set_ylabel(r"$\sigma(p_{out})/p_{out}$")
ax.legend(fontsize=12)
plt.show()
for c, s in zip(centres, measured, strict=True):
    print(f"p_out ~ {c:5.1f} GeV: measured {s:.4f}, analytic {momentum_resolution(setup, view, c * GeV):.4f}")

# %% [markdown]
# ## Efficiency
# A track of the bend view may miss at most k of its N planes (the run period's tracking rule:
# k = 0 in 2022, a hit on every plane; `max_missing_of`): with plane efficiencies e_i (the run's
# conditions) the allowed efficiency is the probability of at most k missing hits.  The measured
# efficiency also contains the geometric acceptance of the planes for the beam spot and the
# halo (`benchmarks/validate_tracking.py` folds in the spot acceptance).

# %%
tracking = load_tracking_config(setup)


def at_most_missing(e, k):
    """Probability that at most k of the planes with efficiencies e have no hit."""
    dist = np.array([1.0])  # distribution of the number of missing hits
    for ei in e:
        dist = np.append(dist * ei, 0.0) + np.append(0.0, dist * (1 - ei))
    return dist[:k + 1].sum()


for role in ("in", "out"):
    v = views[(role, True)]
    e = np.array([conditions.plane_efficiency(setup.planes[i]) for i in v.planes])
    k = tracking.max_missing_of(v.station, v.coord)
    has_true = np.isfinite(beam_truth[f"p_{role}"]) & (beam_truth["process"] == PROCESSES["beam"])
    eff = np.isfinite(beam[f"p_{role}"][has_true]).mean()
    err = np.sqrt(eff * (1 - eff) / has_true.sum())
    print(f"p_{role}: reconstructed in {eff:.4f} +- {err:.4f} of {has_true.sum()} beam muons; "
          f"allowed by {e.size} planes (at most {k} missing): {at_most_missing(e, k):.4f}")

# %% [markdown]
# ## The low-p_out tail of beam muons
# Background from momentum mis-reconstruction: beam muons (true p_out > 100 GeV)
# reconstructed inside the signal box (p_out < 80 GeV).

# %%
p, tp = beam["p_out"], beam_truth["p_out"]
reco_beam = np.isfinite(tp) & (tp > 100) & np.isfinite(p)
low = reco_beam & (p < 80)
n, N = int(low.sum()), int(reco_beam.sum())
upper = chi2.ppf(0.9, 2 * (n + 1)) / 2
print(f"{n} of {N} beam muons measured below 80 GeV: fraction {n / N:.1e} (90% CL upper limit {upper / N:.1e})")
fig, ax = plt.subplots(figsize=(10, 6))
ax.hist(p[reco_beam], bins=np.linspace(0, 250, 126), histtype="step", lw=2, label="reco $p_{out}$, true > 100 GeV")
ax.hist(p[np.isfinite(p) & np.isfinite(tp) & (tp <= 100)], bins=np.linspace(0, 250, 126), histtype="step", lw=2,
        label="true $p_{out}$ < 100 GeV (radiative losses)")
ax.axvspan(0, 80, color="0.9", zorder=0, label="signal box")
ax.set_yscale("log")
ax.set_xlabel(r"$p_{out}$ [GeV]")
ax.set_ylabel("events")
ax.legend(fontsize=12)
plt.show()
n_tracks = beam["n_tracks_out"][reco_beam]
print("n_tracks_out of the beam muons (0, 1, 2, 3+):",
      [int(np.sum(n_tracks == k)) for k in (0, 1, 2)] + [int(np.sum(n_tracks >= 3))])
