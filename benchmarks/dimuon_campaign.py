"""The dimuon (muon trident) background of NA64mu from a large forced-trident campaign.

    python benchmarks/dimuon_campaign.py [--events 1000000] [--full-events 100000] [--workers 2]
        [--seed 1] [--periods 2022,2023] [--spills-per-file 2] [--period-json docs/data] [--json OUT]

Forced tridents (``process="dimuon"``: every beam muon makes a pair with v >= 0.45, truth
weight = the probability of that per muon, :mod:`na64reco.sim.biasing`) are simulated for
each run period (2022: run 1001, 2023: run 10001) as independent spill jobs on a
``distributed.LocalCluster`` of ``--workers`` processes (:mod:`na64reco.campaign`: a job's
file depends only on (seed, run, its spills), not on the number of workers).  Each job
reduces its file on the worker and deletes it:

* **every event: the calorimeter cuts only.**  The VETO, HCAL, ECAL, VHCAL and counter cuts
  of ``na64mu_invisible`` need only :func:`na64reco.reco.calo.reconstruct_calo` (~20x
  cheaper than the tracking, the same values as the full reconstruction).  An event in the
  box passes every cut, so it passes these: the events passing all calorimeter cuts (if any)
  are then reconstructed in full, and their count with every cut and the box is the
  **direct count** over all ``--events`` forced tridents (0 -> a 90 % CL limit).
* **the first ``--full-events``: the full reconstruction**, every cut and the box per event,
  for the factorisation (:func:`na64reco.background.dimuon_estimate`): P(every cut but the
  VETO and HCAL ones, box included) from these, times P(no_veto | calorimeter rest) and
  P(hcal_mip | calorimeter rest) from all events, with the independence checks (the VETO
  and HCAL efficiencies at looser thresholds for events that pass and that fail each MS2
  cut; the HCAL one for events that pass and fail the loosened VETO cut).

Writes ``--period-json DIR/dimuon_<period>.json`` (counts only; the estimate is computed
from them by the background tables, ``benchmarks/background_tables.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from na64reco.campaign import default_spill_particles, job_path, plan_campaign

PERIOD_RUNS = {"2022": 1001, "2023": 10001}
#: The factorised groups (docs/backgrounds.md, "Dimuons"): the VETO and HCAL cuts see the two
#: extra muons as energy, the MS2 cuts as tracks and hits.
CALO_GROUP = ("no_veto", "hcal_mip")
MS2_CUTS = ("single_track_out", "no_pileup_out", "chi2_out", "track_match")
#: Loosened thresholds of the independence checks (each passes a few % to ~30 % of the tridents).
VETO_LOOSE_MEV = (28.0, 31.0)
HCAL_LOOSE_GEV = (7.0, 8.0)
CHUNK = 5000


def calo_columns(events, setup, conds, source: str) -> dict[str, np.ndarray]:
    from na64reco.reco.calo import reconstruct_calo

    cols = reconstruct_calo(events, setup, conds, source=source)
    cols["trigger"] = np.asarray(events["trigger"])
    return cols


def loose_flags(cols: dict, sel) -> dict[str, np.ndarray]:
    """The loosened VETO / HCAL cuts of the independence checks (the HCAL minimum kept)."""
    hcal = next(c for c in sel.cuts if c.name == "hcal_mip")
    e = np.asarray(cols[hcal.variable], float)
    lo_ok = np.all(np.isfinite(e) & (e >= hcal.min), axis=1)
    out = {f"veto<{v:g}MeV": np.asarray(cols["veto_energy"]) < v * 1e-3 for v in VETO_LOOSE_MEV}
    out.update({f"hcal<{h:g}GeV": lo_ok & (np.max(e, axis=1) < h) for h in HCAL_LOOSE_GEV})
    return out


def reduce_file(path: str, full: bool) -> dict:
    """Counts of one forced-trident file (see the module doc)."""
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import open_raw
    from na64reco.reco.event import reconstruct
    from na64reco.selection import load_selection
    from na64reco.selection.cuts import Columns, cut_mask, region_mask

    sel = load_selection("na64mu_invisible")
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    conds = load_conditions(setup, raw.run, None)
    n = raw.n_events
    weights = np.asarray(raw.truth(0, n)["weight"], float) if n else np.zeros(0)
    names = [c.name for c in sel.cuts]
    calo_cuts: list[str] = []
    out = {"written": n, "sumw_written": float(weights.sum()), "calo_rest": 0, "calo_cuts": None,
           "single": {c: 0 for c in CALO_GROUP}, "both": 0, "loose": {}, "loose_pairs": {},
           "direct": {"events": 0, "sumw": 0.0, "sumw2": 0.0, "after_calo_cuts": 0}, "full": None}
    full_rows = []
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        events = raw.events(start, stop)
        cols = calo_columns(events, setup, conds, path)
        C = Columns(None, cols)
        calo_cuts = [c.name for c in sel.cuts if c.variable in cols]
        m = {c.name: cut_mask(C, c) for c in sel.cuts if c.name in calo_cuts}
        rest = np.all([m[c] for c in calo_cuts if c not in CALO_GROUP], axis=0)
        out["calo_rest"] += int(rest.sum())
        for c in CALO_GROUP:
            out["single"][c] += int((rest & m[c]).sum())
        allcalo = rest & np.all([m[c] for c in CALO_GROUP], axis=0)
        out["both"] += int(allcalo.sum())
        loose = loose_flags(cols, sel)
        for k, f in loose.items():
            out["loose"][k] = out["loose"].get(k, 0) + int((rest & f).sum())
        for kv in (k for k in loose if k.startswith("veto")):
            for kh in (k for k in loose if k.startswith("hcal")):
                key = f"{kv}&{kh}"
                out["loose_pairs"][key] = out["loose_pairs"].get(key, 0) + int((rest & loose[kv] & loose[kh]).sum())
        # direct count: the events passing every calorimeter cut, reconstructed in full
        for i in np.flatnonzero(allcalo):
            e = start + int(i)
            reco = reconstruct(raw.events(e, e + 1), setup, conds, source=path)
            ok = all(bool(cut_mask(reco, c)[0]) for c in sel.cuts) and bool(region_mask(reco, sel.signal_box)[0])
            out["direct"]["after_calo_cuts"] += 1
            if ok:
                out["direct"]["events"] += 1
                out["direct"]["sumw"] += float(weights[e])
                out["direct"]["sumw2"] += float(weights[e]) ** 2
        if full:
            reco = reconstruct(events, setup, conds, source=path)
            R = Columns(reco)
            out["calo_mismatch"] = out.get("calo_mismatch", 0) + sum(
                int(np.count_nonzero(cut_mask(R, c) != m[c.name])) for c in sel.cuts if c.name in calo_cuts)
            bits = np.zeros(stop - start, np.uint32)
            for j, c in enumerate(sel.cuts):
                bits |= cut_mask(R, c).astype(np.uint32) << j
            bits |= region_mask(R, sel.signal_box).astype(np.uint32) << len(sel.cuts)
            for j, f in enumerate(loose.values()):
                bits |= f.astype(np.uint32) << (len(sel.cuts) + 1 + j)
            full_rows.append(bits)
    out["calo_cuts"] = calo_cuts
    if full:
        out["full"] = {"bits": (np.concatenate(full_rows) if full_rows else np.zeros(0, np.uint32)).tolist(),
                       "labels": [*names, "signal_box", *loose_flags_names()]}
    return out


def loose_flags_names() -> list[str]:
    return [f"veto<{v:g}MeV" for v in VETO_LOOSE_MEV] + [f"hcal<{h:g}GeV" for h in HCAL_LOOSE_GEV]


def run_job(job, seed: int, run: int, path: str, spill_particles: int, full: bool, keep: bool) -> dict:
    from na64reco.sim.generate import simulate

    t0 = time.perf_counter()
    r = simulate("na64mu", job.n_beam, seed, run, path, first_spill=job.first_spill,
                 spill_particles=spill_particles, process="dimuon")
    t1 = time.perf_counter()
    out = reduce_file(path, full)
    if not keep:
        os.remove(path)
    return {**out, "n_beam": r.n_beam, "index": job.index, "sim_s": t1 - t0, "reduce_s": time.perf_counter() - t1}


def merge(parts: list[dict]) -> dict:
    """Sum the job counts (in job order) into the period summary's counts."""
    parts = sorted(parts, key=lambda p: p["index"])
    tot = {"n_beam": 0, "written": 0, "calo_mismatch": 0, "sumw_written": 0.0, "calo_rest": 0, "both": 0,
           "single": {c: 0 for c in CALO_GROUP}, "loose": {}, "loose_pairs": {},
           "direct": {"events": 0, "sumw": 0.0, "sumw2": 0.0, "after_calo_cuts": 0}}
    bits, labels, n_full = [], None, 0
    for p in parts:
        for k in ("n_beam", "written", "sumw_written", "calo_rest", "both"):
            tot[k] += p[k]
        for k in tot["single"]:
            tot["single"][k] += p["single"][k]
        for grp in ("loose", "loose_pairs"):
            for k, v in p[grp].items():
                tot[grp][k] = tot[grp].get(k, 0) + v
        for k in tot["direct"]:
            tot["direct"][k] += p["direct"][k]
        if p["full"] is not None:
            bits += p["full"]["bits"]
            labels = p["full"]["labels"]
            n_full += p["n_beam"]
        tot["calo_cuts"] = p["calo_cuts"]
        tot["calo_mismatch"] += p.get("calo_mismatch", 0)
    tot["full"] = full_counts(np.asarray(bits, np.uint32), labels, n_full) if labels else None
    return tot


