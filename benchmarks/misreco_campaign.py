"""Momentum mis-reconstruction background of NA64mu from an at-scale beam-muon campaign.

    python benchmarks/misreco_campaign.py [--mot 1000000] [--workers 2] [--seed 1]
        [--spills-per-file 20] [--periods 2022,2023] [--sidebands 80:120,80:144] [--workdir DIR]
        [--json OUT.json] [--period-json docs/data] [--plot docs/images/misreco_tail.png]
        [--kinks docs/data/single_scatter.json]

For each run period (2022: run 1, 2023: run 10001 of ``calib/setups/na64mu.yaml``):

1. ``--mot`` beam muons (``process=beam``, the physics trigger S0 x S1 x Smu x S4 x !V1:
   only what the experiment writes) simulated as independent spill jobs on a
   ``distributed.LocalCluster`` of ``--workers`` processes (:mod:`na64reco.campaign`;
   the files do not depend on the number of workers);
2. the ``na64mu_invisible`` processor over the files (:func:`na64reco.runner.run_files`,
   dask executor, same cluster); the MOT is the processor's exposure (sum of the spill
   ``n_beam``), checked against the campaign's;
3. the N-1 histogram of the signal box (p_out of the events passing every other cut)
   is fitted in each sideband of ``--sidebands`` (the first that has enough events is
   the one plotted) with the extended-likelihood tail fit of
   :func:`na64reco.background.misreconstruction_background` (exponential, power law as
   the shape systematic) and extrapolated into the box p_out < 80 GeV; per MOT and for
   1.98e10 MOT (the 2022 exposure), beside the MC count in the box (a measurement if > 0,
   else a 90 % CL upper limit 2.3 / MOT);
4. (truth, a second reconstruction pass on the cluster) the true p_out of the events
   after all cuts with reco p_out below ``TAIL_GEV``: in the box, how many are momentum
   mis-reconstruction (true p_out > 100 GeV) and how many real losses (true p_out < 80).

Prints a table, writes ``--json`` (all rows), ``--period-json DIR`` (``DIR/misreco_<period>.json``
per period: the figures the background tables read, :func:`period_summary`) and the tail plot
``--plot`` (per MOT, log y, fit and extrapolation, both periods).  ``--kinks`` adds to the plot
the p_out spectrum, after all other cuts and per MOT, of the single large-angle scatters in MS2
(the forced kinks of ``benchmarks/single_scatter.py``): the mechanism the Gaussian scattering of
the campaign does not contain, and the one that reaches the box.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from na64reco.background.estimates import MISRECO_FIT_ONLY_KEYS, fit_tail, misreconstruction_background
from na64reco.campaign import (
    CampaignResult,
    campaign_exposure,
    default_spill_particles,
    job_path,
    plan_campaign,
    simulate_campaign,
)
from na64reco.errors import NA64Error
from na64reco.geometry import load_setup
from na64reco.runner import RunOptions, local_cluster, run_files
from na64reco.selection import load_selection
from na64reco.stats.limits import ZERO_OBSERVED_UL90 as UL0
from na64reco.units import GeV

PERIOD_RUNS = {"2022": 1, "2023": 10001}
EXPOSURE_2022 = 1.98e10  # MOT of the 2022 NA64mu run (seed 001)
_BOX = load_selection("na64mu_invisible").signal_box
BOX = (_BOX.min, _BOX.max)  # GeV, the selection's signal box on p_out
PEAK = load_setup("na64mu").beam.energy / GeV  # the beam momentum, where the p_out peak sits
TAIL_GEV = 144.0
MISRECO_BELOW = 120.0  # GeV: reco p_out below the reach of the beam core (~6 sigma); with true p_out > 100: a fake
Y_MIN = 1e-16  # per MOT per bin: low enough to show the extrapolations into the box


def tail_truth(path: str) -> list[tuple[float, float]]:
    """(reco p_out, true p_out) of the events of ``path`` passing every cut (the box aside)
    with reco p_out < TAIL_GEV."""
    from na64reco.export import iterate_reco
    from na64reco.selection import cut_masks

    sel = load_selection("na64mu_invisible")
    out = []
    for reco, _, _ in iterate_reco(path, with_truth=True):
        ok = np.ones(len(reco), bool)
        for m in cut_masks(reco, sel).values():
            ok &= np.asarray(m)
        po, tp = np.asarray(reco["p_out"], dtype=float), np.asarray(reco["truth_p_out"], dtype=float)
        keep = ok & (po < TAIL_GEV)
        out += list(zip(po[keep].tolist(), tp[keep].tolist(), strict=True))
    return out


def reuse_files(plan, seed: int, run: int, outdir: Path) -> CampaignResult | None:
    """The campaign files of an earlier run in ``outdir`` (same plan and seed), or None if any
    is missing (--reuse: reconstruct again without simulating; simulation times are then 0)."""
    from na64reco.io.raw import open_raw

    paths = [str(job_path(outdir, f"na64mu_run{run}_seed{seed}", j)) for j in plan.jobs]
    if not all(Path(p).exists() for p in paths):
        return None
    n_beam, n_spills = campaign_exposure(paths)
    written = sum(int(open_raw(p).meta["entries"]["events"]) for p in paths)
    return CampaignResult(paths, n_beam, written, n_spills, 0.0, 0.0)


def run_period(name: str, args, work: Path, client) -> dict:
    run = PERIOD_RUNS[name]
    per_spill = args.spill_particles or default_spill_particles("na64mu", run)
    plan = plan_campaign(args.mot, per_spill, args.spills_per_file)
    outdir = work / name
    outdir.mkdir(parents=True, exist_ok=True)
    sim = reuse_files(plan, args.seed, run, outdir) if args.reuse else None
    if sim is None:
        sim = simulate_campaign("na64mu", plan, seed=args.seed, run=run, outdir=outdir, client=client,
                                process="beam", trigger="physics")
    t0 = time.perf_counter()
    out = run_files({name: sim.files}, RunOptions("na64mu_invisible", executor="dask", client=client))[name]
    reco_s = time.perf_counter() - t0
    mot = int(out["provenance"].n_beam)
    summed, n_spills = campaign_exposure(sim.files)
    if not mot == summed == args.mot:
        raise NA64Error(f"period {name}: MOT bookkeeping does not close: processor {mot}, spill tables "
                        f"{summed}, asked {args.mot}")
    h = out["nminus1"]["signal_box"]
    counts, edges = h.values(), h.axes[0].edges
    in_box = int(round(counts[edges[1:] <= BOX[1]].sum()))
    row = {"period": name, "run": run, "mot": mot, "spills": n_spills, "files": len(sim.files),
           "written": sim.n_written, "sim_wall_s": sim.seconds, "sim_cpu_s": sim.cpu_seconds, "reco_wall_s": reco_s,
           "after_cuts_but_box": int(round(counts.sum())), "box_mc": in_box,
           "counts": counts.tolist(), "edges": edges.tolist(), "fits": []}
    for sb in args.sidebands:
        try:
            comp = misreconstruction_background(counts=counts, edges=edges, sideband=sb, box=BOX, peak=PEAK)
            row["fits"].append({"sideband": list(sb), "n": comp.n, "error": comp.error, **comp.details})
        except NA64Error as exc:
            row["fits"].append({"sideband": list(sb), "n": None, "message": str(exc)})
    if args.truth:
        t0 = time.perf_counter()
        pairs = [p for part in client.gather(client.map(tail_truth, sim.files, pure=False)) for p in part]
        row["truth_s"] = time.perf_counter() - t0
        row["tail_pairs"] = pairs
        box = [t for r, t in pairs if r < BOX[1]]
        row["box_true"] = {"true<80": sum(t < 80 for t in box), "80-100": sum(80 <= t <= 100 for t in box),
                           "true>100 (misreco)": sum(t > 100 for t in box), "none": sum(not t == t for t in box)}
    return row


def period_summary(row: dict) -> dict:
    """The per-period figures other tools read: ``period``, ``mot``, ``box_count`` (MC count in
    the box after all cuts), ``per_mot`` and ``per_mot_err`` (a measurement; None with no event)
    or ``per_mot_upper_limit`` (90 % CL, 2.3 / MOT, with no event), and the tail-fit
    extrapolation into the box ``extrapolated_per_mot`` +- ``extrapolated_err`` (1 sigma: stat.
    and shape in quadrature; the first sideband whose fit converged, ``extrapolated_sideband``;
    None if none did) with its one-sided 90 % CL upper bound ``extrapolated_upper_90``
    (central + 1.2816 sigma, covered on toys: tests/test_background.py)."""
    n, k = row["mot"], row["box_mc"]
    out = {"period": row["period"], "run": row["run"], "mot": n, "box_count": k,
           "per_mot": k / n if k else None, "per_mot_err": math.sqrt(k) / n if k else None,
           "per_mot_upper_limit": None if k else UL0 / n, "upper_limit_cl": 0.9,
           "after_cuts_but_box": row["after_cuts_but_box"], "written": row["written"],
           "extrapolated_per_mot": None, "extrapolated_err": None, "extrapolated_upper_90": None,
           "extrapolated_sideband": None, "box_true": row.get("box_true")}
    good = [f for f in row["fits"] if f["n"] is not None]
    if good:
        f = good[0]
        out.update({"extrapolated_per_mot": f["n"] / n, "extrapolated_err": f["error"] / n,
                    "extrapolated_upper_90": (f["n"] + 1.2816 * f["error"]) / n,
                    "extrapolated_sideband": f["sideband"], "extrapolated_stat_err": f["stat_error"] / n,
                    "extrapolated_shape_syst": f["shape_syst"] / n, "tail_model": f["model"],
                    "alternative_per_mot": f["n_alternative"] / n})
        assert set(MISRECO_FIT_ONLY_KEYS) <= set(out)
    return out


def per_mot(k: float, n: int) -> str:
    return f"{k / n:.2e} +- {math.sqrt(k) / n:.1e}" if k else f"< {UL0 / n:.1e} (90% CL, 0 events)"


def report(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        n = r["mot"]
        lines += [f"== period {r['period']} (run {r['run']}): {n:.3g} MOT in {r['spills']} spills, {r['files']} files; "
                  f"written {r['written']} ({r['written'] / n:.2e} per MOT)",
                  f"   simulation {r['sim_wall_s']:.0f} s wall ({r['sim_cpu_s']:.0f} s CPU in the jobs), "
                  f"reconstruction + selection {r['reco_wall_s']:.0f} s wall",
                  f"   after all cuts but the box: {r['after_cuts_but_box']} "
                  f"({r['after_cuts_but_box'] / n:.2e} per MOT)",
                  f"   in the box (MC count): {r['box_mc']} -> per MOT {per_mot(r['box_mc'], n)}; "
                  f"x 1.98e10 MOT: {r['box_mc'] / n * EXPOSURE_2022:.3g}"
                  + ("" if r["box_mc"] else f" (< {UL0 / n * EXPOSURE_2022:.3g})")]
        if "box_true" in r:
            lines.append(f"   box events by true p_out: {r['box_true']} (truth pass {r['truth_s']:.0f} s)")
        for f in r["fits"]:
            sb = f"{f['sideband'][0]:g}-{f['sideband'][1]:g} GeV"
            if f["n"] is None:
                lines.append(f"   tail fit in {sb}: {f['message']}")
                continue
            lines += [f"   tail fit in {sb}: {f['n_sideband']} events, exponential slope {f['theta']:.3f} +- "
                      f"{f['theta_error']:.3f} /GeV; box: {f['n']:.3g} +- {f['error']:.2g} events (stat "
                      f"{f['stat_error']:.2g}, shape syst {f['shape_syst']:.2g}, power law {f['n_alternative']:.3g})",
                      f"      per MOT: {f['n'] / n:.2e} +- {f['error'] / n:.1e}; x 1.98e10 MOT: "
                      f"{f['n'] / n * EXPOSURE_2022:.3g} +- {f['error'] / n * EXPOSURE_2022:.2g} events "
                      "(published: 0.05 +- 0.03 in 2022; ~5e-13 per MOT goal)"]
    return "\n".join(lines)


def kink_spectra(path: Path) -> dict:
    """Per period: (edges GeV, events per MOT per 2 GeV, per MOT in the box) of the forced kinks
    after every cut but the box (``benchmarks/single_scatter.py --json``: counts x weight / muons)."""
    data = json.loads(Path(path).read_text())
    out = {}
    for period, f in (data.get("forced") or {}).items():
        try:
            edges = np.asarray(f["p_out_edges_gev"], float)
            scale = float(f["weight"]) / float(f["muons"])
            per_bin = np.asarray(f["p_out_counts"], float) * scale * 2.0 / np.diff(edges)
            edge = f"{BOX[1]:.1f}"  # the selection's box edge, a key of the summary
            out[period] = (edges, per_bin, float(f["per_mot"][edge]), int(f["box"][edge]))
        except (KeyError, TypeError, ValueError) as exc:
            raise NA64Error(f"{path}: forced.{period}: expected p_out_edges_gev, p_out_counts, weight, muons "
                            f"and the box at {BOX[1]:g} GeV ({exc!r})") from None
    return out


def plot(rows: list[dict], path: Path, scan: dict | None = None, kinks: dict | None = None) -> None:
    from scipy.stats import chi2

    from na64reco.plotting import _legend, exp_label, na64_style, new_figure

    colors = {"2022": "tab:blue", "2023": "tab:red"}
    with na64_style():
        fig = new_figure(figsize=(10, 11), margins={"left": 0.13, "right": 0.97, "top": 0.95, "bottom": 0.33})
        ax = fig.subplots()
        lowest, fits = [], []
        for r in rows:
            n, c = r["mot"], colors.get(r["period"], "k")
            counts, edges = np.asarray(r["counts"]), np.asarray(r["edges"])
            centers = 0.5 * (edges[1:] + edges[:-1])
            ok = counts > 0
            k_ok = counts[ok]
            yerr = np.array([k_ok - chi2.ppf(0.1587, 2 * k_ok) / 2, chi2.ppf(0.8413, 2 * k_ok + 2) / 2 - k_ok]) / n
            ax.errorbar(centers[ok], counts[ok] / n, yerr=yerr, xerr=np.diff(edges)[ok] / 2,
                        fmt="o", ms=4, color=c, label=f"{r['period']}: beam muons, {n:.2g} MOT")
            lowest.append(0.2 / n)
            mis = np.asarray([rp for rp, tp in r.get("tail_pairs", []) if tp > 100 and rp < MISRECO_BELOW],
                             dtype=float)
            if mis.size:
                k, _ = np.histogram(mis, edges)
                sel = k > 0
                ax.plot(centers[sel], k[sel] / n, "x", ms=9, mew=2, color=c,
                        label=f"{r['period']}: mis-reconstructed (true > 100 GeV, reco < {MISRECO_BELOW:g} GeV)")
            if kinks and r["period"] in kinks:
                k_edges, k_rate, _, _ = kinks[r["period"]]
                ax.stairs(np.where(k_rate > 0, k_rate, np.nan), k_edges, color=c, lw=2, ls="-.",
                          label=f"{r['period']}: single large-angle scattering in MS2 (forced kinks)")
                lowest.append(float(k_rate[k_rate > 0].min()) / 3 if (k_rate > 0).any() else Y_MIN)
            good = [f for f in r["fits"] if f["n"] is not None]
            if not good:
                continue
            best = good[0]
            for model, style in (("exponential", "-"), ("power_law", ":")):
                fit = fit_tail(counts=counts, edges=edges, fit_range=tuple(best["sideband"]), model=model, peak=PEAK)
                lo, hi = fit.fit_range
                width = float(edges[1] - edges[0])
                norm = fit.nu / fit.model.integral(lo, hi, fit.theta) * width / n  # per MOT per bin
                for xs, ls, lab in ((np.linspace(lo, hi, 100), style, f"{model.replace('_', ' ')} fit"),
                                    (np.linspace(0.0, lo, 100), "--" if model == "exponential" else (0, (1, 3)),
                                     None)):
                    ax.plot(xs, norm * np.exp(fit.model.log_shape(xs, fit.theta)), ls=ls, color=c, lw=2,
                            label=f"{r['period']}: {lab}" if lab else None)
            fits.append((c, f"{r['period']}: fit {best['sideband'][0]:g}-{best['sideband'][1]:g} GeV, box "
                            f"{best['n'] / n:.1e} $\\pm$ {best['error'] / n:.0e} / MOT"))
        notes = list(fits)
        for r in rows:
            n = r["mot"]
            rate = f" = {r['box_mc'] / n:.1e} / MOT" if r["box_mc"] else f", < {UL0 / n:.1e} / MOT (90% CL)"
            notes.append((colors.get(r["period"], "k"), f"{r['period']}: box count {r['box_mc']} in {n:.0e} MOT{rate}"))
            fit = (scan or {}).get(r["period"])
            if fit and "per_mot" in fit:
                lo, hi = fit["per_mot_1sigma"]
                notes.append((colors.get(r["period"], "k"),
                              f"{r['period']}: noise-scaled fake kicks {fit['per_mot']:.0e} / MOT ({lo:.0e}-{hi:.0e})"))
        for period, (_, _, box, count) in (kinks or {}).items():
            notes.append((colors.get(period, "k"),
                          f"{period}: kinks in the box {box:.1e} / MOT ({count} forced; {box * EXPOSURE_2022:.2g} "
                          "in 1.98e10 MOT)"))
        notes.append(("k", "published 2022: 2.5e-12 / MOT (0.05 in 1.98e10 MOT)"))
        notes.append(("k", "2023 goal: < 5e-13 / MOT"))
        for i, (c, text) in enumerate(notes):  # below the axes: the curves fill the frame
            fig.text(0.04, 0.24 - 0.024 * i, text, color=c, fontsize="x-small", ha="left")
        ax.axvspan(0, BOX[1], color="0.9", zorder=0, label="signal box (extrapolated)")
        ax.set_yscale("log")
        ax.set_xlim(0, 200)
        ax.set_ylim(min(lowest + [Y_MIN]), 1e-1)
        ax.set_xlabel(r"$p_{out}$ [GeV]")
        ax.set_ylabel("events per MOT / 2 GeV")
        _legend(ax, loc="upper left", fontsize="xx-small")
        exp_label(ax, data=False, rlabel="N-1 of the box: all other cuts")
        fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mot", type=int, default=1_000_000, help="MOT per period")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spills-per-file", type=int, default=20)
    ap.add_argument("--spill-particles", type=int, default=None)
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--sidebands", default="80:120,80:144",
                    help="comma-separated lo:hi fit ranges in GeV; the first that converges is plotted")
    ap.add_argument("--no-truth", dest="truth", action="store_false",
                    help="skip the truth breakdown of the tail (a second reconstruction pass)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the simulated files here")
    ap.add_argument("--reuse", action="store_true",
                    help="reconstruct the files already in --workdir (same --mot/--seed) instead of simulating")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--period-json", type=Path, default=None, help="write DIR/misreco_<period>.json per period")
    ap.add_argument("--noise-scan", type=Path, default=None,
                    help="JSON of benchmarks/tracking_fakes_scan.py: its box estimate per MOT joins the outputs")
    ap.add_argument("--kinks", type=Path, default=None,
                    help="JSON of benchmarks/single_scatter.py: its forced kinks' p_out spectrum joins the plot")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="no simulation: report and plot the rows of an earlier --json")
    args = ap.parse_args(argv)
    args.sidebands = [tuple(float(x) for x in sb.split(":")) for sb in args.sidebands.split(",")]
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        print(report(rows))
        write_outputs(rows, args)
        return 0
    from distributed import Client

    with tempfile.TemporaryDirectory() as tmp, local_cluster(args.workers) as cluster, Client(cluster) as client:
        work = args.workdir or Path(tmp)
        rows = [run_period(p, args, work, client) for p in args.periods.split(",")]
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    write_outputs(rows, args)
    return 0


def noise_scaled(rows: list[dict], scaling: dict) -> dict:
    """Per period, the fake-kick rate per MOT in the box from the noise scan
    (benchmarks/tracking_fakes_scan.py: fakes per muon tracked with the tracking cuts at nominal
    noise, f1, with its log-normal 1 sigma) times this campaign's events after all cuts but the
    box per MOT."""
    out = {}
    for r in rows:
        fit = scaling.get(r["period"])
        if not fit:
            continue
        kept = r["after_cuts_but_box"] / r["mot"]
        band = [fit["f1"] * math.exp(s * fit["f1_ln_error"]) * kept for s in (-1, 1)]
        out[r["period"]] = {**fit, "per_mot": fit["f1"] * kept, "per_mot_1sigma": band}
    return out


def write_outputs(rows: list[dict], args) -> None:
    scan = noise_scaled(rows, json.loads(args.noise_scan.read_text())["noise_scaling"]) if args.noise_scan else {}
    if args.period_json:
        args.period_json.mkdir(parents=True, exist_ok=True)
        for r in rows:
            summary = period_summary(r)
            fit = scan.get(r["period"])
            if fit and "per_mot" in fit:  # benchmarks/tracking_fakes_scan.py: noise-enhanced samples
                summary.update({"noise_scaled_per_mot": fit["per_mot"], "noise_scaled_1sigma": fit["per_mot_1sigma"],
                                "noise_scaling_exponent": [fit["exponent"], fit["exponent_error"]]})
            (args.period_json / f"misreco_{r['period']}.json").write_text(
                json.dumps(summary, indent=1, default=float) + "\n")
    if args.plot:
        plot(rows, args.plot, scan, kink_spectra(args.kinks) if args.kinks else None)


if __name__ == "__main__":
    raise SystemExit(main())
