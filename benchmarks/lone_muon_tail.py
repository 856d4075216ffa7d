"""The (0, 0) stratum of the mis-reconstruction (the lone beam muon) classified on truth,
and the strata with one extra hit source, (1, 0) and (0, 1) (``--strata``).

    python benchmarks/lone_muon_tail.py [--periods 2022,2023] [--events 1000000]
        [--part-events 100000] [--workers 2] [--seed 11] [--workdir DIR] [--json OUT.json]
        [--campaign docs/data] [--period-json docs/data]
        [--strata 0,0 1,0 0,1] [--stratum-events N | PERIOD/M,K:N;...] [--stratum-part-events 50000]

For each period, EVENTS beam muons of the (0, 0) stratum (exactly 0 noise clusters in the
region R of the MS2 bend-view planes, exactly 0 out-of-time beam muons in the near times N:
:mod:`na64reco.background.fake_kicks`) are simulated with the simulator's true tracker crossings
(``simulate(true_crossings=)``) in parts of PART-EVENTS (one dask task each; a part's
classification is kept as ``<part>.muons.npz``, the raw file deleted, so a rerun with the
same workdir is immediate).  Each tracked muon is classified on truth
(:func:`na64reco.background.lone_muon_truth.classify`), and :func:`na64reco.background.lone_muon.p00_estimate` gives

* the pull of the fitted deflection against the truth for the muons fitted with the right
  hits: its Gaussian fit, GOF, tail counts and largest |pull|;
* each non-Gaussian class (wrong twin, far hit) with its rate and the deflection shift its
  hits make, in units of the distance to the box;
* the box probability per tracked muon: the closed-form Gaussian tail of every muon (its own
  fit sigma x the measured pull width) at its measured shift, plus the bound of the worst
  shift the hit deviations can make; and the directly counted fakes.

``--period-json DIR`` writes it as ``lone_muon_00`` into ``DIR/misreco_<period>.json``
(:func:`na64reco.background.misreco_from_json` then uses it for the (0, 0) stratum in place
of the tail fit).

``--strata 1,0 0,1``: the same for the strata with exactly one noise cluster in R, (1, 0), or
exactly one beam muon in N, (0, 1) (:func:`na64reco.background.lone_muon.stratum_estimate`: the foreign
hits the tracks used, the closed form of one wrong hit within the chi2 cut, the bound), cached
per part as ``lone_run<run>_<seed>_s<m><k>_<part>_p<j>.muons.npz`` in WORKDIR; written as
``truth_strata["m,k"]`` into ``DIR/misreco_<period>.json`` (a key of its own:
``misreco_from_json`` then uses it in place of the stratum's sample-size bound).  With the
cache in place a rerun only re-combines (no raw file needed, ~1 min per period and stratum);
it takes the strata weights and kept muons per MOT from ``--campaign`` as they are then.

Strata with k >= 1 near pile-up muons (``--strata 0,1 1,1 0,2 1,2 0,3``) whose parts carry the
pile-up muon's truth (classified since stop 19: ``src``, ``pu_sep``, ``pu_time``,
``hard_p_true``) are estimated by :func:`na64reco.background.pileup_truth.pileup_estimate` (each used hit's
source on truth, the measured tails at exact shifts and their check against direct counts at
looser box edges, A's own-outlier bound and the pile-up muon's set bound times the search's
choice rate); older parts fall back to :func:`na64reco.background.lone_muon.stratum_estimate`.

Any stratum (m, k) with m, k <= 9 is classified this way, e.g. the 2023 m = 2 and both periods'
m = 3 strata split in k (stop 20: ``--strata 2,0 2,1 2,2 2,3 3,0 3,1 3,2``); their weights come
from the ``forced_noise`` strata of the period JSON, so ``benchmarks/misreco_forced_noise.py``
must have them split in k too (its ``DEFAULT_STRATA``); a nominal-pile-up stratum ("m,n") is
refused.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from na64reco.background.fake_kicks import PERIOD_RUNS
from na64reco.background.lone_muon import p00_estimate, stratum_estimate
from na64reco.background.lone_muon_truth import load_muons, simulate_parts, view_geometry
from na64reco.background.pileup_truth import pileup_estimate
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.runner import local_client

#: muons per period (2022 tracks 16 % of them, 2023 92 %): ~14 min of 2 shared cores in all
DEFAULT_EVENTS = "2022:3000000,2023:2000000"
#: muons of the other strata per period: ~13 min of 2 shared cores in all (2026-11-29)
DEFAULT_STRATUM_EVENTS = "2022/1,0:3000000;2023/1,0:2500000;2022/0,1:2000000;2023/0,1:1500000"


def stratum_events_of(text: str, period: str, stratum: tuple[int, int]) -> int:
    if ":" not in text:
        return int(text)
    key = f"{period}/{stratum[0]},{stratum[1]}"
    sizes = dict(item.split(":") for item in text.split(";"))
    if key not in sizes:
        raise SystemExit(f"--stratum-events {text}: no size for {key}")
    return int(sizes[key])


def events_of(text: str, period: str) -> int:
    if ":" not in text:
        return int(text)
    sizes = dict(item.split(":") for item in text.split(","))
    if period not in sizes:
        raise SystemExit(f"--events {text}: no size for period {period}")
    return int(sizes[period])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--events", default=DEFAULT_EVENTS,
                    help="muons of the (0, 0) stratum: N for every period or PERIOD:N,... (default %(default)s)")
    ap.add_argument("--part-events", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2, help="dask workers (0: in this process)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workdir", type=Path, default=Path("lone-muon-work"))
    ap.add_argument("--campaign", type=Path, default=Path("docs/data"),
                    help="directory of misreco_<period>.json (weights, kept muons per MOT)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--period-json", type=Path, default=None,
                    help="directory whose misreco_<period>.json gets the estimate (key lone_muon_00)")
    ap.add_argument("--strata", nargs="+", default=["0,0"],
                    help="strata m,k to classify: 0,0 (the lone muon) and/or 1,0 0,1 (default %(default)s)")
    ap.add_argument("--stratum-events", default=DEFAULT_STRATUM_EVENTS,
                    help="muons of the strata other than (0, 0): N or PERIOD/M,K:N;... (default %(default)s)")
    ap.add_argument("--stratum-part-events", type=int, default=50_000)
    args = ap.parse_args(argv)
    try:
        strata = [tuple(int(x) for x in st.split(",")) for st in args.strata]
    except ValueError:
        raise SystemExit(f"--strata {' '.join(args.strata)}: each stratum is m,k with integers (a nominal-pile-up "
                         "stratum 'm,n' is not classified: split it in k, benchmarks/misreco_forced_noise.py "
                         "--strata M:0:N,M:1:N,...)") from None
    summary = {}
    with local_client(args.workers) as client:
        for period in args.periods.split(","):
            camp = args.campaign / f"misreco_{period}.json"
            period_data = json.loads(camp.read_text()) if camp.exists() else {}
            check_weights(camp, period_data, strata)
            setup = load_setup("na64mu", run=PERIOD_RUNS[period])
            geometry = view_geometry(setup, load_conditions(setup, PERIOD_RUNS[period]))
            for stratum in strata:
                t0 = time.perf_counter()
                if stratum == (0, 0):
                    n_events = events_of(str(args.events), period)
                    files = simulate_parts(PERIOD_RUNS[period], n_events, args.seed, args.workdir,
                                           part_events=args.part_events, client=client)
                    est = p00_estimate(load_muons(files), geometry, period_data)
                    part_events = args.part_events
                else:
                    n_events = stratum_events_of(args.stratum_events, period, stratum)
                    files = simulate_parts(PERIOD_RUNS[period], n_events, args.seed, args.workdir,
                                           part_events=args.stratum_part_events, client=client, stratum=stratum)
                    muons = load_muons(files)
                    if stratum[1] >= 1 and all(k in muons for k in ("src", "pu_sep", "hard_p_true")):
                        est = pileup_estimate(muons, geometry, period_data, stratum)  # on the pile-up truth
                    else:  # parts classified before the pile-up truth existed: the foreign hits as one class
                        est = stratum_estimate(muons, geometry, period_data, stratum)
                    part_events = args.stratum_part_events
                est["seconds"] = time.perf_counter() - t0
                est.update(period=period, run=PERIOD_RUNS[period], events=n_events, seed=args.seed,
                           part_events=part_events)
                print_estimate(est)
                name = "0,0" if stratum == (0, 0) else f"{stratum[0]},{stratum[1]}"
                summary.setdefault(period, {})[name] = est
                if args.period_json is not None:
                    target = args.period_json / f"misreco_{period}.json"
                    d = json.loads(target.read_text())
                    if stratum == (0, 0):
                        d["lone_muon_00"] = est
                        print(f"wrote lone_muon_00 into {target}")
                    else:
                        d.setdefault("truth_strata", {})[name] = est
                        print(f"wrote truth_strata[{name!r}] into {target}")
                    target.write_text(json.dumps(d, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


def check_weights(path: Path, period_data: dict, strata) -> None:
    """Every stratum to classify needs its weight, a stratum (m, k) of the period's forced samples
    (``forced_noise.strata`` of ``path``): refused before any simulation when the sample of that m
    has the nominal pile-up (k = None) or lacks k."""
    rows = (period_data.get("forced_noise") or {}).get("strata")
    if not rows:
        return
    have = {(r["count"], r["pileup"]) for r in rows}
    for m, k in strata:
        if (m, k) not in have:
            got = sorted("n" if kk is None else kk for mm, kk in have if mm == m)
            raise SystemExit(f"{path}: key 'forced_noise.strata': no stratum ({m}, {k}) to weight the classification "
                             f"(m = {m} has k {got or 'none'}; 'n' is the nominal pile-up): rerun "
                             f"benchmarks/misreco_forced_noise.py with m = {m} split in k")


def print_estimate(e: dict) -> None:
    c = e["core"]
    st = tuple(e.get("stratum", (0, 0)))
    print(f"\n== {e['period']} (run {e['run']}): {e['events']} muons of the {st} stratum, {e['hard']} hard, "
          f"{e['tracked']} tracked ({e['seconds']:.0f} s); view {', '.join(e['view_planes'])}")
    print("classes of the tracked muons: " + ", ".join(f"{k} {v}" for k, v in e["classes"].items()))
    print(f"core (right hits, {c['n']} muons): pull mean {c['mean']:.4f} +- {c['mean_err']:.4f}, width "
          f"{c['width']:.4f} +- {c['width_err']:.4f} (fit's own sigma: 1); KS p = {c['ks_p']:.3g}, AD {c['ad']:.3g}; "
          f"|pull| > 3 / 4 / 5: {c['tails_obs']} (Gaussian of that width: "
          f"{', '.join(f'{x:.3g}' for x in c['tails_exp'])}); max |pull| {c['max_abs_pull']:.2f}")
    print(f"distance to the box p_out < 80 GeV: median {e['box_distance_median_sigma']:.1f} fit sigmas "
          f"(smallest {e['box_distance_min_sigma']:.1f})")
    for name, k in e["shift_classes"].items():
        print(f"  {name}: {k['n']} muons ({k['rate']:.2e} per tracked), shift/distance to the box: max "
              f"{k['max_shift_fraction']:.3g}, largest |pull| {k['max_abs_pull']:.2f}")
    o = e["outlier_planes"]
    print("outliers per plane (used / outliers / 90 % rate limit / largest outlier deviation mm / bound mm): "
          + "; ".join(
        f"{p} {u} / {k} / {r:.1e} / {d:.2f} / {b:.2f}" for p, u, k, r, d, b in zip(
            o["planes"], o["used"], o["outliers"], o["rate_upper_90"], o["max_outlier_dev_mm"], o["bound_dev_mm"],
            strict=True)))
    print(f"muons by number of outlier planes {o['muons_by_outlier_planes']} (two or more if independent: "
          f"{o['two_or_more_expected_if_independent']:.2f}; correlation factor F <= "
          f"{o['correlation_factor_upper_90'] or float('inf'):.3g}); geometry check (gains) "
          f"{e['geometry_check_max_gain_diff']:.1e}")
    print(f"box probability per tracked muon: Gaussian core log10 {e['log10_p_core']:.1f}; with the measured shifts "
          f"log10 {e['log10_p_measured']:.1f}; bound (outlier sets) log10 {e['log10_p_bound']:.1f}; "
          f"counted fakes {e['fakes']} in {e['tracked']}")
    print("  bound by number of outlier planes (log10 per tracked muon): "
          + ", ".join(f"{k}: {v:.1f}" for k, v in enumerate(e["log10_p_bound_by_outlier_planes"])))
    t = e["tail_shapes"]
    print(f"tail fits of E_beam p_out(reco)/p_out(true) in {t['sideband']} GeV: {t['in_sideband']} muons in the "
          f"sideband, the truth model expects {t['truth_model_in_sideband']:.1f} (deviance "
          f"{t['truth_model_deviance']:.1f} in {t['truth_model_bins']} bins, p = {t['truth_model_p']:.2g})")
    for shape in ("exponential", "power_law"):
        f = t.get(shape, {})
        if "n_box" in f:
            decades = math.log10(max(f["n_box_per_tracked"], 1e-300)) - e["log10_p_measured"]
            print(f"  {shape}: deviance {f['deviance']:.1f} in {f['bins']} bins (p = {f['p']:.2g}); box "
                  f"{f['n_box_per_tracked']:.2g} per tracked muon, {decades:.1f} decades above the truth model")
        else:
            print(f"  {shape}: {f.get('message')}")
    if "foreign" in e:
        f, h = e["foreign"], e["single_hit"]
        print(f"foreign hits used (not the muon's own: the noise cluster / the pile-up muon's hits, or its own far "
              f"cluster): muons by number {f['muons_by_foreign_hits']}, replacing the muon's own hit "
              f"{f['muons_replacing_own_hit']}, on a plane where it was missing only {f['muons_on_missing_plane_only']}"
              f"; far-hit class rate {f['far_hit_class_rate']:.3g} (the (0, 0) stratum: "
              f"{f['far_hit_class_rate_00'] or float('nan'):.3g}"
              f"); core width here {e['core']['width']:.4f}, (0, 0) "
              f"{(f['core_00'] or {}).get('width', float('nan')):.4f}")
        print(f"one wrong hit within the chi2 cut (closed form, right hits on the fit): largest shift / distance to "
              f"the box {h['reach_over_room_max']:.3g} (median {h['reach_over_room_median']:.3g}); muons it can bring "
              f"into the box {h['muons_one_hit_can_reach_box']} (with the right hits' residual at the bound's quantile "
              f"{h['muons_one_hit_can_reach_box_with_residual_quantile']}); measured single-foreign-hit muons "
              f"{h['measured_one_foreign']} (clean ones: one foreign hit, no other outlier): largest shift / distance "
              f"{h['measured_shift_over_room_max']:.3g}; shift / the closed-form limit: median "
              f"{(h['measured_shift_over_limit_quantiles'] or [0])[0]:.3g}, "
              f"max {h['measured_shift_over_limit_max']:.3g}"
              f", {h['measured_above_limit']} above 1")
        print(f"  one outlier at any deviation (1-D residual integral, plane outlier-rate limits): log10 "
              f"{h['log10_p_bound']:.1f} per tracked muon; bound used: {e['bound_from']} (log10 "
              f"{e['log10_p_bound']:.1f}; outlier sets alone {e['log10_p_bound_outlier_sets']:.1f})")
    if "track_time" in e:
        t = e["track_time"]
        q = t.get("mixed_2plus_dt_quantiles_ns") or [math.nan] * 3
        print(f"common track time ({', '.join(t['timed_planes'])}): muons by foreign APV hits "
              f"{t['muons_by_foreign_apv_hits']}, by foreign straw hits {t['muons_by_foreign_straw_hits']}; 2+ foreign "
              f"APV hits: {t['two_plus_foreign_apv']} ({t['two_plus_foreign_apv_own_apv_two_plus']} with 2+ own APV "
              f"hits, "
              f"{t['two_plus_foreign_apv_own_apv_le1']} with <= 1); closed form of a pile-up muon's 2+ APV hits "
              f"{t['dt_min_ns']:g} ns away (hit errors {t['sigma_max_ns']:g} ns) passing: log10 "
              f"{t['log10_pass_mixed_max']:.1f}; the mixed tracks' foreign APV hits from the own hits' time: "
              f"10/50/90 % {q[0]:.2g} / {q[1]:.2g} / {q[2]:.2g} ns, "
              f"{t.get('mixed_2plus_dt_ge_half_dt_min', 'n/a')} of {t.get('mixed_2plus_foreign_hits', 'n/a')} "
              f">= {0.5 * t['dt_min_ns']:g} ns")
    if "integrated" in e:
        print_integrated(e)
    if "pileup_truth" in e:
        p, b = e["pileup_truth"], e["pileup_truth"]["set_bound"]
        print("pile-up truth: used hits by source " + ", ".join(f"{k} {v}" for k, v in p["source_counts"].items())
              + f"; muons by pile-up hits {p['muons_by_pileup_hits']} (separate from the muon's own crossing: "
              f"{p['muons_by_separate_pileup_hits']}); with pile-up hits and an own outlier "
              f"{p['muons_with_pileup_and_own_outlier']}; their largest (kappa - kappa_true) / distance to the box "
              f"{p['largest_shift_over_room_with_pileup_hits']:.3g}")
        print(f"  measured tail (exact shifts): log10 {e['log10_p_measured']:.1f} per tracked muon (with pile-up "
              f"hits: {p['log10_measured_with_pileup_hits']:.1f}); own-outlier bound log10 "
              f"{e['own_outlier_bound_log10']:.1f}")
        print(f"  the pile-up muon's sets ({b['patterns']} patterns, {b['with_pileup_muon']} of {b['hard']} hard muons "
              f"with a kept pile-up muon): union over the sets log10 {b['log10_union_per_tracked']:.1f} per tracked "
              f"muon (without the time factor {b['log10_union_per_tracked_without_time']:.1f}); largest mean sets: "
              + ", ".join(f"{k} {v:.1f}" for k, v in list(b["log10_mean_by_set_top"].items())[:4]))
        print("  the search's choice x the largest set term, by planes with B's hits (tracked using / 90 % rate / "
              "log10 q): " + "; ".join(f"{n}: {c['tracked_using']} / {c['rate_upper_90']:.2g} / {c['log10_max_q']:.1f}"
                                      for n, c in b["choice_by_planes"].items())
              + f"; sum log10 {b['log10_choice_per_tracked']:.1f} per tracked muon (without the time factor "
              f"{b['log10_choice_per_tracked_without_time']:.1f})")
        print("  validation, looser box edges (count / estimate; with pile-up hits): " + "; ".join(
            f"{v['edge_gev']:g} GeV {v['count']} / {v['estimate']:.1f} ({v['count_with_pileup_hits']} / "
            f"{v['estimate_with_pileup_hits']:.2f})" for v in p["validation"]))
    if "per_mot_upper" in e:
        bound = e.get("per_mot_outlier_bound_adversarial", e.get("per_mot_outlier_bound", math.nan))
        print(f"{st} stratum per MOT (its sample-size bound {e.get('sample_size_upper_per_mot', float('nan')):.2g}): "
              f"10^{e['log10_per_mot']:.1f} (truth model, measured shifts); outliers integrated "
              f"{e.get('per_mot_model', e['per_mot']):.2g}, 90 % upper "
              f"{e.get('per_mot_integrated_upper_90', math.nan):.2g}"
              + (f"; counted fakes {e['per_mot_counted']:.2g}" if "per_mot_counted" in e else "") + "; adversarial "
              f"bound (outlier sets) {bound:.2g}, the count alone {e['per_mot_count_upper_90']:.2g} (90 % CL); "
              f"per_mot_upper {e['per_mot_upper']:.2g} ({e['per_mot_upper_from']}); "
              f"tail fits {', '.join(f'{k} {v:.2g}' for k, v in e['tail_fit_per_mot'].items())}")


def print_integrated(e: dict) -> None:
    """The outliers integrated (:mod:`na64reco.background.outlier_tail`): tails, terms, count check."""
    i = e["integrated"]
    planes = e["view_planes"]

    def names(code):
        return "+".join(p for j, p in enumerate(planes) if (code >> j) & 1) or "none"

    print(f"outliers integrated: tail shape chosen {i['chosen_shape']} (log-likelihood "
          + ", ".join(f"{k} {v:.1f}" for k, v in i["log_likelihood"].items())
          + f"); correlation F = {i['correlation']:.2f} (90 % upper {i['correlation_upper_90']:.2f}; "
          f"{i['two_or_more']} muons with 2+ outlier planes, {i['two_or_more_if_independent']:.1f} if independent)")
    for p, t in zip(planes, i["tails"], strict=True):
        for kind in ("far", "wrong"):
            f = t[kind]
            if f is None:
                continue
            x, y = f["exponential"], f["power_law"]
            print(f"  {p} {kind}: {t['n_wrong'] if kind == 'wrong' else t['n_outliers'] - t['n_wrong']} outliers, "
                  f"largest {t['u_max_' + kind]:.1f} sigma; tail above {x['u_t']:.2f} ({x['n_tail']}"
                  f"{'' if f['own_fit'] else ', pooled'}): exp lam {x['par']:.2f} (90 % {x['par_heavier_90']:.2f}, "
                  f"KS p {x['ks_p']:.2g}), power alpha {y['par']:.2f} (90 % {y['par_heavier_90']:.2f}, KS p "
                  f"{y['ks_p']:.2g})" + (f", bound {x['bound']:.0f} sigma" if x.get("bound") else ""))
    c, u = i["central"], i["upper"]
    print(f"  per tracked muon: central {c['p_outliers']:.3g} (by outlier planes "
          + ", ".join(f"{v:.2g}" for v in c["by_outlier_planes"][1:]) + f"); 90 % upper {u['p_outliers']:.3g} "
          f"({i['upper_shape']}; shapes allowed {', '.join(i['shapes_allowed'])}); per shape "
          + ", ".join(f"{k} {v['central']:.2g} / {v['upper']:.2g}{' (KS-rejected)' if v['rejected'] else ''}"
                      for k, v in i["per_shape"].items()))
    for t in c["largest_terms"][:5]:
        print(f"    term {t['p_per_tracked']:.2g}: outliers on {names(t['set'])}, used "
              f"{names(t['used'])}: rate {t['rate']:.2g} x P(box) {t['p_box_given_set']:.2g}")
    for row in e.get("count_check", []):
        print(f"  count check {row['box']}: counted {row['counted']}, estimated {row['estimated']:.3g} "
              f"(core {row['core']:.3g}, outliers {row['outliers']:.3g}; 90 % upper {row['upper']:.3g}); "
              f"P(>= counted) {row['p_ge']:.2g}, P(<= counted) {row['p_le']:.2g}")


if __name__ == "__main__":
    raise SystemExit(main())
