"""Trigger rate, signal trigger efficiency and momentum mis-reconstruction of NA64mu, per run period.

    python benchmarks/trigger_and_fakes.py [--mot 100000] [--beam 20000] [--signal 3000]
                                           [--seed 1] [--workdir DIR] [--json OUT.json]

For every run period of ``calib/setups/na64mu.yaml`` (one run of each; the base description
if the file has no periods) it simulates and reconstructs:

1. ``--mot`` MOT of the beam mixture with the physics trigger (S0 x S1 x Smu x S4 x !V1):
   trigger rate per MOT, split by truth process and, for beam muons, by the true p_out
   (below / above ``p_split`` = the S4 edge momentum + 15 GeV: radiative losses in the
   target vs the tail of unscattered muons reaching the counters); then the NA64mu
   selection (``selections/na64mu_invisible.yaml``, all cuts and the signal box p_out < 80
   GeV): box events per MOT, split into true p_out < 80 GeV (physics, e.g. a hard loss
   with no visible deposit) and true p_out > 100 GeV (momentum mis-reconstruction).
2. ``--beam`` beam muons (``process=beam``) with the calibration trigger (beam counters
   only, so unscattered muons are written): the tracking efficiency (p_out reconstructed)
   and the fake-momentum rate, i.e. the fraction of muons with true p_out > 100 GeV
   reconstructed with p_out < 80 GeV, (a) at tracking level and (b) after every NA64mu cut
   except the trigger and the S4/Smu cuts (the quantity the background study extrapolates).
3. ``--signal`` Z' signal events at 1, 10, 100, 1000 MeV: the trigger efficiency (written /
   simulated) and the trigger efficiency of the events inside the box x > 0.5
   (written with true x > 0.5 over N x IWW fraction of sigma with x > 0.5).

MC counts are per simulated beam particle; errors binomial (zero counts: 90 % CL upper
limit 2.3 / N).  Runs against whatever ``na64reco`` is on PYTHONPATH, so the same command
measures an older checkout ("before").  Prints a table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import hepunits as u
import numpy as np

from na64reco.conditions import load_conditions
from na64reco.efficiency import x_acceptance
from na64reco.export import iterate_reco
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.selection import cut_masks, load_selection, region_mask
from na64reco.sim.generate import simulate
from na64reco.stats.limits import ZERO_OBSERVED_UL90 as UL0

MASSES_GEV = (0.001, 0.01, 0.1, 1.0)
NAMES = {v: k for k, v in PROCESSES.items()}


def periods():
    """(name, run) of every period of the na64mu setup file."""
    try:
        from na64reco.geometry import list_periods
    except ImportError:  # older checkouts: no periods
        return [("base", 1)]
    found = list_periods("na64mu")
    return [(p.name, p.first) for p in found] or [("base", 1)]


def rate(k: int, n: int) -> str:
    if k == 0:
        return f"< {UL0 / n:.1e} (90% CL)"
    return f"{k / n:.2e} +- {math.sqrt(k) / n:.1e}"


def reco_with_truth(path: Path):
    """Concatenated reco records with ``truth_*`` fields of a simulated file."""
    import awkward as ak

    parts = [r for r, _, _ in iterate_reco(path, with_truth=True)]
    return ak.concatenate(parts) if parts else None


def selected(reco, skip=()):
    """(all cuts except ``skip`` passed, box) masks of the NA64mu selection."""
    sel = load_selection("na64mu_invisible")
    masks = cut_masks(reco, sel)
    ok = np.ones(len(reco), bool)
    for name, m in masks.items():
        if name not in skip:
            ok &= np.asarray(m)
    return ok, np.asarray(region_mask(reco, sel.signal_box))


def measure_period(name: str, run: int, args, work: Path) -> dict:
    setup = load_setup("na64mu", run=run)
    load_conditions(setup, run)  # fail early if the period has no conditions
    out: dict = {"period": name, "run": run}
    s4 = setup.detector("S4")
    edge = getattr(s4, "edge_momentum", 0.0) / u.GeV
    p_split = edge + 15.0 if edge else 100.0
    out["s4_edge_momentum_gev"] = edge

    # 1. beam mixture, physics trigger
    mix = work / f"mix_{name}.root"
    res = simulate(setup, args.mot, args.seed, run, mix, process="mixture")
    out["mot"] = args.mot
    out["triggered"] = res.n_written
    truth = open_raw(mix).truth()
    proc = np.asarray(truth["process"])
    p_out = np.asarray(truth["p_out"])
    by = {}
    for code in np.unique(proc):
        m = proc == code
        if NAMES[int(code)] in ("beam", "pileup"):
            by[f"{NAMES[int(code)]} p_out<{p_split:g}"] = int(np.sum(m & (p_out < p_split)))
            by[f"{NAMES[int(code)]} p_out>={p_split:g}"] = int(np.sum(m & ~(p_out < p_split)))
        else:
            by[NAMES[int(code)]] = int(m.sum())
    out["trigger_by_cause"] = by
    reco = reco_with_truth(mix)
    if reco is not None and len(reco):
        ok, box = selected(reco)
        tp = np.asarray(reco["truth_p_out"])
        out["box"] = int(np.sum(ok & box))
        out["box_true_low"] = int(np.sum(ok & box & (tp < 80)))
        out["box_misreco"] = int(np.sum(ok & box & (tp > 100)))
        out["all_cuts"] = int(np.sum(ok))
    else:
        out.update(box=0, box_true_low=0, box_misreco=0, all_cuts=0)

    # 2. unscattered beam muons (calibration trigger): tracking efficiency and fake rate
    beam = work / f"beam_{name}.root"
    simulate(setup, args.beam, args.seed + 1, run, beam, process="beam", trigger="calibration")
    reco = reco_with_truth(beam)
    tp = np.asarray(reco["truth_p_out"])
    po = np.asarray(reco["p_out"], dtype=float)
    hard = tp > 100
    ok, _ = selected(reco, skip=("trigger", "s4_fired", "smu_fired"))
    out["beam_written"] = len(reco)
    out["beam_hard"] = int(hard.sum())
    out["tracking_eff"] = float(np.mean(np.isfinite(po[hard])))
    out["fake_tracking"] = int(np.sum(hard & (po < 80)))
    out["fake_after_cuts"] = int(np.sum(hard & ok & (po < 80)))
    out["beam_after_cuts"] = int(np.sum(hard & ok))

    # 3. signal trigger efficiency vs mass
    sig = []
    for m in MASSES_GEV:
        path = work / f"sig_{name}_{m:g}.root"
        r = simulate(setup, args.signal, args.seed + 2, run, path, process="signal", mass=m * u.GeV)
        x = np.asarray(open_raw(path).truth()["x"])
        acc = x_acceptance("na64mu", m * u.GeV)
        sig.append({"mass_gev": m, "trigger_eff": r.n_written / args.signal,
                    "trigger_eff_box": float(np.sum(x > 0.5) / (args.signal * acc)) if acc > 0 else math.nan,
                    "acceptance_x_gt_0.5": acc})
    out["signal"] = sig
    return out


def report(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        n = r["mot"]
        lines += [f"== period {r['period']} (run {r['run']}), "
                  f"S4/Smu edge momentum {r['s4_edge_momentum_gev']:g} GeV",
                  f"trigger rate per MOT (mixture, {n} MOT): {rate(r['triggered'], n)}"]
        for k, v in r["trigger_by_cause"].items():
            lines.append(f"    {k:<22} {rate(v, n)}")
        lines += [f"after all NA64mu cuts: {r['all_cuts']} events; in the box p_out < 80 GeV: {r['box']} "
                  f"(true p_out < 80: {r['box_true_low']}, true > 100 = mis-reconstruction: {r['box_misreco']})",
                  f"    mis-reconstruction per MOT: {rate(r['box_misreco'], n)}",
                  f"beam muons (calibration trigger, {r['beam_written']} written, {r['beam_hard']} with true p_out > "
                  f"100 GeV): tracking efficiency {r['tracking_eff']:.3f}",
                  f"    reco p_out < 80 GeV: tracking level {rate(r['fake_tracking'], r['beam_hard'])}; after the "
                  f"cuts except trigger/S4/Smu ({r['beam_after_cuts']} pass) "
                  f"{rate(r['fake_after_cuts'], r['beam_hard'])}",
                  "signal: mass_GeV  trigger_eff  trigger_eff(x>0.5)  IWW acc(x>0.5)"]
        for s in r["signal"]:
            lines.append(f"        {s['mass_gev']:8g}  {s['trigger_eff']:11.3f}  {s['trigger_eff_box']:18.3f}"
                         f"  {s['acceptance_x_gt_0.5']:14.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mot", type=int, default=100_000)
    ap.add_argument("--beam", type=int, default=20_000)
    ap.add_argument("--signal", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the simulated files here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [measure_period(name, run, args, work) for name, run in periods()]
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
