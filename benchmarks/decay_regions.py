"""K -> mu nu in flight by decay region: where the decays that reach the signal box come from.

    python benchmarks/decay_regions.py [--events 20000] [--seed 1] [--runs 1001,10001]
                                       [--plot docs/images/kdecay_regions.png]

For each run period a forced ``kdecay`` run (every beam kaon decays in one of the regions of
:mod:`na64reco.sim.decays`, its truth weight the probability of that) is reconstructed with the
README's Python API and put through the ``na64mu_invisible`` cuts and signal box
(:func:`~na64reco.selection.cuts.cut_masks`, :func:`~na64reco.selection.cuts.region_mask`).
Prints, per region, the decay probability, the weighted share of the decays that pass, and the
expected events for the 2022 exposure (1.98e10 MOT), whose sum is the K row of
``docs/backgrounds.md`` for the same seed and events.  With ``--plot``, the weighted decay-point
distribution of all decays and of those in the box (log scale), one panel per period.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from na64reco import constants
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io import open_raw
from na64reco.reco.event import attach_truth, reconstruct
from na64reco.selection.cuts import cut_masks, region_mask
from na64reco.selection.schema import load_selection
from na64reco.sim import decays
from na64reco.sim.biasing import species_per_mot
from na64reco.sim.generate import simulate

EXPOSURE_2022 = constants.NA64MU_2022_MOT  # MOT, PRL 132, 211803 (seed 001)


def period(run: int, n: int, seed: int, tmp: Path) -> dict:
    setup = load_setup("na64mu", run=run)
    path = tmp / f"kdecay_{run}.root"
    simulate(setup, n, seed=seed, run=run, output=path, process="kdecay")
    raw = open_raw(str(path))
    reco = reconstruct(raw.events(), setup, load_conditions(setup, raw.run), source=str(path))
    if "truth_vertex_z" not in reco.fields:
        reco = attach_truth(reco, raw.truth(), source=str(path))
    sel = load_selection("na64mu_invisible")
    masks = cut_masks(reco, sel)
    passed = np.logical_and.reduce(list(masks.values())) & region_mask(reco, sel.signal_box)
    vz = np.asarray(reco["truth_vertex_z"], float)
    w = np.asarray(reco["truth_weight"], float)
    scale = species_per_mot(setup, "kdecay") / n * EXPOSURE_2022  # events per unit weight
    rows = []
    for reg in decays.regions(setup):
        inside = (vz >= reg.z0) & (vz <= reg.z1)
        box = inside & passed
        rows.append({"region": reg.name, "z": (reg.z0, reg.z1), "written": int(inside.sum()),
                     "box": int(box.sum()), "events": float(w[box].sum() * scale),
                     "error": float(np.sqrt(np.sum(w[box] ** 2)) * scale)})
    return {"period": setup.period, "rows": rows, "vz": vz, "w": w, "passed": passed,
            "regions": decays.regions(setup), "total": float(w[passed].sum() * scale),
            "total_error": float(np.sqrt(np.sum(w[passed] ** 2)) * scale), "n_written": len(vz)}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        bins = np.linspace(12_000, 29_000, 69)
        ax.hist(res["vz"] / 1e3, bins / 1e3, weights=res["w"], histtype="step", label="written (triggered) decays")
        ax.hist(res["vz"][res["passed"]] / 1e3, bins / 1e3, weights=res["w"][res["passed"]], histtype="stepfilled",
                alpha=0.6, label="in the signal box after all cuts")
        for reg in res["regions"]:
            ax.axvspan(reg.z0 / 1e3, reg.z1 / 1e3, color="grey", alpha=0.08)
        ax.set_yscale("log")
        ax.set_xlabel("decay point z [m]")
        ax.set_ylabel("sum of weights per bin (P(decay) x BR per beam K)")
        ax.set_title(f"K -> mu nu, {res['period']}: {res['total']:.3g} +- {res['total_error']:.1g} "
                     "events / 1.98e10 MOT")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000, help="forced kaons per period")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", default="1001,10001", help="one run per period (2022-like, 2023-like)")
    ap.add_argument("--plot", type=Path, default=None, help="write the decay-point figure here (PNG)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="kdecay-regions-") as tmp:
        for run in (int(r) for r in args.runs.split(",")):
            results.append(period(run, args.events, args.seed, Path(tmp)))
    print("| period | region | z [m] | written decays | in the box | events for 1.98e10 MOT |")
    print("|---|---|---|---|---|---|")
    for res in results:
        for r in res["rows"]:
            print(f"| {res['period']} | {r['region']} | {r['z'][0] / 1e3:.2f}-{r['z'][1] / 1e3:.2f} | {r['written']} | "
                  f"{r['box']} | {r['events']:.2g} +- {r['error']:.1g} |")
        print(f"| {res['period']} | all | | {res['n_written']} | {int(res['passed'].sum())} | "
              f"{res['total']:.2g} +- {res['total_error']:.1g} |")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    print(f"\n({args.events} forced kaons per period, seed {args.seed}; {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
