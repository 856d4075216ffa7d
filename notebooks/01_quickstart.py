# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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
# (a few thousand muons) so the notebook runs in well under a minute.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from hepunits import MeV

from na64reco.conditions import load_conditions
from na64reco.display import draw_event
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.reco.event import attach_truth, reconstruct
from na64reco.runner import RunOptions, cutflow_summary, format_summary, run_files
from na64reco.sim.generate import simulate

mplhep.style.use("CMS")
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
