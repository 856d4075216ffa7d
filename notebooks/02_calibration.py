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
# # 02 — Calibration closure: pedestals and MIP gains
#
# We invent a "true" detector: per-channel constants drawn with
# `na64reco.conditions.nominal_content` with another seed than the committed ones, published
# as a tag in a *temporary copy* of `calib/` (the repository is never touched).  A
# random-trigger (pedestal) run and a beam-muon run are simulated with those true constants,
# then calibrated exactly as `na64reco calibrate` does:
#
# ```
# na64reco calibrate --setup na64mu --kind pedestals --runs 1 999999 --tag nb-ped  ped.root
# na64reco calibrate --setup na64mu --kind mip --base-tag nb-ped --runs 1 999999 --tag nb-mip mu.root
# ```
#
# and the derived constants are compared with the true ones.

# %%
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
import numpy as np

from na64reco.calibration.publish import calibrate_files, publish_result
from na64reco.conditions import load_conditions, nominal_content, publish
from na64reco.geometry import load_setup
from na64reco.resources import calib_dir
from na64reco.sim.generate import simulate

plt.style.use(mplhep.style.ROOT)  # experiment-neutral mplhep style (NA64 is not CMS)
workdir = Path(tempfile.mkdtemp(prefix="na64reco-02-"))
root = workdir / "calib"
shutil.copytree(calib_dir(), root)           # a private calibration directory
os.environ["NA64RECO_CALIB"] = str(root)     # this kernel reads and writes only the copy
RUN = 500
setup = load_setup("na64mu", run=RUN)
print("calibration directory:", root)

# %% [markdown]
# ## The "true" constants and the calibration runs

# %%
publish("na64mu", "true-mu", (1, 999999), nominal_content(setup, seed=2024), base_tag="na64mu-default",
        comment="true constants of the notebook closure", root=root)
true = load_conditions(setup, RUN, "true-mu", root=root)
default = load_conditions(setup, RUN, "na64mu-default", root=root)
ped_file, mu_file = workdir / "ped.root", workdir / "mu.root"
simulate("na64mu", 300, seed=11, run=RUN, output=ped_file, process="pedestal", calib_tag="true-mu")
# the calibration trigger (beam counters only) writes every muon; the physics trigger keeps the
# ~1 % deflected ones, too few for a MIP peak in any channel
res = simulate("na64mu", 20000, seed=12, run=RUN, output=mu_file, process="beam", calib_tag="true-mu",
               trigger="calibration")
print(f"pedestal run: 300 random triggers; muon run: {res.n_beam} muons, {res.n_written} triggered")

# %% [markdown]
# ## Pedestals from the random triggers
# Mean of the even and odd samples of every channel (the two interleaved ADCs), noise from
# their spread.

# %%
ped = calibrate_files("pedestals", setup, [ped_file], RUN, root=root)
print(ped.summary().splitlines()[0])
publish_result(ped, setup, "nb-ped", (1, 999999), base_tag="na64mu-default", root=root, sources=[ped_file])

fig, axes = plt.subplots(1, 2, figsize=(16, 6))
for name, d in ped.derived.items():
    t = true.calo[name]
    axes[0].plot(t.pedestal_even, d["pedestal_even"] - t.pedestal_even, "o", ms=4, label=name)
    axes[1].plot(t.noise_adc, d["noise_adc"] / t.noise_adc, "o", ms=4, label=name)
axes[0].set_xlabel("true even-sample pedestal [ADC]")
axes[0].set_ylabel("derived - true [ADC]")
axes[1].set_xlabel("true noise [ADC]")
axes[1].set_ylabel("derived / true noise")
axes[1].legend(fontsize=10, ncol=2)
plt.show()
for name, d in ped.derived.items():
    diff = d["pedestal_even"] - true.calo[name].pedestal_even
    shift = default.calo[name].pedestal_even - true.calo[name].pedestal_even
    print(f"{name:6s}: |derived - true| max {np.abs(diff).max():.3f} ADC "
          f"(the default tag is off by {np.abs(shift).mean():.1f} ADC on average)")

# %% [markdown]
# ## Gains from the muon MIP peak
# Amplitude spectra of every channel hit by the beam muons, fitted with a Moyal density
# around the most probable value; gain = expected MIP energy / fitted MPV.  Channels that
# see too few muons (off the beam) or whose MIP peak sits at the zero-suppression threshold
# keep the base gain and are reported.

# %%
mip = calibrate_files("mip", setup, [mu_file], RUN, base_tag="nb-ped", root=root)
summary = mip.summary().splitlines()
print("\n".join(line for line in summary if not line.startswith("    ")))  # per-channel reasons: mip.skipped
print("e.g.", mip.skipped["ECAL"][0], mip.skipped["ECAL"][-1])

# %%
fig, ax = plt.subplots(figsize=(12, 6))
x0 = 0
ticks = []
for name, d in mip.derived.items():
    ok = np.isfinite(d["gain"])
    if not ok.any():
        continue
    ch = np.flatnonzero(ok)
    ratio = d["gain"][ok] / true.calo[name].gain[ok]
    err = d["gain_error"][ok] / true.calo[name].gain[ok]
    ax.errorbar(x0 + np.arange(ch.size), ratio, err, fmt="o", label=f"{name} ({ch.size} channels)")
    base = default.calo[name].gain[ok] / true.calo[name].gain[ok]
    ax.plot(x0 + np.arange(ch.size), base, "x", color="0.5")
    ticks.append((x0 + (ch.size - 1) / 2, name))
    x0 += ch.size + 1
ax.plot([], [], "x", color="0.5", label="default tag / true (before calibration)")
ax.axhline(1, color="k", lw=1)
ax.axhspan(0.99, 1.01, color="tab:green", alpha=0.2, label="±1 %")
ax.set_xticks([t for t, _ in ticks], [n for _, n in ticks], fontsize=12)
ax.set_ylabel("derived / true gain")
ax.legend(fontsize=10, ncol=2)
plt.show()

# %%
pulls = []
for name, d in mip.derived.items():
    ok = np.isfinite(d["gain"])
    pulls += list((d["gain"][ok] / true.calo[name].gain[ok] - 1) / (d["gain_error"][ok] / d["gain"][ok]))
pulls = np.array(pulls)
assert pulls.size >= 10, f"only {pulls.size} channels calibrated: the muon run is too small"
print(f"{pulls.size} calibrated channels: pull mean {pulls.mean():+.2f}, rms {pulls.std():.2f}")
path = publish_result(mip, setup, "nb-mip", (1, 999999), base_tag="nb-ped", root=root, sources=[mu_file])
print("published:", path.relative_to(root))
