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
# # 01 — Quickstart: simulate, inspect, reconstruct, analyse, display
#
# A small NA64mu run (160 GeV muons on the ECAL target) goes through the whole chain:
# the fast simulator writes the raw ROOT layout (with truth), we read it back, reconstruct
# momenta and energies, run the blinded `na64mu_invisible` coffea processor and draw one
# signal event.  Everything is written into a temporary directory; the samples are small
# (a few thousand muons) so the notebook runs in well under a minute once the numba kernels
# are compiled and cached; the first run in a new environment compiles them (minutes).

# %%
import tempfile
from pathlib import Path

import awkward as ak
import matplotlib.pyplot as plt
import mplhep
import numpy as np
from hepunits import MeV

from na64reco.conditions import load_conditions
from na64reco.constants import MUON_MASS
from na64reco.display import draw_event
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.material import highland
from na64reco.reco.event import attach_truth, reconstruct
from na64reco.runner import RunOptions, cutflow_summary, format_summary, run_files
from na64reco.sim.generate import simulate

plt.style.use(mplhep.style.ROOT)  # experiment-neutral mplhep style (NA64 is not CMS)
workdir = Path(tempfile.mkdtemp(prefix="na64reco-01-"))
print("working directory:", workdir)

# %% [markdown]
# ## Simulate
# `simulate` runs N beam particles (MOT); events failing the trigger are not written but
# counted in the `spills` tree.  `process="mixture"` is the beam with its admixtures
# (halo, pile-up, hadrons, decays in flight, ...); `process="signal"` gives every muon a
# dark-bremsstrahlung Z' emission of the given mass.

# %%
mc = simulate("na64mu", 4000, seed=1, run=1001, output=workdir / "mc.root")
sig = simulate("na64mu", 2000, seed=2, run=1001, output=workdir / "signal.root", process="signal",
               mass=100 * MeV)
for r in (mc, sig):
    print(f"{r.output.name}: {r.n_beam} MOT -> {r.n_written} triggered events in {r.n_spills} spills, "
          f"{r.seconds:.1f} s; processes {r.process_counts}")

# %% [markdown]
# ## Inspect the raw file

# %%
raw = open_raw(workdir / "mc.root")
print(f"setup {raw.setup}, run {raw.run}, {raw.n_events} events, truth: {raw.has_truth}")
spills = raw.spills()
print("MOT (sum of spills.n_beam):", spills["n_beam"].sum())
events = raw.events()
print("event fields:", events.fields)
first = events[0]
print(f"event {first.event}: {len(first.calo)} MSADC digits, {len(first.apv)} APV digits, "
      f"{len(first.straw)} straw hits")

# %% [markdown]
# ## Reconstruct
# One flat record per event: momenta from the two magnetic spectrometers (MS1 -> p_in,
# MS2 -> p_out), calorimeter energies, counters.  GeV, NaN where not reconstructed.

# %%
setup = load_setup(raw.setup, run=raw.run)
conditions = load_conditions(setup, raw.run)
reco = attach_truth(reconstruct(events, setup, conditions, source=str(raw.path)), raw.truth())
print(reco.fields)

# %%
fig, axes = plt.subplots(1, 3, figsize=(21, 6))
p_in, p_out = np.asarray(reco.p_in), np.asarray(reco.p_out)
axes[0].hist(p_in[np.isfinite(p_in)], bins=np.linspace(100, 220, 121), histtype="step", lw=2)
axes[0].set_xlabel(r"$p_{in}$ [GeV]")
axes[1].hist(p_out[np.isfinite(p_out)], bins=np.linspace(0, 240, 121), histtype="step", lw=2)
axes[1].set_xlabel(r"$p_{out}$ [GeV]")
axes[1].set_yscale("log")
axes[2].hist(np.asarray(reco.ecal_energy), bins=np.linspace(0, 5, 101), histtype="step", lw=2)
axes[2].set_xlabel(r"$E_{ECAL}$ [GeV]")
axes[2].set_yscale("log")
for ax in axes:
    ax.set_ylabel("events")
fig.suptitle(f"simulated NA64mu run, {mc.n_beam} MOT", fontsize=16)
plt.show()

# %% [markdown]
# Reconstructed vs true outgoing momentum (a beam muon keeps ~160 GeV; the radiative tail
# and the halo populate lower momenta):

# %%
t = np.asarray(reco.truth_p_out)
ok = np.isfinite(t) & np.isfinite(p_out)
fig, ax = plt.subplots(figsize=(8, 7))
ax.hist2d(t[ok], p_out[ok], bins=(np.linspace(0, 200, 81),) * 2, cmin=1, norm="log")
ax.set_xlabel(r"true $p_{out}$ [GeV]")
ax.set_ylabel(r"reconstructed $p_{out}$ [GeV]")
plt.show()
print(f"median p_out/p_out(true) - 1 = {np.median(p_out[ok] / t[ok] - 1):+.4f} ({ok.sum()} events)")

