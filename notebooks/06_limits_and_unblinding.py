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
# # 06 — Limits, freezing and a (simulated) unblinding
#
# 1. The 90 % CL limit on the L_mu - L_tau coupling g(m_Z') with the NA64mu 2022 inputs
#    (1.98e10 MOT, background 0.07 +- 0.03, 0 observed) and the signal efficiency of our own
#    simulation and cuts, against the (g-2)_mu band.
# 2. The unblinding procedure of `docs/unblinding.md`, **demonstrated on a small simulated
#    data-like file** (no truth tree, so the processor treats it as data) in a temporary
#    directory with a temporary ledger and audit log: refusal without confirmation, refusal
#    after a change of the selection, then one unblinding on the record, and the record
#    returned (nothing re-run) when asked again.  Nothing here touches real data or the
#    repository.

# %%
import json
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from hepunits import GeV, MeV
from IPython.display import Image, display

from na64reco.commands.limit import excluded_range, excluded_text
from na64reco.efficiency import signal_efficiency
from na64reco.errors import BlindingError
from na64reco.physics.gminus2 import g_band
from na64reco.physics.yields import expected_signal
from na64reco.resources import selections_dir
from na64reco.sim.generate import simulate
from na64reco.stats.limits import cls_upper_limit, coupling_limit, poisson_upper_limit
from na64reco.unblinding import format_result, freeze, read_audit_log, unblind

plt.style.use(mplhep.style.ROOT)  # experiment-neutral mplhep style (NA64 is not CMS)
workdir = Path(tempfile.mkdtemp(prefix="na64reco-06-"))
print("working directory:", workdir)

# %% [markdown]
# ## 1. The limit curve
# Signal efficiency per mass from small signal samples through the processor
# (`na64reco.efficiency`; trigger, acceptance, cuts and the p_out < 80 GeV box included, so
# it multiplies the yield over the whole x range).  `benchmarks/limits_vs_mass.py` does the
# same with more masses and events, and compares with the efficiency implied by the
# published 40 MeV crossing.  The signal samples have no DAQ dead time and no pile-up: a
# limit to quote multiplies the efficiency by `daq_live_fraction` and `pileup_free_fraction`
# (`na64reco.efficiency`; 0.92 x 0.97 = 0.89 for the 2022 period,
# `benchmarks/efficiency_breakdown.py`); the curve below, an illustration, leaves them out.

# %%
MOT, B, DB, N_OBS = 1.98e10, 0.07, 0.03, 0
masses = np.array([3, 30, 300]) * MeV
table = signal_efficiency("na64mu", masses, 2000, seed=6)
print(table.format())
n_up = cls_upper_limit(N_OBS, B, DB, 0.9)
print(f"n_up (90% CL, CLs, b = {B} +- {DB}, n_obs = {N_OBS}) = {n_up:.3f}; "
      f"Poisson without background: {poisson_upper_limit(0, 0.0):.3f}")

# %%
grid = np.geomspace(masses[0], masses[-1], 30)
eff = np.exp(np.interp(np.log(grid), np.log(masses), np.log(table.efficiency)))
g90 = np.array([coupling_limit(m, n_up, n_ref=expected_signal(MOT, m, 1e-4, e, n_steps=8), coupling_ref=1e-4)
                for m, e in zip(grid, eff, strict=True)])
lo, mid, hi = g_band(grid, 2.0)
excluded = excluded_range(grid, g90, lo)  # (first, last) mass; last None if excluded to the end
fig, ax = plt.subplots(figsize=(10, 7))
ax.fill_between(grid / GeV, lo, hi, color="tab:green", alpha=0.35, label=r"$(g-2)_\mu$ $\pm2\sigma$")
ax.plot(grid / GeV, mid, color="tab:green", lw=1)
ax.plot(grid / GeV, g90, "k-", lw=2, label="90% CL, this simulation's efficiency (IWW)")
ax.fill_between(grid / GeV, g90, 1, color="0.6", alpha=0.3)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_ylim(5e-5, 3e-2)
ax.set_xlabel(r"$m_{Z'}$ [GeV]")
ax.set_ylabel(r"$g_{Z'}$")
ax.text(0.03, 0.95, rf"NA64$\mu$ inputs: {MOT:.3g} MOT, $b={B}\pm{DB}$, $n_{{obs}}={N_OBS}$", transform=ax.transAxes,
        va="top", fontsize=13)