def full_counts(bits: np.ndarray, labels: list[str], n_beam: int) -> dict:
    """Counts of the fully reconstructed events: the factor P(every cut but the VETO and HCAL
    ones, box included) and the 2x2 tables of the independence checks (loosened VETO / HCAL
    cuts for the events passing / failing each MS2 cut, among those passing the calorimeter
    cuts other than the VETO and HCAL ones)."""
    flag = {lab: (bits >> np.uint32(j)) & np.uint32(1) == 1 for j, lab in enumerate(labels)}
    cuts = [lab for lab in labels if lab in flag and not lab.startswith(("veto<", "hcal<"))]
    ms2_rest = np.ones(len(bits), bool)
    for c in cuts:
        if c not in CALO_GROUP:
            ms2_rest &= flag[c]
    calo_rest = np.ones(len(bits), bool)
    for c in ("trigger", "s4_fired", "smu_fired", "ecal_mip", "no_vhcal"):
        calo_rest &= flag[c]
    checks = {}
    for a in (*MS2_CUTS, "signal_box"):
        for b in loose_flags_names():
            passed, failed = calo_rest & flag[a], calo_rest & ~flag[a]
            checks[f"{b} | {a}"] = [int((passed & flag[b]).sum()), int(passed.sum()),
                                    int((failed & flag[b]).sum()), int(failed.sum())]
    return {"n_beam": int(n_beam), "written": int(len(bits)), "all_but_calo_group": int(ms2_rest.sum()),
            "all_cuts_and_box": int((ms2_rest & flag["no_veto"] & flag["hcal_mip"]).sum()),
            "checks": checks}