# %% [markdown]
# ## Muon directions as vectors
# `reco.mu_in` and `reco.mu_out` are scikit-hep `vector` records (`Momentum4D`: px, py, pz
# in GeV and the muon mass) built from p_in / p_out and the fitted track slopes at the ECAL
# front, None where a track projection is missing.  `reco.mu_out.theta` is the polar angle
# in the lab (the beam crosses the ECAL at ~7.5 mrad, bent by MS1); the scattering angle is
# the kink `reco.mu_in.deltaangle(reco.mu_out)`.  For beam muons it is multiple scattering in
# the 40 X0 of the ECAL: a Rayleigh distribution with the Highland theta0.
# `(reco.mu_in - reco.mu_out).mag` is the momentum given to the target.
#
# The physics trigger asks for a deflected muon (S4/Smu off the beam axis), so it writes few
# unscattered beam muons; their kinks are looked at in a calibration-trigger run (its
# beam-counter terms only: nearly every beam muon is written).

# %%
cal = simulate("na64mu", 3000, seed=3, run=1001, output=workdir / "calib.root", process="beam", trigger="calibration")
cal_raw = open_raw(cal.output)
cal_reco = reconstruct(cal_raw.events(), setup, conditions, source=str(cal_raw.path))
kink = ak.to_numpy(ak.fill_none(cal_reco.mu_in.deltaangle(cal_reco.mu_out), np.nan)) * 1e3  # mrad
q = ak.to_numpy(ak.fill_none((cal_reco.mu_in - cal_reco.mu_out).mag, np.nan))  # GeV
beam = (np.asarray(cal_reco.p_out) > 100) & np.isfinite(kink)
theta0 = 1e3 * highland(setup.beam.energy, MUON_MASS, setup.detector("ECAL").x0_fraction)  # mrad
bins = np.linspace(0, 3, 61)
x = 0.5 * (bins[1:] + bins[:-1])
fig, ax = plt.subplots(figsize=(9, 6))
ax.hist(kink[beam], bins=bins, histtype="step", lw=2, label="beam muons, $p_{out}$ > 100 GeV")
ax.plot(x, beam.sum() * np.diff(bins)[0] * x / theta0**2 * np.exp(-(x**2) / (2 * theta0**2)),
        label=rf"Highland, ECAL: $\theta_0$ = {theta0:.2f} mrad")
ax.set_xlabel(r"kink angle $\angle(\mu_{in}, \mu_{out})$ [mrad]")
ax.set_ylabel("events")
ax.legend(fontsize=12)
plt.show()
print(f"median kink {np.median(kink[beam]):.3f} mrad, Rayleigh median of theta0 {theta0 * np.sqrt(2 * np.log(2)):.3f} "
      f"mrad ({beam.sum()} beam muons); median |p_in - p_out| (3-vectors) {np.median(q[beam]):.2f} GeV")

# %% [markdown]
# ## Run the blinded processor
# The same reconstruction inside the `na64mu_invisible` coffea processor, iterative
# executor.  Simulated files (with truth) are weighted with the truth weights; a data file
# (no truth) would have its signal box hidden.

# %%
out = run_files({"mc": [str(workdir / "mc.root")], "signal_100MeV": [str(workdir / "signal.root")]},
                RunOptions("na64mu_invisible", executor="iterative"))
print(format_summary(cutflow_summary(out)))

# %%
fig, ax = plt.subplots(figsize=(9, 6))
for name, label in (("mc", "beam + backgrounds"), ("signal_100MeV", "Z', m = 100 MeV")):
    h = out[name]["hists"]["p_out"][{"stage": "selected"}]
    mplhep.histplot(h / h.sum().value, ax=ax, label=label, lw=2)
ax.axvspan(0, 80, color="0.9", zorder=0, label="signal box")
ax.set_yscale("log")
ax.set_ylabel("fraction after all other cuts")
ax.legend()
plt.show()

# %% [markdown]
# ## Event display of a signal event
# Top (x-z, MS2 bends in x) and side (y-z, MS1 bends in y) views: tracker hits, fitted
# tracks, calorimeter cell energies.

# %%
with open_raw(workdir / "signal.root") as sraw:
    truth = sraw.truth()
    i = int(np.flatnonzero((truth["p_out"] < 60) & (truth["process"] == PROCESSES["signal"]))[0])
    fig = draw_event(sraw.events(i, i + 1), 0, setup, conditions,
                     title=f"Z' signal (m = 100 MeV): true p_out = {truth['p_out'][i]:.1f} GeV, "
                           f"x = {truth['x'][i]:.2f}")
plt.show()
raw.close()
