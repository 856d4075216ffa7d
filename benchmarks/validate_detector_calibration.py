"""Closure of the tracker calibrations (alignment, momentum scale, plane efficiency) at full size.

    python benchmarks/validate_detector_calibration.py [--events 50000] [--seed 1]
                                                       [--signal-events 20000] [--mass-mev 100]

A private copy of calib/ gets a *true* NA64mu tracker payload that differs from the nominal
one: the 7 planes that are not reference planes misaligned by 100-500 um (random sign), the
field integrals of MS1 and MS2 off by 0.5-1 %, plane efficiencies uniform in 0.80-0.99,
noise rates 0.7-1.5 x the setup's, dead strips (in the beam and noise illuminated region)
and hot strips.  A beam run simulated with it is calibrated with the nominal tag as start,
each step on the previous step's tag (as a user would):

    na64reco calibrate --kind alignment      --base-tag na64mu-default --tag v-align  BEAM
    na64reco calibrate --kind momentum-scale --base-tag v-align        --tag v-scale  BEAM
    na64reco calibrate --kind efficiency     --base-tag v-scale        --tag v-eff    BEAM

and the closure tables are printed: alignment (fitted - true per plane), the p_in / p_out
resolution with the true, nominal and fitted alignment, the field integrals, and per plane
the efficiency pull, noise ratio and dead / hot strips.  With ``--signal-events`` the NA64mu
signal efficiency (:func:`na64reco.efficiency.signal_efficiency`) is computed with the
setup's assumed plane efficiencies and with the measured ones (a tag with the nominal
tracker constants but the measured plane efficiencies, noise, dead and hot strips).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from hepunits import MeV, m, tesla

from na64reco.calibration.publish import calibrate_files, publish_result
from na64reco.conditions import load_conditions, publish, tracker_content
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking.stage import reconstruct_tracks

REPO_CALIB = Path(__file__).resolve().parent.parent / "calib"
RUN = 900
DEAD = {"MM3X": [150, 171], "GEM1Y": [120], "ST1X": [31], "MM6Y": [165]}
HOT = {"MM5Y": [40], "GEM2X": [100, 200], "MM1X": [300]}


def true_tracker(setup, base, rng) -> tuple[dict, dict]:
    body = tracker_content(setup, base)
    free = ["MM2X", "MM3X", "MM3Y", "MM5Y", "MM6Y", "MM6X", "ST1X"]
    for p in setup.planes:
        e = body["planes"][p.name]
        if p.name in free:
            e["alignment_mm"] = round(float(e["alignment_mm"] + rng.choice([-1, 1]) * rng.uniform(0.1, 0.5)), 5)
        e["efficiency"] = round(float(rng.uniform(0.80, 0.99)), 3)
        e["noise_hits"] = round(float(p.noise_hits * rng.uniform(0.7, 1.5)), 3)
        e["dead_strips"] = DEAD.get(p.name, [])
        if p.name in HOT:
            e["hot_strips"] = HOT[p.name]
    fields = {k: float(mag.field_integral / (tesla * m)) * float(1 + rng.choice([-1, 1]) * rng.uniform(0.005, 0.01))
              for k, mag in setup.magnets.items()}
    body["magnets"] = {k: {"field_integral_tm": round(v, 6)} for k, v in fields.items()}
    return body, fields


def resolution(events, truth, setup, cond, key) -> float:
    """Half the 16-84 % spread of p_reco / p_true - 1 (``key`` p_in or p_out)."""
    r = reconstruct_tracks(events, setup, cond)
    rel = r[key] / truth[key] - 1
    rel = rel[np.isfinite(rel) & (truth["p_out"] > 100)]
    q16, q84 = np.percentile(rel, [16, 84])
    return 0.5 * (q84 - q16)


def noise_closure(setup, eff, true) -> None:
    """Noise split vs the true tag's noise_hits per plane, the pile-up rate vs the generator's,
    and what the measured noise does to the forced-noise Lambda_R of the 2022 estimate."""
    from na64reco.sim.occupancy import expected_per_event

    print("\n== noise closure: off-track clusters split into uncorrelated noise and beam pile-up muons ==")
    print(f"{'plane':6s} {'true noise':>10s} {'measured noise':>16s} {'pull':>6s} {'ratio':>6s} "
          f"{'off-track (old)':>16s} {'ratio':>6s} {'pile-up clusters':>17s} {'pile-up muons':>15s}")
    pulls, split, old, split_err = [], {}, {}, {}
    for p in setup.planes:
        r, t = eff.planes[p.name], true.planes[p.name]
        pulls.append((r.noise_hits - t.noise_hits) / r.noise_error)
        split[p.name], old[p.name] = r.noise_hits / t.noise_hits, r.off_track_hits / t.noise_hits
        split_err[p.name] = r.noise_error / t.noise_hits
        print(f"{p.name:6s} {t.noise_hits:10.4f} {r.noise_hits:7.4f} +- {r.noise_error:.4f} {pulls[-1]:+6.2f} "
              f"{split[p.name]:6.3f} {r.off_track_hits:7.4f} +- {r.off_track_error:.4f} {old[p.name]:6.2f} "
              f"{r.pileup_hits:8.4f} +- {r.pileup_error:.4f} {r.pileup_muons:6.3f} +- {r.pileup_muons_error:.3f}")
    pulls = np.array(pulls)
    print(f"noise pulls: mean {pulls.mean():+.2f}, rms {pulls.std():.2f}, |pull| < 2 for "
          f"{(np.abs(pulls) < 2).sum()}/{pulls.size}, < 3 for {(np.abs(pulls) < 3).sum()}/{pulls.size}; "
          f"measured / true {min(split.values()):.2f}-{max(split.values()):.2f} "
          f"(the old off-track count: {min(old.values()):.1f}-{max(old.values()):.1f})")
    gen = expected_per_event(setup)
    print(f"out-of-time beam muons per event: measured {eff.pileup_muons:.3f} +- {eff.pileup_muons_error:.3f}, "
          f"generated {gen:.4f} (ratio {eff.pileup_muons / gen:.3f})")
    forced_noise_shift(split, old, split_err)


def forced_noise_shift(split: dict, old: dict, split_err: dict,
                       path: Path = REPO_CALIB.parent / "docs/data/misreco_2022.json") -> None:
    """The 2022 forced-noise estimate with Lambda_R from measured noise: each plane of its
    region R at (measured / true) x the nominal noise, the strata reweighted (no rerun)."""
    import json

    from na64reco.background.estimates import forced_noise_ratio

    if not path.exists():
        print(f"(no {path}: forced-noise shift skipped)")
        return
    d = json.loads(path.read_text())
    fn = d["forced_noise"]
    setup22 = load_setup("na64mu", run=int(d.get("run", 1)))  # the 2022 period
    noise = {p.name: (p.noise_hits, p.type) for p in setup22.planes}
    ro = setup22.readout

    def lam(ratio: dict, power: int = 1) -> float:
        total = 0.0
        for name, (a, b) in fn["region"].items():
            lo, hi = ro.straw_noise_window if noise[name][1] == "straw" else ro.apv_noise_window
            total += (noise[name][0] * ratio.get(name, 1.0) * (b - a) / (hi - lo)) ** power
        return total

    rows = [{"count": r["count"], "pileup": r["pileup"], "events": r["hard"], "numerator": r["fake"],
             "denominator": r["tracked"]} for r in fn["strata"]]
    base = forced_noise_ratio(rows, fn["expected"], expected_pileup=fn["expected_pileup"])
    # no fake in any stratum (since stop 18): the 90 % CL upper value moves instead of the estimate
    key, value_key, lim = (("ratio", "forced_noise_per_mot", "") if base["ratio"] > 0
                           else ("upper", "forced_noise_upper_90", "< "))
    print(f"\n== 2022 forced-noise mis-reconstruction ({path.name}, strata reweighted, not rerun"
          f"{'' if not lim else '; no fake counted: the 90 % CL upper value'}) ==")
    print(f"{'Lambda_R from':34s} {'Lambda_R':>9s} {'per MOT':>9s} {'x 1.98e10 MOT':>14s} {'/ tag':>6s}")
    for label, ratio in (("the tag (setup noise_hits)", {}), ("measured noise (split)", split),
                         ("off-track clusters (old, unsplit)", old)):
        value = lam(ratio)
        est = forced_noise_ratio(rows, value, expected_pileup=fn["expected_pileup"])
        per_mot = d[value_key] * est[key] / base[key]
        print(f"{label:34s} {value:9.4f} {lim}{per_mot:9.2e} {lim}{per_mot * 1.98e10:14.3f} "
              f"{est[key] / base[key]:6.2f}")
    err = np.sqrt(lam(split_err, 2))
    lo_, hi_ = (forced_noise_ratio(rows, lam(split) + k * err, expected_pileup=fn["expected_pileup"])[key]
                / base[key] for k in (-1, 1))
    print(f"(tag Lambda_R in the file: {fn['expected']:.4f}; the region's planes take the validation's measured / "
          f"true ratios; the measured Lambda_R +- {err:.4f} (stat) moves the estimate by x {lo_:.2f} .. {hi_:.2f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="beam muons of the calibration run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--signal-events", type=int, default=0, help="signal events per efficiency sample (0: skip)")
    ap.add_argument("--mass-mev", type=float, default=100.0)
    ap.add_argument("--run", type=int, default=RUN,
                    help="run of the calibration sample: its period's set-up (e.g. 10900: 2023, MS2 at 2.8 T m)")
    ap.add_argument("--base-tag", default="na64mu-default",
                    help="tag the calibrations start from (a 2023 run needs na64mu-periods-v1: its planes)")
    args = ap.parse_args(argv)
    run, base_tag = args.run, args.base_tag
    tmp = Path(tempfile.mkdtemp(prefix="na64calval-"))
    root = tmp / "calib"
    shutil.copytree(REPO_CALIB, root)
    os.environ["NA64RECO_CALIB"] = str(root)
    from na64reco.sim.generate import simulate

    setup = load_setup("na64mu", run=run)
    rng = np.random.default_rng(args.seed)
    nominal = load_conditions(setup, run, base_tag, root=root)
    body, fields = true_tracker(setup, nominal, rng)
    publish("na64mu", "v-true", (1, 999999), {"tracker": body}, base_tag=base_tag, root=root,
            comment="true tracker constants of the validation")
    true = load_conditions(setup, run, "v-true", root=root)
    beam = tmp / "beam.root"
    t0 = time.perf_counter()
    simulate("na64mu", args.events, args.seed, run, beam, process="beam", calib_tag="v-true",
             trigger="calibration")  # beam-calibration trigger: every beam muon written
    print(f"simulated {args.events} beam muons with the true tag in {time.perf_counter() - t0:.0f} s")
    results, prev = {}, base_tag
    for kind, tag in (("alignment", "v-align"), ("momentum-scale", "v-scale"), ("efficiency", "v-eff")):
        t0 = time.perf_counter()
        results[kind] = calibrate_files(kind, setup, [beam], run, base_tag=prev, root=root)
        publish_result(results[kind], setup, tag, (1, 999999), base_tag=prev, root=root, sources=[beam])
        print(f"\n$ na64reco calibrate --kind {kind} --base-tag {prev} --tag {tag}   "
              f"({time.perf_counter() - t0:.1f} s)")
        print(results[kind].summary())
        prev = tag

    # ---- alignment -----------------------------------------------------------------------
    al = results["alignment"].derived["alignment"]
    fixed = {n for v in al.views for n in v.fixed}
    print("\n== alignment closure (um) ==")
    print(f"{'plane':6s} {'true':>8s} {'start':>8s} {'fitted':>8s} {'fit-true':>9s} {'error':>6s}")
    worst = 0.0
    for p in setup.planes:
        t, s, f = (1000 * x for x in (true.planes[p.name].alignment, nominal.planes[p.name].alignment,
                                       al.alignment[p.name]))
        if p.name in fixed:
            print(f"{p.name:6s} {t:8.1f} {s:8.1f} {f:8.1f}  reference plane (weak modes)")
            continue
        worst = max(worst, abs(f - t))
        print(f"{p.name:6s} {t:8.1f} {s:8.1f} {f:8.1f} {f - t:9.1f} {1000 * al.error[p.name]:6.1f}")
    print(f"largest |fitted - true| of the non-reference planes: {worst:.1f} um (goal <= 10 um)")
    with open_raw(beam) as f:
        events, truth = f.events(), f.truth()
    fi = {k: v * tesla * m for k, v in fields.items()}
    conds = {"true alignment": true,
             "nominal (start)": dataclasses.replace(nominal, field_integrals=fi),
             "fitted alignment": dataclasses.replace(load_conditions(setup, run, "v-align", root=root),
                                                     field_integrals=fi)}
    print("\n== momentum resolution (half 16-84 % width of p/p_true - 1; true field integrals) ==")
    ref = {}
    for name, cond in conds.items():
        r_in = resolution(events, truth, setup, cond, "p_in")
        r_out = resolution(events, truth, setup, cond, "p_out")
        ref.setdefault("in", r_in)
        ref.setdefault("out", r_out)
        print(f"{name:18s} p_in {100 * r_in:.3f} % ({r_in / ref['in']:.3f} x true)   "
              f"p_out {100 * r_out:.3f} % ({r_out / ref['out']:.3f} x true)")

    # ---- momentum scale ------------------------------------------------------------------
    print("\n== momentum-scale closure ==")
    print(f"{'magnet':6s} {'true T m':>9s} {'nominal':>9s} {'measured':>9s} {'error':>8s} {'meas/true-1':>12s} "
          f"{'pull':>6s}")
    for sc in results["momentum-scale"].derived["scales"]:
        t = fields[sc.magnet]
        print(f"{sc.magnet:6s} {t:9.5f} {sc.previous_tm:9.5f} {sc.field_integral_tm:9.5f} {sc.error_tm:8.5f} "
              f"{100 * (sc.field_integral_tm / t - 1):+11.3f}% {(sc.field_integral_tm - t) / sc.error_tm:+6.2f}")

    # ---- efficiency ----------------------------------------------------------------------
    eff = results["efficiency"].derived["planes"]
    print("\n== efficiency closure ==")
    print(f"{'plane':6s} {'true':>6s} {'measured':>16s} {'pull':>6s}  dead true/found, hot true/found")
    pulls, strips_ok = [], True
    for p in setup.planes:
        r, t = eff.planes[p.name], true.planes[p.name]
        pull = (r.efficiency - t.efficiency) / r.efficiency_error
        pulls.append(pull)
        ok = r.dead_strips == DEAD.get(p.name, []) and r.hot_strips == HOT.get(p.name, [])
        strips_ok &= ok
        print(f"{p.name:6s} {t.efficiency:6.3f} {r.efficiency:7.4f} +- {r.efficiency_error:.4f} {pull:+6.2f}  "
              f"{DEAD.get(p.name, [])}/{r.dead_strips}, "
              f"{HOT.get(p.name, [])}/{r.hot_strips}{'' if ok else '  <-- MISMATCH'}")
    pulls = np.array(pulls)
    print(f"efficiency pulls: mean {pulls.mean():+.2f}, rms {pulls.std():.2f}, |pull| < 2 for "
          f"{(np.abs(pulls) < 2).sum()}/{pulls.size} planes; "
          f"dead/hot strips {'all found, none extra' if strips_ok else 'MISMATCH'}")
    noise_closure(setup, eff, true)

    # ---- signal efficiency with the measured plane efficiencies --------------------------
    if args.signal_events > 0:
        from na64reco.efficiency import signal_efficiency

        measured = tracker_content(setup, nominal)
        for name, r in eff.planes.items():
            measured["planes"][name].update(efficiency=round(float(r.efficiency), 5),
                                            noise_hits=round(max(float(r.noise_hits), 0.0), 5),
                                            dead_strips=r.dead_strips)
            if r.hot_strips:
                measured["planes"][name]["hot_strips"] = r.hot_strips
        publish("na64mu", "v-measured-planes", (1, 999999), {"tracker": measured}, base_tag="na64mu-default",
                root=root, comment="nominal tracker constants with the measured plane efficiencies")
        print(f"\n== NA64mu signal efficiency, m = {args.mass_mev:g} MeV, {args.signal_events} signal events ==")
        for label, tag in (("assumed plane efficiencies (setup)", None),
                           ("measured plane efficiencies", "v-measured-planes")):
            t0 = time.perf_counter()
            table = signal_efficiency("na64mu", [args.mass_mev * MeV], args.signal_events, seed=args.seed + 10,
                                      run=run, calib_tag=tag)
            pt = table.points[0]
            print(f"{label:36s} eff = {pt.efficiency:.4f} +- {pt.error:.4f}   "
                  f"({time.perf_counter() - t0:.0f} s)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
