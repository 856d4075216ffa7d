"""Toys of the integrated outlier estimate (:mod:`na64reco.background.outlier_tail`): coverage of its
central and 90 % upper value against the closed form.

    python benchmarks/outlier_tail_toys.py [--period 2022] [--toys 200] [--muons 650000]
        [--rate 3e-3] [--z 8:16] [--shapes exponential:1.0,power_law:7] [--seed 1] [--json OUT]

Per toy: the period's outgoing bend view with every plane used (gains, chi2 cap:
:func:`na64reco.background.lone_muon.toy_pattern`), MUONS tracked muons at distances to the box spread
evenly over Z fit sigmas, on each plane Poisson(MUONS x RATE) outliers with deviations drawn
from the known tail (from 3.5 plane resolutions on, half of them towards the box), the muons
with two or more outlier planes Poisson of what independent planes give.  The estimator sees
only the drawn outliers (:func:`na64reco.background.outlier_tail.toy`); the truth is the integral of the
known densities (:func:`na64reco.background.outlier_tail.truth`).  Reported per shape: the truth, the
quantiles of central / truth and upper / truth, the fraction of toys whose central value is
at or above the truth (about one half) and whose upper value covers it (at least 0.9), and
the share of the truth from deviations beyond the largest one a toy sees (the unseen region).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from na64reco.background import outlier_tail as ot
from na64reco.background.fake_kicks import PERIOD_RUNS
from na64reco.background.lone_muon import OUTLIER_SIGMAS, toy_pattern
from na64reco.background.lone_muon_truth import view_geometry
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--period", default="2022")
    ap.add_argument("--toys", type=int, default=200)
    ap.add_argument("--muons", type=float, default=650_000)
    ap.add_argument("--rate", type=float, default=3e-3, help="outliers per used plane and muon")
    ap.add_argument("--z", default="8:16", help="distances to the box, fit sigmas, LOW:HIGH")
    ap.add_argument("--shapes", default="exponential:1.0,power_law:7")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    run = PERIOD_RUNS[args.period]
    setup = load_setup("na64mu", run=run)
    geometry = view_geometry(setup, load_conditions(setup, run))
    lo, hi = (float(x) for x in args.z.split(":"))
    pattern = toy_pattern(geometry, np.linspace(lo, hi, 200))
    pattern.weight = int(args.muons)
    npl = geometry["dz"].size
    rates = np.full(npl, args.rate)
    sigma = np.asarray(geometry["sigma"], float)
    out = {"period": args.period, "toys": args.toys, "muons": int(args.muons), "rate": args.rate, "z": [lo, hi],
           "planes": geometry["planes"], "shapes": {}}
    for item in args.shapes.split(","):
        shape, par = item.split(":")
        tails = [ot.Tail(shape, OUTLIER_SIGMAS, float(par), 1)] * npl
        truth = ot.truth([pattern], tails, sigma, rates)["p_outliers"]
        rng = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        rows = [ot.toy(rng, [pattern], tails, sigma, rates, OUTLIER_SIGMAS) for _ in range(args.toys)]
        central = np.array([r["central"] for r in rows]) / truth
        upper = np.array([r["upper"] for r in rows]) / truth
        u_max = float(np.median([max(r["u_max"]) for r in rows]))
        seen = ot.truth([pattern], [t.bounded(u_max) for t in tails], sigma, rates)["p_outliers"]
        # the truncated tail renormalises inside the bound: the unseen share is 1 - (seen part) / truth
        seen_part = seen * float(tails[0].survival(np.array([OUTLIER_SIGMAS]))[0] - tails[0].survival(
            np.array([u_max]))[0])
        res = {"parameter": float(par), "truth": truth,
               "central_over_truth_q10_50_90": np.quantile(central, [0.1, 0.5, 0.9]).tolist(),
               "upper_over_truth_q10_50_90": np.quantile(upper, [0.1, 0.5, 0.9]).tolist(),
               "central_at_or_above_truth": float(np.mean(central >= 1.0)),
               "upper_covers": float(np.mean(upper >= 1.0)),
               "chosen_shape_fraction": float(np.mean([r["chosen"] == shape for r in rows])),
               "median_largest_u": u_max, "unseen_share_of_truth": float(1.0 - seen_part / truth),
               "seconds": time.perf_counter() - t0}
        out["shapes"][shape] = res
        print(f"{shape} ({par}): truth {truth:.3g} per tracked muon; central/truth 10/50/90 % "
              + " / ".join(f"{x:.2f}" for x in res["central_over_truth_q10_50_90"])
              + f", at or above the truth in {res['central_at_or_above_truth']:.2f} of {args.toys} toys; "
              f"upper/truth " + " / ".join(f"{x:.2f}" for x in res["upper_over_truth_q10_50_90"])
              + f", covers in {res['upper_covers']:.3f}; shape chosen right in {res['chosen_shape_fraction']:.2f}; "
              f"largest deviation seen (median) {u_max:.1f} sigma, unseen share of the truth "
              f"{res['unseen_share_of_truth']:.2f} ({res['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
