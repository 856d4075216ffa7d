"""Fake momentum kicks at the nominal tracker noise and beam pile-up, per run period, by forced sampling.

    python benchmarks/misreco_forced_noise.py [--periods 2022,2023] [--strata M:K:EVENTS,...]
        [--workers 2] [--part-events 500000] [--keep-files] [--seed 11] [--sides upstream,downstream]
        [--campaign docs/data] [--workdir DIR] [--json OUT.json] [--period-json docs/data]

For each period (2022: run 1, 2023: run 10001) and each stratum (m, k) of ``--strata``,
EVENTS beam muons are simulated with the calibration trigger, exactly m uncorrelated noise
clusters per event in the region R of the MS2 bend-view planes over their in-time noise
window (:func:`na64reco.background.fake_kicks.bend_region`) and exactly k out-of-time beam muons in the
near times N (:func:`na64reco.background.fake_kicks.near_times`; K = ``n``: the pile-up left nominal),
the rest of the detector nominal; then the tracking cuts of the selection are applied
(:mod:`na64reco.background.fake_kicks`).  The combination
``sum_{m,k} Poisson(m; Lambda_R) Poisson(k; lambda_N) fakes_{m,k} / N_{m,k}`` over the same
for the tracked muons is the fake rate per tracked beam muon at the nominal noise and pile-up,
exact up to the strata not sampled (printed as ``truncation``;
:func:`na64reco.background.forced_noise_ratio`).  Per MOT it is multiplied by the events after
all cuts but the box per MOT of the period's mis-reconstruction campaign (``--campaign DIR``:
``misreco_<period>.json``, key ``after_cuts_but_box`` / ``mot``).  Strata with no fake are
bounded by their sample sizes (90 % CL, printed per stratum); the (0, 0) stratum (the muon
alone, no noise in R, no pile-up in N) is also estimated by a tail fit of its mis-measurement:
``E_beam p_out(reco) / p_out(true)`` of its tracked muons, fitted in 80-144 GeV (exponential,
power law as the alternative) and extrapolated below 80 GeV (:func:`tail_bound`): kept as a
cross-check, the (0, 0) stratum being classified on truth by ``benchmarks/lone_muon_tail.py``
(key ``lone_muon_00`` of the period JSON, which ``misreco_from_json`` prefers; rerun it after
this script, it takes the strata's weights from the JSON).

Because each sample fixes m, the same samples give the rate for any other density of the
uncorrelated noise in R (``Lambda_R -> s Lambda_R``): the table "noise scale".

``--period-json DIR`` adds ``forced_noise_per_mot``, ``forced_noise_err``,
``forced_noise_upper_90``, ``forced_noise_empty_upper_90`` and the strata to
``DIR/misreco_<period>.json``, which :func:`na64reco.background.misreco_from_json` reads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from na64reco.background.estimates import forced_noise_ratio, misreconstruction_background
from na64reco.background.fake_kicks import PERIOD_RUNS, study
from na64reco.constants import NA64MU_2022_MOT as EXPOSURE_2022
from na64reco.errors import NA64Error
from na64reco.runner import local_client

NOISE_SCALES = (0.3, 1.0, 3.0, 10.0)
#: strata per period, M:K:EVENTS (K = n: nominal pile-up: the forced-noise samples m >= 2 of
#: the previous pass, same names and seeds); sized for ~40 min of 2 shared cores (2023 muons
#: cost ~3x more to simulate and reconstruct).  2022: m = 2 split in k as well (its fake of the
#: previous pass had a second muon 15-45 ns from the trigger).  Fifth pass (the track match
#: with the incoming hits, docs/periods.md "The counted fakes"): the 2022 strata rerun with
#: the same sizes and new seeds (``--seed 11``, the default since), then (0, 2) enlarged from
#: 5e5 to 2.5e6 muons (its one fake carried the counted sum); the 2023 counts of
#: docs/data are stop 17's (seed 7), which the new match leaves unchanged (checked paired on
#: 2e5 muons: no event changes, benchmarks/hit_match_ab.py).  Stop 20: m = 3 (both periods) and
#: the 2023 m = 2 split in k = 0..6 as well (forced pile-up, the 2023 ones seed 7, the 2022 ones
#: seed 11), so that benchmarks/lone_muon_tail.py can classify them stratum by stratum (the natural-
#: pile-up samples 2:n, 3:n were only bounded by their sizes: 3.6e-11 per MOT for 2023 m = 2); and
#: k = 7 for m <= 3 and 6:n added (small samples), which turn the strata not sampled at all (the
#: ``truncation``, every muon counted a fake: 2.3e-13 / 1.0e-12 per MOT) into sample-size bounds
DEFAULT_STRATA = {
    "2022": "0:0:2000000,0:1:2500000,0:2:2500000,0:3:100000,0:4:20000,0:5:20000,0:6:20000,"
            "1:0:300000,1:1:500000,1:2:100000,1:3:20000,1:4:10000,1:5:10000,1:6:10000,"
            "2:0:2000000,2:1:500000,2:2:100000,2:3:20000,2:4:10000,2:5:10000,2:6:10000,"
            "3:0:400000,3:1:200000,3:2:50000,3:3:20000,3:4:10000,3:5:10000,3:6:10000,"
            "0:7:10000,1:7:10000,2:7:10000,3:7:10000,4:n:200000,5:n:200000,6:n:20000",
    "2023": "0:0:500000,0:1:1000000,0:2:200000,0:3:50000,0:4:10000,0:5:10000,0:6:10000,"
            "1:0:100000,1:1:200000,1:2:50000,1:3:10000,1:4:10000,1:5:10000,1:6:10000,"
            "2:0:1000000,2:1:1000000,2:2:200000,2:3:50000,2:4:10000,2:5:10000,2:6:10000,"
            "3:0:200000,3:1:100000,3:2:50000,3:3:10000,3:4:10000,3:5:10000,3:6:10000,"
            "0:7:10000,1:7:10000,2:7:10000,3:7:10000,4:n:200000,5:n:200000,6:n:20000",
}
TAIL_SIDEBAND = (80.0, 144.0)
BOX = (None, 80.0)


def _beam_peak_gev() -> float:
    """The tail models' beam peak: the NA64mu beam energy of calib/setups/na64mu.yaml (GeV)."""
    import hepunits as u

    from na64reco.geometry import load_setup

    return load_setup("na64mu").beam.energy / u.GeV


