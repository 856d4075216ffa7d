"""Single large-angle scattering of the 160 GeV beam muon as a mis-reconstruction source (issue 9).

1. The closed form (:func:`na64reco.background.scatter_tail.element_table`) per element from the target
   through the last MS2 plane, both periods: smallest kink landing in the box, natural
   P(scatter above it), per-MOT box probability.
2. With ``--events N``: N forced beam muons per period (:mod:`na64reco.sim.forced_scatter`, one
   scatter with q > p_beam x theta_min in [z_first, z_last]; physics trigger), the runner
   (``na64reco run --processor na64mu_invisible --executor futures --workers W``) for the
   cut-flow, and the reconstruction of the written events for the box counts with the box edge at
   80 / 100 / 120 / 140 GeV after all other cuts; per MOT = W x weighted fraction (90 % CL upper
   value 2.3 / N x W when 0).

    python benchmarks/single_scatter.py [--all]               # closed form only (~1 min)
    python benchmarks/single_scatter.py --events 1000000 --seed 21 --workdir W --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from na64reco.background import scatter_tail as st
from na64reco.constants import NA64MU_2022_MOT
from na64reco.geometry import load_setup

PERIOD_RUNS = {"2022": 1, "2023": 10001}
EDGES_GEV = (80.0, 100.0, 120.0, 140.0)
NA64RECO = str(Path(sys.executable).parent / "na64reco")


def closed_form(periods, every: bool = False) -> dict:
    out = {}
    for period in periods:
        setup = load_setup("na64mu", run=PERIOD_RUNS[period])
        tab = st.element_table(setup, **st.selection_cuts())
        print(f"\n## {period} (run {PERIOD_RUNS[period]}): kappa(160 GeV) {tab['kappa_beam_mrad']:.2f} mrad, "
              f"box kappa(80 GeV) {tab['kappa_box_mrad']:.2f} mrad; S4/Smu edges "
              + ", ".join(f"{n} {e:.1f} mm at {z:.1f} m" for n, z, e in tab["counters"])
              + f", beam sigma there {tab['counter_sigma_mm']:.1f} mm; incoming track {tab['incoming_tracked']:.3f}")
        print("| element | material | x/X0 | z (m) | smallest kink in the box (mrad) | P(scatter above it) "
              "| per MOT in the box |")
        print("|---|---|---|---|---|---|---|")
        upstream = [r for r in tab["rows"].values() if not np.isfinite(r["theta_min_mrad"])]
        for name, r in tab["rows"].items():
            if np.isfinite(r["theta_min_mrad"]):
                print(f"| {name} | {r['material']} | {r['x_over_x0']:.4f} | {r['z_m'][0]:.2f}-{r['z_m'][1]:.2f} "
                      f"| {r['theta_min_mrad']:.2f} | {r['p_above_theta_min']:.2e} | {r['probability']:.2e} |")
        if every:
            kick = tab["kappa_box_mrad"] - tab["kappa_beam_mrad"]
            print(f"\nevery element: natural P(one scatter > {kick:.2f} mrad), the extra kick the box needs")
            print("| element | material | x/X0 | z (m) | P(> kick) | reaches the box |")
            print("|---|---|---|---|---|---|")
            for name, r in tab["rows"].items():
                print(f"| {name} | {r['material']} | {r['x_over_x0']:.4g} | {r['z_m'][0]:.2f}-{r['z_m'][1]:.2f} "
                      f"| {r['p_above_box_kink']:.2e} | {'yes' if r['probability'] > 0 else 'no'} |")
            print()
        x_rest = sum(r["x_over_x0"] for r in upstream)
        print(f"| every other element ({len(upstream)}: ECAL, VETO, planes, other air; {x_rest:.2f} X0) | | | | none "
              f"(no kink reaches the box within the cuts) | | 0 |")
        print(f"| **total** | | | | | | **{tab['total']:.2e}** ({tab['total'] * NA64MU_2022_MOT:.2g} events "
              f"in {NA64MU_2022_MOT:.3g} MOT) |")
        out[period] = tab
    return out


def _count(path: Path, run: int, workdir: Path) -> dict:
    """Box counts after all other cuts of the na64mu_invisible selection, at several box edges."""
    import awkward as ak

    from na64reco.selection.cuts import Columns, cut_masks
    from na64reco.selection.schema import load_selection

    table = workdir / (path.stem + ".parquet")
    if not table.exists():
        subprocess.run([NA64RECO, "reco", str(path), "-o", str(table), "--quiet"], check=True)
    reco = ak.from_parquet(table)
    cols = Columns(reco)
    sel = load_selection("na64mu_invisible")
    ok = np.ones(len(reco), bool)
    for m in cut_masks(cols, sel).values():
        ok &= m
    p_out = np.asarray(cols["p_out"], float)  # GeV in the reco table
    return {"passing": int(ok.sum()), "box": {str(e): int((ok & (p_out < e)).sum()) for e in EDGES_GEV},
            "p_out_edges_gev": list(range(0, 165, 5)),
            "p_out_counts": np.histogram(p_out[ok], bins=np.arange(0, 165, 5))[0].tolist()}


def forced_region(setup) -> tuple[float, float]:
    """The default forced region (mm): the gas volume around the outgoing magnet (the MS2 helium
    bag: the few cm of air at its ends, next to planes 2 m from the magnet centre, cannot put a
    muon in the box, closed form 0), else the gap between the station's last upstream and first
    downstream planes."""
    from na64reco.sim.transport import outgoing_magnet

    m = outgoing_magnet(setup)
    for v in setup.readout.gas_volumes:
        if v.z0 <= m.center_z <= v.z1:
            return v.z0, v.z1
    return (max(p.z for p in setup.planes_of(m.name, "upstream")),
            min(p.z for p in setup.planes_of(m.name, "downstream")))


# The forced kinks start at this fraction of the smallest kink the closed form puts in the box:
# the fit's resolution and the muon's Gaussian scattering let slightly smaller kinks in, and a
# lower start only costs statistics.  Checked (stop 22, 1e6 forced muons, seeds 23 / 29): a start
# at 0.5 of it gives the same rate, 2022 (4.75 +- 0.66)e-12 vs (4.09 +- 0.37)e-12 per MOT, 2023
# (4.2 +- 0.7)e-13 vs (3.9 +- 0.4)e-13.
THETA_MIN_FRACTION = 0.7


def default_theta_min(table: dict) -> float:
    """rad: :data:`THETA_MIN_FRACTION` of the smallest kink that reaches the box (closed form)."""
    kinks = [r["theta_min_mrad"] for r in table["rows"].values() if np.isfinite(r["theta_min_mrad"])]
    if not kinks:
        raise SystemExit("no element's kink reaches the box in the closed form: give --theta-min")
    return THETA_MIN_FRACTION * min(kinks) * 1e-3


def forced(periods, n: int, seed: int, workdir: Path, workers: int, theta_min: dict, z_first: float | None,
           z_last: float | None) -> dict:
    from na64reco.sim.forced_scatter import ForcedScatter, plan
    from na64reco.sim.generate import simulate

    workdir.mkdir(parents=True, exist_ok=True)
    out = {}
    for period in periods:
        run = PERIOD_RUNS[period]
        setup = load_setup("na64mu", run=run)
        lo, hi = forced_region(setup)
        z0, z1 = (lo if z_first is None else z_first), (hi if z_last is None else z_last)
        fs = ForcedScatter(theta_min=theta_min[period], z_first=z0, z_last=z1)
        w = plan(setup, fs).weight
        path = workdir / f"forced_scatter_{period}_n{n}_s{seed}.root"
        t0 = time.time()
        if not path.exists():
            tmp = path.with_suffix(".part.root")
            simulate("na64mu", n, seed, run, tmp, process="beam", trigger="physics", forced_scatter=fs)
            tmp.rename(path)
        t_sim = time.time() - t0
        run_dir = workdir / f"run_{period}_n{n}_s{seed}"
        subprocess.run([NA64RECO, "run", "--processor", "na64mu_invisible", "--executor",
                        "futures", "--workers", str(workers), "--output", str(run_dir), "--overwrite", "--no-plots",
                        "--no-progress", str(path)], check=True, stdout=subprocess.DEVNULL)
        c = _count(path, run, workdir)
        per_mot = {e: (k * w / n if k else 2.3 * w / n) for e, k in c["box"].items()}
        out[period] = {"muons": n, "weight": w, "theta_min": theta_min[period], "sim_s": t_sim, **c, "per_mot": per_mot,
                       "per_mot_is_upper": {e: k == 0 for e, k in c["box"].items()}}
        print(f"\n## {period}: {n} forced muons (q > {theta_min[period] * 1e3:.2f} mrad x 160 GeV in z "
              f"{z0 / 1000:.2f}-{z1 / 1000:.2f} m), W = {w:.3e} per muon, {t_sim:.0f} s simulation")
        print(f"passing every cut but the box: {c['passing']}")
        print("| box edge (GeV) | count | per MOT | events in 1.98e10 MOT |")
        print("|---|---|---|---|")
        for e, k in c["box"].items():
            lim = "< " if k == 0 else ""
            print(f"| p_out < {e} | {k} | {lim}{per_mot[e]:.2e} | {lim}{per_mot[e] * NA64MU_2022_MOT:.2g} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--periods", nargs="+", default=["2022", "2023"], choices=list(PERIOD_RUNS))
    ap.add_argument("--events", type=int, default=0, help="forced muons per period (0: closed form only)")
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("single_scatter_work"))
    ap.add_argument("--theta-min", type=float, default=None,
                    help=f"rad: start of the forced kinks (default: {THETA_MIN_FRACTION} of the smallest kink in "
                         "the box, closed form, per period)")
    ap.add_argument("--z-first", type=float, default=None,
                    help="mm: start of the forced region (default: forced_region() of the setup)")
    ap.add_argument("--z-last", type=float, default=None, help="mm: its end (default: forced_region())")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--all", action="store_true", help="also list every element with P(scatter > the box's kick)")
    args = ap.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    tables = closed_form(args.periods, args.all)
    result = {"closed_form": {p: {"total": t["total"], "rows": {k: r for k, r in t["rows"].items()
                                                                  if r["probability"] > 0}} for p, t in tables.items()}}
    if args.events:
        theta_min = {p: default_theta_min(tables[p]) if args.theta_min is None else args.theta_min
                     for p in args.periods}
        result["forced"] = forced(args.periods, args.events, args.seed, args.workdir, args.workers, theta_min,
                                  args.z_first, args.z_last)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
