"""Fake momentum kicks at the nominal tracker noise, per run period, by forced noise.

    python benchmarks/misreco_forced_noise.py [--periods 2022,2023] [--counts 6] [--events 200000]
        [--sides upstream,downstream] [--campaign docs/data] [--workdir DIR] [--json OUT.json]
        [--period-json docs/data]

For each period (2022: run 1, 2023: run 10001) and each m = 0..--counts, ``--events`` beam
muons are simulated with the calibration trigger and exactly m noise clusters per event in
the region R of the MS2 bend-view planes over their in-time noise window
(:func:`na64reco.fake_kicks.bend_region`), the rest of the detector nominal; then the
tracking cuts of the selection are applied (:mod:`na64reco.fake_kicks`).  The combination
``sum_m Poisson(m; Lambda_R) fakes_m / N_m`` over the same for the tracked muons is the fake
rate per tracked beam muon at the nominal noise, exact up to the counts not sampled (printed
as ``truncation``; :func:`na64reco.background.forced_noise_ratio`).  Per MOT it is multiplied by
the events after all cuts but the box per MOT of the period's mis-reconstruction campaign
(``--campaign DIR``: ``misreco_<period>.json``, key ``after_cuts_but_box`` / ``mot``), as the
noise-scaled estimate of ``tracking_fakes_scan.py`` was.

Because each sample fixes m, the same samples give the rate for any other density of the
uncorrelated noise in R (``Lambda_R -> s Lambda_R``): the table "noise scale" shows how the
estimate depends on the assumed noise level (the noise outside R stays nominal).

``--period-json DIR`` adds ``forced_noise_per_mot``, ``forced_noise_err``,
``forced_noise_upper_90`` and the samples to ``DIR/misreco_<period>.json``, which
:func:`na64reco.background.misreco_from_json` then prefers to the noise-scaled estimate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from na64reco.background import forced_noise_ratio
from na64reco.constants import NA64MU_2022_MOT as EXPOSURE_2022
from na64reco.fake_kicks import PERIOD_RUNS, study

NOISE_SCALES = (0.3, 1.0, 3.0, 10.0)


def combine(res: dict, scale: float = 1.0) -> dict:
    rows = [{"count": r["count"], "events": r["hard"], "numerator": r["fake"], "denominator": r["tracked"]}
            for r in res["rows"]]
    return forced_noise_ratio(rows, res["expected"] * scale)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--counts", type=int, default=6, help="largest forced count M (samples m = 0..M)")
    ap.add_argument("--events", type=int, default=200_000, help="beam muons per sample")
    ap.add_argument("--events-per-count", default="1:1000000,2:1000000,3:400000",
                    help="m:EVENTS,... samples that get another size (the terms that dominate)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sides", default="upstream,downstream", help="MS2 sides whose bend planes form the region")
    ap.add_argument("--campaign", type=Path, default=Path("docs/data"),
                    help="directory of the campaigns' misreco_<period>.json (for the rate per MOT)")
    ap.add_argument("--workdir", type=Path, default=Path("forced-noise-work"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--period-json", type=Path, default=None,
                    help="directory whose misreco_<period>.json gets the forced-noise estimate")
    args = ap.parse_args(argv)
    summary = {}
    for period in args.periods.split(","):
        t0 = time.perf_counter()
        sizes = {-1: args.events, **{int(a): int(b) for a, b in (x.split(":") for x in
                                                                  filter(None, args.events_per_count.split(",")))}}
        res = study(PERIOD_RUNS[period], range(args.counts + 1), sizes, args.seed, args.workdir,
                    sides=args.sides.split(","))
        est = combine(res)
        camp = args.campaign / f"misreco_{period}.json"
        kept = None
        if camp.exists():
            d = json.loads(camp.read_text())
            kept = d["after_cuts_but_box"] / d["mot"]
        print(f"\n== {period} (run {res['run']}): region {', '.join(res['region'])}, "
              f"Lambda_R = {res['expected']:.4f} noise clusters per event, {time.perf_counter() - t0:.0f} s")
        print(f"{'m':>3} {'P(m)':>10} {'muons':>8} {'tracked':>8} {'fakes':>6} {'fakes/muon':>11} {'P(m) x that':>12}")
        for r, term in zip(res["rows"], est["terms"], strict=True):
            print(f"{r['count']:>3} {term['poisson']:>10.3e} {r['hard']:>8} {r['tracked']:>8} {r['fake']:>6} "
                  f"{term['numerator_per_event']:>11.2e} {term['contribution']:>12.2e}")
        line = (f"fakes per tracked muon: {est['ratio']:.2e} +- {est['error']:.1e} (90 % CL bound, all terms as "
                f"upper limits: {est['upper']:.1e}; counts m > {args.counts} add at most {est['truncation']:.1e})")
        print(line)
        out = {"period": period, **res, "estimate": {k: v for k, v in est.items() if k != "terms"}}
        if kept is not None:
            per_mot, err, up = (est[k] * kept for k in ("ratio", "error", "upper"))
            print(f"per MOT (x {kept:.3g} kept beam muons per MOT): {per_mot:.2e} +- {err:.1e} "
                  f"(bound {up:.1e}); x {EXPOSURE_2022:.3g} MOT: {per_mot * EXPOSURE_2022:.3g} +- "
                  f"{err * EXPOSURE_2022:.2g} events")
            out.update(kept_per_mot=kept, per_mot=per_mot, per_mot_err=err, per_mot_upper_90=up)
        print("noise scale (uncorrelated noise in R x s):  " + "  ".join(
            f"s={s:g}: {combine(res, s)['ratio']:.2e}" for s in NOISE_SCALES))
        out["noise_scale"] = {str(s): combine(res, s)["ratio"] for s in NOISE_SCALES}
        summary[period] = out
        if args.period_json is not None and kept is not None:
            target = args.period_json / f"misreco_{period}.json"
            d = json.loads(target.read_text())
            d.update(forced_noise_per_mot=out["per_mot"], forced_noise_err=out["per_mot_err"],
                     forced_noise_upper_90=out["per_mot_upper_90"],
                     forced_noise={"region": res["region"], "expected": res["expected"], "rows": res["rows"],
                                   "per_tracked": est["ratio"], "per_tracked_err": est["error"],
                                   "seed": args.seed})
            target.write_text(json.dumps(d, indent=1))
            print(f"wrote the forced-noise estimate into {target}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