def run_period(name: str, args, work: Path, client) -> dict:
    run = PERIOD_RUNS[name]
    per_spill = args.spill_particles or default_spill_particles("na64mu", run)
    plan = plan_campaign(args.events, per_spill, args.spills_per_file)
    n_full = 0
    full = []
    for job in plan.jobs:
        full.append(n_full < args.full_events)
        n_full += job.n_beam if full[-1] else 0
    outdir = work / name
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [str(job_path(outdir, f"dimuon_run{run}_seed{args.seed}", j)) for j in plan.jobs]
    t0 = time.perf_counter()
    futures = client.map(run_job, plan.jobs, [args.seed] * len(paths), [run] * len(paths), paths,
                         [per_spill] * len(paths), full, [args.keep] * len(paths), pure=False)
    parts = client.gather(futures)
    wall = time.perf_counter() - t0
    tot = merge(parts)
    if tot["calo_mismatch"]:
        raise SystemExit(f"period {name}: the calorimeter-only cuts differ from the full reconstruction's on "
                         f"{tot['calo_mismatch']} event-cuts: the direct count's pre-selection is not exact")
    if tot["n_beam"] != args.events:
        raise SystemExit(f"period {name}: forced tridents do not close: {tot['n_beam']} simulated, {args.events} asked")
    from na64reco.geometry import load_setup
    from na64reco.sim.biasing import species_per_mot

    return {"period": name, "run": run, "seed": args.seed, "process": "dimuon",
            "species_per_mot": species_per_mot(load_setup("na64mu", run=run), "dimuon"),
            "mean_weight": tot["sumw_written"] / tot["written"] if tot["written"] else None,
            "files": len(paths), "wall_s": wall, "sim_cpu_s": sum(p["sim_s"] for p in parts),
            "reduce_cpu_s": sum(p["reduce_s"] for p in parts), **tot,
            "command": " ".join(["python benchmarks/dimuon_campaign.py", f"--periods {name}",
                                 f"--events {args.events}", f"--full-events {args.full_events}",
                                 f"--seed {args.seed}", f"--spills-per-file {args.spills_per_file}"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="forced tridents per period")
    ap.add_argument("--full-events", type=int, default=100_000,
                    help="of which the first ~this many are fully reconstructed (factorisation)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--periods", default="2022,2023")
    ap.add_argument("--spill-particles", type=int, default=None)
    ap.add_argument("--spills-per-file", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the simulated files (in --workdir)")
    ap.add_argument("--json", type=Path, default=None, help="all period summaries in one file")
    ap.add_argument("--period-json", type=Path, default=None, help="write DIR/dimuon_<period>.json")
    args = ap.parse_args(argv)
    from distributed import Client

    from na64reco import background as bg
    from na64reco.runner import local_cluster

    rows = []
    with tempfile.TemporaryDirectory(prefix="dimuon-") as tmp, local_cluster(args.workers) as cluster, \
            Client(cluster) as client:
        work = args.workdir or Path(tmp)
        for p in args.periods.split(","):
            row = run_period(p, args, work, client)
            rows.append(row)
            est = bg.dimuon_estimate(row)
            print(f"{p}: {row['n_beam']} forced tridents, {row['written']} written, {row['wall_s']:.0f} s wall "
                  f"(sim {row['sim_cpu_s']:.0f} s, reduce {row['reduce_cpu_s']:.0f} s CPU)")
            print(json.dumps({k: v for k, v in est.items() if k != "checks"}, indent=1, default=float))
            for k, v in est["checks"].items():
                print(f"  {k}: {v}")
            if args.period_json:
                args.period_json.mkdir(parents=True, exist_ok=True)
                (args.period_json / f"dimuon_{p}.json").write_text(json.dumps(row, indent=1, default=float) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
