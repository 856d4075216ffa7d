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
# # 04 — NA64mu blinded analysis: cut-flows, N-1, the blind box, background from sidebands
#
# Four simulated samples, all in a temporary directory:
#
# * `mc`: the beam with its admixtures (halo, pile-up, hadrons, decays, ...), with truth;
# * `signal`: Z' of 100 MeV, every muon a signal interaction, with truth (weights = expected
#   events per MOT for the default coupling);
# * `kdecay`: a forced K -> mu nu sample (every muon replaced by the decay chain, weighted with
#   the decay probability), with truth;
# * `data`: the same mixture **without truth**: for the processor this is data, and its
#   signal box stays blind.
#
# This notebook never unblinds (it has no unblinding token; only `na64reco unblind` on a
# frozen analysis can issue one, see notebook 06).

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from hepunits import MeV

from na64reco import background as bg
from na64reco.geometry import load_setup
from na64reco.plotting import Blinding, blinded_intervals, data_points, draw_blinded, project_modules
from na64reco.runner import RunOptions, cutflow_summary, format_summary, run_files
from na64reco.selection import load_selection
from na64reco.sim.generate import simulate

plt.style.use(mplhep.style.ROOT)  # experiment-neutral mplhep style (NA64 is not CMS)
workdir = Path(tempfile.mkdtemp(prefix="na64reco-04-"))
samples = {
    "mc": dict(n=8000, process="mixture", truth=True),
    "signal": dict(n=3000, process="signal", mass=100 * MeV, truth=True),
    "kdecay": dict(n=1500, process="kdecay", truth=True),
    # data seed: the tail fit below needs >= 5 events in its 80-150 GeV sideband, ~5-10 in 1e5 MOT
    "data": dict(n=100000, process="mixture", truth=False, seed=44),
}
fileset = {}
for i, (name, s) in enumerate(samples.items()):
    path = workdir / f"{name}.root"
    simulate("na64mu", s["n"], seed=s.get("seed", 40 + i), run=1001, output=path, process=s["process"],
             mass=s.get("mass"), truth=s["truth"])
    fileset[name] = [str(path)]
out = run_files(fileset, RunOptions("na64mu_invisible", executor="iterative"))
mot = {name: out[name]["provenance"].n_beam for name in out}
print("MOT per sample:", mot)

# %% [markdown]
# ## Cut-flows
# The data cut-flow ends with `blinded`; simulated samples show every row.

# %%
print(format_summary(cutflow_summary({k: out[k] for k in ("signal", "data")})))

# %%
selection = load_selection("na64mu_invisible")
fig, ax = plt.subplots(figsize=(12, 7))
for name, colour in (("mc", "tab:blue"), ("signal", "tab:orange"), ("data", "k")):
    rows = out[name]["cutflow"].to_dict()["cutflow"]
    cuts = [r["cut"] for r in rows]
    cumul = [r["cumulative"] if r["cumulative"] != "blinded" else np.nan for r in rows]
    ax.plot(range(len(rows)), cumul, "o-", color=colour, label=name)
ax.text(len(cuts) - 1, 0.05, "data: blinded", ha="center", rotation=90, fontsize=12)
ax.set_xticks(range(len(cuts)), cuts, rotation=60, ha="right", fontsize=11)
ax.set_ylabel("cumulative efficiency")
ax.set_ylim(0, 1.05)
ax.legend()
plt.show()

# %% [markdown]
# ## Cut variables and N-1 distributions
# For the signal, the N-1 distribution of each cut (its variable for events passing all the
# other cuts and the box).  For MC and data the N-1 distributions require the box, which is
# blind for data, so the panels show their distributions *before cuts* (data: the protected
# region, p_out < 80 GeV or no outgoing track, is already removed, except clear veto controls;
# the MC keeps those events, most of them without an outgoing track, so data lie below MC
# here: that is the blinding, not the normalisation).  The last panel is p_out after
# all cuts: the box (hatched) is empty for data.  MC is normalised to the data MOT; the
# signal is scaled to the MC area.

# %%
panels = ["ecal_mip", "no_veto", "hcal_mip", "signal_box"]
fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6))
mc_scale = mot["data"] / mot["mc"]



