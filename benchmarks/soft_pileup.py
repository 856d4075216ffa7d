"""The (0, 1) stratum's pile-up-set term measured with the near pile-up muon forced soft.

    python benchmarks/soft_pileup.py [--periods 2022,2023] [--events 2022:400000,2023:300000]
        [--part-events 50000] [--workers 2] [--seed 11] [--v-min 0.25] --workdir DIR
        [--natural /work/notes/s19/foreigntruth-work/w] [--natural-seed 11] [--campaign docs/data]
        [--json OUT.json] [--period-json DIR]

For each period, EVENTS beam muons of the (0, 1) stratum (no noise cluster in R, exactly one
out-of-time beam muon B in the near times N) with B forced to lose a fraction >= V_MIN of its
energy in the ECAL (:mod:`na64reco.sim.forced_soft`: p_B below ~120 GeV, weight P_R per event,
closed form) are simulated with the true crossings, reconstructed and classified on truth in
parts of PART-EVENTS (one dask task each; ``<part>.soft.npz`` kept in WORKDIR, raw deleted, so a
rerun only re-combines).  :func:`na64reco.background.soft_pileup.soft_summary` counts the fakes (all cuts,
box p_out < 80 GeV) and the counts with the box edge moved up, and the search's choice of B's
hits by planes in bins of p_B, beside the natural (0, 1) sample's (B hard but ~3e-3), read from
the classification cache ``--natural`` (``lone_run<run>_<seed>_s01_50000_p*.muons.npz``; only
read).  :func:`na64reco.background.pileup_truth.pileup_estimate` then re-makes the (0, 1) estimate on the
natural sample with B's set term = the direct soft count + the hard-B set bound (the old choice
bound kept beside it); ``--period-json DIR`` writes it as ``truth_strata["0,1"]`` into
``DIR/misreco_<period>.json`` (copied from ``--campaign`` if absent), the soft sample's figures as
``soft_pileup["0,1"]`` (which ``pileup_estimate`` then uses whenever the (0, 1) stratum is
re-made from that JSON, e.g. by ``benchmarks/lone_muon_tail.py``), and prints the row of
:func:`na64reco.background.misreco_from_json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from lone_muon_tail import events_of  # benchmarks/ is the script directory: --events N or PERIOD:N,...

from na64reco.background.fake_kicks import PERIOD_RUNS
from na64reco.background.lone_muon_truth import load_muons, view_geometry
from na64reco.background.pileup_truth import pileup_estimate
from na64reco.background.soft_pileup import DEFAULT_V_MIN, load_soft, simulate_soft_parts, soft_summary
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.runner import local_client

DEFAULT_EVENTS = "2022:400000,2023:300000"
#: 1.98e10 MOT: the 2022 exposure of the published search
MOT_2022 = 1.98e10


def natural_parts(workdir: Path, run: int, seed: int) -> list[Path]:
    files = sorted(workdir.glob(f"lone_run{run}_{seed}_s01_50000_p*.muons.npz"),
                   key=lambda p: int(p.name.split("_p")[-1].split(".")[0]))
    if not files:
        raise SystemExit(f"--natural {workdir}: no (0, 1) classification of run {run} seed {seed} "
                         f"(lone_run{run}_{seed}_s01_50000_p*.muons.npz)")
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--events", default=DEFAULT_EVENTS, help="soft muons: N or PERIOD:N,... (default %(default)s)")
    ap.add_argument("--part-events", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2, help="dask workers (0: in this process)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--v-min", type=float, default=DEFAULT_V_MIN,
                    help="forced region: a radiative loss of at least this fraction of B's energy "
                    "(default %(default)s)")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--natural", type=Path, default=Path("/work/notes/s19/foreigntruth-work/w"),
                    help="classification cache of the natural (0, 1) stratum (read only)")
    ap.add_argument("--natural-seed", type=int, default=11)
    ap.add_argument("--campaign", type=Path, default=Path("docs/data"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--period-json", type=Path, default=None)
    args = ap.parse_args(argv)
    summary = {}
    with local_client(args.workers) as client:
        for period in args.periods.split(","):
            run = PERIOD_RUNS[period]
            t0 = time.perf_counter()
            n = events_of(args.events, period)
            files = simulate_soft_parts(run, n, args.seed, args.workdir, part_events=args.part_events, client=client,
                                        v_min=args.v_min)
            t_sim = time.perf_counter() - t0
            soft_m = load_soft(files)
            natural = load_muons(natural_parts(args.natural, run, args.natural_seed))
            s = soft_summary(soft_m, natural)
            s["seconds_simulate_classify"] = t_sim
            setup = load_setup("na64mu", run=run)
            geometry = view_geometry(setup, load_conditions(setup, run))
            camp = args.campaign / f"misreco_{period}.json"
            period_data = json.loads(camp.read_text())
            est = pileup_estimate(natural, geometry, period_data, (0, 1), soft=s)
            est.update(period=period, run=run, events=int(natural["all_tracked"].size), seed=args.natural_seed,
                       part_events=50_000)
            print_soft(period, s, est)
            summary[period] = {"soft": s, "estimate_01": est}
            if args.period_json is not None:
                args.period_json.mkdir(parents=True, exist_ok=True)
                target = args.period_json / f"misreco_{period}.json"
                if not target.exists():
                    shutil.copy(camp, target)
                d = json.loads(target.read_text())
                old = (d.get("truth_strata") or {}).get("0,1")
                if old is not None:  # the natural sample's events and seed as the stop-19 entry recorded them
                    est.update(events=old.get("events", est["events"]), part_events=old.get("part_events", 50_000))
                d.setdefault("truth_strata", {})["0,1"] = est
                d.setdefault("soft_pileup", {})["0,1"] = s  # pileup_estimate takes it from here on a rerun
                target.write_text(json.dumps(d, indent=1))
                print(f"wrote truth_strata['0,1'] into {target}")
                print_row(target)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    return 0


def print_soft(period: str, s: dict, est: dict) -> None:
    print(f"\n== {period}: {s['events']} muons of (0, 1) with B forced soft (v >= {s['v_min']:g}: P_R = "
          f"{s['p_region']:.4g} per muon, {s['near_forced']} of {s['near_muons']} near muons forced), "
          f"{s['hard']} hard, "
          f"{s['tracked']} tracked ({s['seconds_simulate_classify']:.0f} s); p_B 10/50/90 % "
          + " / ".join(f"{x:.0f}" for x in s["p_b_quantiles_gev"]) + " GeV")
    print(f"fakes (all cuts, p_out < 80 GeV): {s['fakes']} (90 % upper {s['fakes_upper_90']:.2f}); per hard muon "
          f"x P_R: < {s['per_hard_natural_upper_90']:.3g}")
    if "tracking_fakes" in s:  # the forced muon's deposits in the calorimeters (issue 9)
        t = s["tracking_fakes"]
        print(f"  with the tracking cuts only: {t['n']} fakes; failing " + ", ".join(
            f"{k} {v}" for k, v in t["failing"].items()) + f"; passing {', '.join(t['counted_cuts'])}: "
            f"{t['passing_counted']}")
        for e in t["events"]:
            print(f"    E_ECAL {e['ecal_energy_gev']:.1f} GeV (B's deposit {e['b_e_ecal_gev']:.1f}), master time "
                  f"{e['event_time_ns']:.0f} ns, t_B {e['b_time_ns']:+.0f} ns, p_B {e['p_b_gev']:.0f} GeV, "
                  f"failed: {', '.join(e['failed']) or '-'}")
    for e in s["edges"]:
        print(f"  box edge {e['edge_gev']:g} GeV: {e['count']} tracked muons below it, {e['with_b_hits']} using "
              "B's hits"
              + (f" (p_B of those: {', '.join(f'{x:.0f}' for x in e['p_b_gev_of_those_with_b_hits'][:8])})"
                 if e["with_b_hits"] else ""))
    print("the search's choice of B's hits (tracked / using any (rate) / by planes 1..n):")
    for name, c in {**s["choice"], **s.get("choice_natural", {})}.items():
        print(f"  {name}: {c['tracked']} / {c['using_any']} ({c['rate_any']:.3g}, 90 % < {c['rate_any_upper_90']:.3g})"
              " / " + " ".join(f"{r['using']}" for r in c["by_planes"].values()))
    if "ratio_soft_to_natural_any" in s:
        r = s["ratio_soft_to_natural_any"]
        print(f"  soft / natural choice rate (any plane): {r['ratio']:.3g} (90 % upper {r['ratio_upper_90']:.3g})")
    soft = est["pileup_truth"]["soft"]
    h = soft["hard_b"]
    print(f"natural (0, 1): {h['soft_pileup_muons_taken_out']} of {h['kept_pileup_muons']} kept pile-up muons below "
          f"{h['split_gev']:g} GeV from their crossings (R's), {h['without_momentum']} without a momentum")
    if "per_mot" in soft:
        p = soft["per_mot"]
        print(f"(0, 1) per MOT: B soft counted {p['soft_b_direct']:.3g} +- {p['soft_b_direct_err']:.2g} "
              f"({p['soft_b_fakes']} fakes)")
        print(f"(0, 1) per MOT: B soft (direct, 90 % upper) {p['soft_b_direct_upper_90']:.3g} + B hard (sets x choice) "
              f"{p['hard_b_sets_choice']:.3g} = {p['set_term']:.3g} (old choice bound over all B "
              f"{p['old_choice_bound_all_b']:.3g}); A's own outliers {p['own_outliers_integrated_upper']:.3g}; "
              f"stratum per_mot_upper {est['per_mot_upper']:.3g} ({est['per_mot_upper_from']})")


def print_row(path: Path) -> None:
    from na64reco.background.estimates import misreco_from_json

    c = misreco_from_json(path)
    kind = "< " if c.upper_limit else ""
    err = "" if c.upper_limit else f" +- {c.error:.3g}"
    print(f"row {path}: {kind}{c.n:.3g}{err} per MOT = {kind}{c.n * MOT_2022:.3g}{'' if c.upper_limit else ' +- '}"
          f"{'' if c.upper_limit else f'{c.error * MOT_2022:.3g}'} events in {MOT_2022:.3g} MOT")
    print(f"  {c.method[:400]}")


if __name__ == "__main__":
    raise SystemExit(main())