ax.legend(loc="lower right", fontsize=12)
plt.show()
where = excluded_text(excluded, grid[0] / MeV)  # the words of `na64reco limit --plot`
print(f"g-2 band (lower 2 sigma edge) excluded {where}; published NA64mu 2022: above ~40 MeV")

# %% [markdown]
# ## 2. Freeze, then unblind once — on simulated data
# A data-like file (simulated, **no truth**: blinded like data) and a copy of the selection,
# both in the temporary directory.

# %%
data = workdir / "data_like.root"
simulate("na64mu", 5000, seed=61, run=1001, output=data, truth=False)
selection = workdir / "na64mu_invisible.yaml"
shutil.copy(selections_dir() / "na64mu_invisible.yaml", selection)
ledger = workdir / "frozen" / "na64mu_demo.json"
audit = workdir / "audit.jsonl"
registry = workdir / "registry"  # a demonstration: not the user's registry of unblindings
frozen = freeze(ledger, processor="na64mu_invisible", calib_tag="na64mu-default", files=[data],
                selection=str(selection), note="notebook 06 demonstration on simulated data", registry=registry)
print("frozen state", frozen["state_sha256"][:12], "by", frozen["frozen_by"], "at", frozen["frozen_at"])
print("ledger records:", sorted(frozen["state"]))

# %% [markdown]
# Without the explicit confirmation nothing happens:

# %%
try:
    unblind(ledger, confirm=False)
except BlindingError as exc:
    print("refused:", exc)

# %% [markdown]
# A change of the selection after freezing (here: the box widened to 90 GeV) is named and
# refused; restoring the frozen content makes the state identical again.

# %%
original = selection.read_text()
_ = selection.write_text(original.replace("max: 80 GeV", "max: 90 GeV", 1))
try:
    unblind(ledger, confirm=True, output_dir=workdir / "unblinded", audit_log=audit, registry=registry)
except BlindingError as exc:
    print("refused:", exc)
_ = selection.write_text(original)

# %% [markdown]
# Unblinding, once, with the audit log (a demonstration on simulated data):

# %%
result = unblind(ledger, confirm=True, output_dir=workdir / "unblinded", audit_log=audit, registry=registry)
print(format_result(result))
display(Image(filename=str(workdir / "unblinded" / "plots" / "unblinded_unblinded_p_out.png")))

# %% [markdown]
# Asking again returns the recorded result without running anything:

# %%
again = unblind(ledger, confirm=True, output_dir=workdir / "again", audit_log=audit, registry=registry)
print("ran again:", again.ran)
print(format_result(again).splitlines()[0])
for record in read_audit_log(audit):  # the start of the unblinding (before the box opened), then its result
    print(record["kind"], json.dumps({k: record[k] for k in ("user", "time_utc", "state_sha256", "calib_tag")}))
    if "result" in record:
        print("  observed in the box:", record["result"]["signal_box"]["events"])

# %% [markdown]
# Every log is hash-chained (each record carries the SHA-256 of the previous line; the first
# one the ledger's hash) with a chain head beside it, and the unblinding is also in the
# registry, keyed by the content of the data set: editing or deleting a log is refused, and
# a new freeze of the same data anywhere needs `--force-new --reason`.

# %%
print("chain head:", (audit.parent / (audit.name + ".head")).read_text().strip())
print("registry logs:", sorted(p.name for p in registry.glob("*.jsonl")))
try:
    freeze(workdir / "elsewhere" / "again.json", processor="na64mu_invisible", calib_tag="na64mu-default",
           files=[data], selection=str(selection), registry=registry)
except BlindingError as exc:
    print("refused:", exc)
