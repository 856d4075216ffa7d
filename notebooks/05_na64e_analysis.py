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
# # 05 — NA64e blinded analysis: SRD tag, ECAL energy, HCAL veto, box E_ECAL < 50 GeV
#
# The missing-energy search with the 100 GeV electron beam: an electron tagged by the
# synchrotron-radiation detector (SRD), one upstream track, a shower starting in the
# preshower, nothing in VETO, E_HCAL < 2 GeV; the signal box is E_ECAL < 50 GeV (an A'
# carried away more than half of the energy).  Samples (temporary directory): the beam
# mixture with truth (`mc`), an A' of 100 MeV (`signal`) and the mixture without truth
# (`data`, blinded).  This notebook never unblinds.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
from hepunits import MeV

from na64reco import background as bg
from na64reco.efficiency import efficiency_from_output, x_acceptance
from na64reco.errors import NA64Error
from na64reco.io.raw import open_raw
from na64reco.plotting import Blinding, blinded_intervals, data_points, draw_blinded, project_modules
from na64reco.runner import RunOptions, cutflow_summary, format_summary, run_files
from na64reco.selection import load_selection
from na64reco.sim.generate import simulate

plt.style.use(mplhep.style.ROOT)  # experiment-neutral mplhep style (NA64 is not CMS)
workdir = Path(tempfile.mkdtemp(prefix="na64reco-05-"))
samples = {
    "mc": dict(n=5000, process="mixture", truth=True),
    "signal": dict(n=3000, process="signal", mass=100 * MeV, truth=True),
    "data": dict(n=10000, process="mixture", truth=False),
}
fileset = {}
for i, (name, s) in enumerate(samples.items()):
    path = workdir / f"{name}.root"
    r = simulate("na64e", s["n"], seed=50 + i, run=1001, output=path, process=s["process"],
                 mass=s.get("mass"), truth=s["truth"])
    print(f"{name}: {r.n_beam} EOT -> {r.n_written} triggered; {r.process_counts}")
    fileset[name] = [str(path)]
out = run_files(fileset, RunOptions("na64e_invisible", executor="iterative"))
eot = {name: out[name]["provenance"].n_beam for name in out}
selection = load_selection("na64e_invisible")

# %% [markdown]
# ## Cut-flows (the data box row reads `blinded`)
# The NA64e trigger (preshower > 0.3 GeV and E_ECAL < 95 GeV, a missing-energy trigger) keeps
# only a small fraction of the beam electrons, which deposit their full 100 GeV, so the
# data-like sample is small; the printed trigger counts above say how small.

# %%
print(format_summary(cutflow_summary({k: out[k] for k in ("signal", "data")})))

# %% [markdown]
# ## Distributions
# SRD energy per module, preshower and ECAL energy, and HCAL energy: MC and data before
# cuts (data without the protected box region), signal N-1 (each cut's variable after all
# the other cuts and the box); the last panel is E_ECAL after all cuts.  MC is scaled to
# the data EOT, the signal to the MC area.

# %%
panels = ["srd_tag", "preshower", "hcal_veto", "signal_box"]
fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6))
scale = eot["data"] / eot["mc"]
for ax, cut in zip(axes, panels, strict=True):
    if cut == "signal_box":
        hs = {name: out[name]["nminus1"][cut] for name in ("mc", "signal", "data")}
        title = r"$E_{ECAL}$ after all cuts (N-1 of the box)"
    else:
        var = selection.cut(cut).variable
        hs = {name: project_modules(out[name]["hists"][var][{"stage": "all"}]) for name in ("mc", "data")}
        hs["signal"] = project_modules(out["signal"]["nminus1"][cut])
        title = f"{cut}: MC/data before cuts, signal N-1"
    area = (hs["mc"] * scale).sum().value
    mplhep.histplot(hs["mc"] * scale, ax=ax, color="tab:blue", yerr=False, label="MC (scaled to data EOT)")
    if hs["signal"].sum().value > 0:
        mplhep.histplot(hs["signal"] * (area / hs["signal"].sum().value), ax=ax, color="tab:orange", yerr=False,
                        label="A' 100 MeV (shape)")
    data_points(ax, hs["data"], label="data (blinded)")
    if cut == "signal_box":
        edges = hs["data"].axes[0].edges  # the hidden range read from selections/blinding.yaml and the box
        draw_blinded(ax, blinded_intervals(Blinding.of(selection), "ecal_energy", edges[0], edges[-1]),
                     "blinded (data)")
    else:
        c = selection.cut(cut)
        for edge in (c.min, c.max):
            if edge is not None:
                ax.axvline(edge, color="r", ls="--")
    ax.set_yscale("log")
    ax.set_ylim(0.5, None)
    ax.set_title(title, fontsize=13)
    ax.legend(fontsize=10)
plt.show()

# %% [markdown]
# ## Signal efficiency of this sample
# Selected A' events in the box over the simulated signal interactions (every simulated
# electron had one; the events that failed the trigger count in the denominator), see
# `na64reco.efficiency`.

# %%
with open_raw(fileset["signal"][0]) as raw:
    weight = float(raw.truth()["weight"][0])
point = efficiency_from_output(out["signal"], weight, mass=100 * MeV, acceptance=x_acceptance("na64e", 100 * MeV))
print(f"A' 100 MeV: trigger efficiency {point.trigger_efficiency:.3f}, efficiency (all cuts + box) "
      f"{point.efficiency:.4f} +- {point.error:.4f}, x > 0.5 acceptance {point.acceptance:.3f}")

# %% [markdown]
# ## The blind box and the sidebands; background from the E_ECAL sideband
# The E_ECAL tail of data after all cuts in the 50-90 GeV sideband, extrapolated into the
# box (exponential, power law for the shape systematic), if the sideband has enough events.

# %%
for name, r in out["data"]["regions"].items():
    print(f"data {name:16s}: {r.to_dict()}")
h = out["data"]["nminus1"]["signal_box"]
try:
    est = bg.misreconstruction_background(counts=h.values(), edges=h.axes[0].edges, sideband=(50, 90),
                                          box=(None, 50), peak=100, model="exponential",
                                          alternative="power_law", source="E_ECAL tail (data sideband)")
    print(bg.BackgroundTable((est,), f"expected background in the box for {eot['data']} EOT").format())
except NA64Error as exc:
    print(f"no tail fit: {exc}")