def parse_strata(text: str) -> tuple[list, dict]:
    strata, events = [], {}
    for item in filter(None, text.split(",")):
        m, k, n = item.split(":")
        key = (int(m), None if k == "n" else int(k))
        strata.append(key)
        events[key] = int(n)
    return strata, events


def combine(res: dict, scale: float = 1.0) -> dict:
    rows = [{"count": r["count"], "pileup": r["pileup"], "events": r["hard"], "numerator": r["fake"],
             "denominator": r["tracked"]} for r in res["rows"]]
    return forced_noise_ratio(rows, res["expected"] * scale, expected_pileup=res["expected_pileup"])


def tail_bound(res: dict, est: dict) -> dict | None:
    """Tail fit of the mis-measurement in the (0, 0) stratum: the reconstructed p_out of its
    tracked muons scaled to the beam energy (``E_beam p_out(reco) / p_out(true)``, so that real
    energy loss, cut at the true ``HARD_P_OUT``, is not in the sideband), fitted in
    ``TAIL_SIDEBAND`` and extrapolated below 80 GeV (the box of a muon at the beam energy); as
    a rate per tracked muon of the whole (stratum weight x box events / its muons / den)."""
    row = next((r for r in res["rows"] if r["count"] == 0 and r["pileup"] == 0), None)
    if row is None or not row["tracked"] or not row.get("scaled_p_out_counts"):
        return None
    term = next(t for t in est["terms"] if t["count"] == 0 and t["pileup"] == 0)
    counts = row["scaled_p_out_counts"]
    out = {"tracked": row["tracked"], "sideband": list(TAIL_SIDEBAND), "variable": "E_beam p_out(reco)/p_out(true)",
           "in_sideband": int(sum(c for c, lo in zip(counts, res["p_out_edges"], strict=False)
                                  if TAIL_SIDEBAND[0] <= lo < TAIL_SIDEBAND[1])),
           "below_sideband": int(sum(c for c, lo in zip(counts, res["p_out_edges"], strict=False)
                                     if lo < TAIL_SIDEBAND[0]))}
    try:
        comp = misreconstruction_background(counts=counts, edges=res["p_out_edges"], sideband=TAIL_SIDEBAND,
                                            box=BOX, peak=_beam_peak_gev(), model="exponential",
                                            alternative="power_law")
    except NA64Error as exc:
        return {**out, "message": str(exc)}
    f = term["weight"] / est["denominator_per_event"] / row["hard"]
    out.update(n_box=comp.n, err_box=comp.error, per_tracked=comp.n * f, per_tracked_err=comp.error * f,
               details={k: v for k, v in comp.details.items() if isinstance(v, (int, float, str))})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--strata", default=None,
                    help="M:K:EVENTS,... (K = n: nominal pile-up) for every period (default: DEFAULT_STRATA)")
    ap.add_argument("--workers", type=int, default=2, help="dask workers (0: in this process)")
    ap.add_argument("--part-events", type=int, default=500_000, help="muons per simulated file")
    ap.add_argument("--keep-files", action="store_true",
                    help="keep the simulated files (default: only their counts, <file>.counts.json, are kept)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the samples (stop 17: 7)")
    ap.add_argument("--sides", default="upstream,downstream", help="MS2 sides whose bend planes form the region")
    ap.add_argument("--campaign", type=Path, default=Path("docs/data"),
                    help="directory of the campaigns' misreco_<period>.json (for the rate per MOT)")
    ap.add_argument("--workdir", type=Path, default=Path("forced-noise-work"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--period-json", type=Path, default=None,
                    help="directory whose misreco_<period>.json gets the forced estimate")
    args = ap.parse_args(argv)
    summary = {}
    with local_client(args.workers) as client:
        for period in args.periods.split(","):
            summary[period] = run_period(period, args, client)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    return 0


def run_period(period: str, args, client) -> dict:
    t0 = time.perf_counter()
    strata, events = parse_strata(args.strata or DEFAULT_STRATA[period])
    res = study(PERIOD_RUNS[period], strata, events, args.seed, args.workdir, sides=args.sides.split(","),
                client=client, part_events=args.part_events, keep_files=args.keep_files)
    est = combine(res)
    camp = args.campaign / f"misreco_{period}.json"
    kept = None
    if camp.exists():
        d = json.loads(camp.read_text())
        kept = d["after_cuts_but_box"] / d["mot"]
    print(f"\n== {period} (run {res['run']}): region {', '.join(res['region'])}, Lambda_R = {res['expected']:.4f} "
          f"noise clusters per event; near times {res['near']} ns, lambda_N = {res['expected_pileup']:.4f} "
          f"pile-up muons per event; {time.perf_counter() - t0:.0f} s")
    print(f"{'m':>3} {'k':>3} {'weight':>10} {'muons':>9} {'tracked':>8} {'fakes':>6} {'fakes/muon':>11} "
          f"{'per tracked':>12} {'90% bound':>10}")
    for r, term in zip(res["rows"], est["terms"], strict=True):
        k = "n" if r["pileup"] is None else r["pileup"]
        print(f"{r['count']:>3} {k:>3} {term['weight']:>10.3e} {r['hard']:>9} {r['tracked']:>8} {r['fake']:>6} "
              f"{term['numerator_per_event']:>11.2e} {term['contribution']:>12.2e} {term['upper_contribution']:>10.1e}")
    print(f"fakes per tracked muon: {est['ratio']:.2e} +- {est['error']:.1e} (90 % CL bound, all strata as upper "
          f"limits: {est['upper']:.1e}, of which the strata without a fake {est['empty_upper']:.1e}; strata not "
          f"sampled add at most {est['truncation']:.1e})")
    tail = tail_bound(res, est)
    if tail and "per_tracked" in tail:
        print(f"(0, 0) stratum tail fit {TAIL_SIDEBAND} -> p_out < 80 GeV: {tail['n_box']:.2g} +- "
              f"{tail['err_box']:.2g} "
              f"of {tail['tracked']} tracked ({tail['in_sideband']} in the sideband, "
              f"{tail['below_sideband']} below) -> "
              f"{tail['per_tracked']:.2e} +- "
              f"{tail['per_tracked_err']:.1e} per tracked muon")
    elif tail:
        print(f"(0, 0) stratum tail fit: {tail['message']}")
    out = {"period": period, **res, "estimate": {k: v for k, v in est.items()}, "tail_00": tail}
    if kept is not None:
        per_mot, err, up, up_empty = (est[k] * kept for k in ("ratio", "error", "upper", "empty_upper"))
        print(f"per MOT (x {kept:.3g} kept beam muons per MOT): {per_mot:.2e} +- {err:.1e} (bound {up:.1e}, "
              f"empty strata {up_empty:.1e}); x {EXPOSURE_2022:.3g} MOT: {per_mot * EXPOSURE_2022:.3g} +- "
              f"{err * EXPOSURE_2022:.2g} events")
        out.update(kept_per_mot=kept, per_mot=per_mot, per_mot_err=err, per_mot_upper_90=up,
                   per_mot_empty_upper_90=up_empty)
        if tail and "per_tracked" in tail:
            out.update(tail_00_per_mot=tail["per_tracked"] * kept, tail_00_per_mot_err=tail["per_tracked_err"] * kept)
            print(f"(0, 0) tail fit per MOT: {out['tail_00_per_mot']:.2e} +- {out['tail_00_per_mot_err']:.1e}")
    print("noise scale (uncorrelated noise in R x s):  " + "  ".join(
        f"s={s:g}: {combine(res, s)['ratio']:.2e}" for s in NOISE_SCALES))
    out["noise_scale"] = {str(s): combine(res, s)["ratio"] for s in NOISE_SCALES}
    if args.period_json is not None and kept is not None:
        target = args.period_json / f"misreco_{period}.json"
        d = json.loads(target.read_text())
        strata = [{**{k: r[k] for k in ("count", "pileup", "hard", "tracked", "fake")},
                   "weight": t["weight"], "per_tracked": t["contribution"],
                   "upper_90_per_tracked": t["upper_contribution"]}
                  for r, t in zip(res["rows"], est["terms"], strict=True)]
        d.update(forced_noise_per_mot=out["per_mot"], forced_noise_err=out["per_mot_err"],
                 forced_noise_upper_90=out["per_mot_upper_90"],
                 forced_noise_empty_upper_90=out["per_mot_empty_upper_90"],
                 forced_noise_truncation_per_mot=est["truncation"] * kept,
                 forced_noise_tail_00_per_mot=out.get("tail_00_per_mot"),
                 forced_noise_tail_00_err=out.get("tail_00_per_mot_err"),
                 forced_noise={"region": res["region"], "expected": res["expected"], "near": res["near"],
                               "expected_pileup": res["expected_pileup"], "strata": strata,
                               "per_tracked": est["ratio"], "per_tracked_err": est["error"], "seed": args.seed})
        d.pop("forced_noise_rows", None)
        target.write_text(json.dumps(d, indent=1))
        print(f"wrote the forced estimate into {target}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