for ax, cut in zip(axes, panels, strict=True):
    if cut == "signal_box":
        hs = {name: out[name]["nminus1"][cut] for name in ("mc", "signal", "data")}
        title = "p_out after all cuts (N-1 of the box)"
    else:
        var = selection.cut(cut).variable
        hs = {name: project_modules(out[name]["hists"][var][{"stage": "all"}]) for name in ("mc", "data")}
        hs["signal"] = project_modules(out["signal"]["nminus1"][cut])
        title = f"{cut}: MC/data before cuts, signal N-1"
    area = (hs["mc"] * mc_scale).sum().value
    mplhep.histplot(hs["mc"] * mc_scale, ax=ax, label="MC (scaled to data MOT)", color="tab:blue", yerr=False)
    mplhep.histplot(hs["signal"] * (area / hs["signal"].sum().value), ax=ax, label="Z' 100 MeV (shape)", yerr=False,
                    color="tab:orange")
    data_points(ax, hs["data"], label="data (blinded)")
    if cut != "signal_box":
        c = selection.cut(cut)
        for edge in (c.min, c.max):
            if edge is not None:
                ax.axvline(edge, color="r", ls="--")
    else:
        edges = hs["data"].axes[0].edges  # the hidden range read from selections/blinding.yaml and the box
        draw_blinded(ax, blinded_intervals(Blinding.of(selection), "p_out", edges[0], edges[-1]), "blinded (data)")
    ax.set_yscale("log")
    ax.set_ylim(0.5, None)
    ax.set_title(title, fontsize=13)
    ax.legend(fontsize=10)
plt.show()

# %% [markdown]
# ## The data box stays blind
# Regions of the data: the signal box reads `blinded`; the sidebands are visible.

# %%
for name, r in out["data"]["regions"].items():
    print(f"data {name:18s}: {r.to_dict()}")
h = out["data"]["nminus1"]["signal_box"]
edges = h.axes[0].edges
print("data events after all cuts with p_out < 80 GeV in any histogram:", h.values()[edges[:-1] < 80].sum())

# %% [markdown]
# ## Background estimate (still blind)
# * momentum mis-reconstruction: extended maximum-likelihood fit of the p_out tail of data
#   after all cuts in the 80-150 GeV sideband, extrapolated into the box (exponential
#   tail; the power-law tail gives the shape systematic), scaled to 1.98e10 MOT;
# * K -> mu nu in flight: the forced MC sample in the box, scaled by the probability per
#   MOT of the setup's mixture and the exposure.
#
# The samples here are tiny (1e5 MOT of "data" for an extrapolation to 2e10 MOT): the
# numbers show the method, with the errors they deserve, not a result.  The trigger fires on
# deflected muons (S4/Smu beside the beam), so after all cuts the data are the triggered
# tail of the beam, reconstructed near 150 GeV; 80-120 GeV is empty in 1e5 MOT and the
# sideband reaches up to 150 GeV (the 2022 tracking keeps ~1/4 of the muons).  The sideband events
# are beam muons whose p_out was mis-measured (compare notebook 03's tail): the simulated
# tracking tail is what this estimate measures, and it is compared below with the published
# NA64mu table.

# %%
EXPOSURE = 1.98e10
mis = bg.misreconstruction_background(counts=h.values(), edges=edges, sideband=(80, 150), box=(None, 80),
                                      peak=160, model="exponential", alternative="power_law")
mis = mis.scaled(EXPOSURE / mot["data"])
k_box = out["kdecay"]["regions"]["signal_box"]
# the forced sample is weighted (biased sampling): each event carries P(decay in a region that reaches the box) x BR
# per beam kaon, so the probability per MOT is the kaons per MOT (docs/backgrounds.md)
beam = load_setup("na64mu").beam
p_k = beam.hadron_admixture * beam.kaon_to_pion
first = out["kdecay"]["cutflow"].rows()[0]  # the sample's mean weight: the limit if no MC event is in the box
kdec = bg.mc_component_from_sums("K -> mu nu in flight", k_box.n, k_box.sumw, k_box.sumw2,
                                 n_simulated=mot["kdecay"], exposure=EXPOSURE, probability=p_k,
                                 mean_weight=first["sumw"] / first["events"])
table = bg.BackgroundTable((mis, kdec), f"expected background in the box for {EXPOSURE:.3g} MOT (this notebook)")
print(table.format())
print()
print(bg.published_na64mu_2022().format())
print(f"\nsideband events used by the tail fit: {mis.details['n_sideband']}; "
      f"K-decay MC events in the box: {k_box.n} of {mot['kdecay']} forced decays")
