"""Tracking efficiency and fake-momentum rate of 160 GeV beam muons vs plane efficiency and noise.

    python benchmarks/tracking_fakes_scan.py [--events 20000] [--workdir DIR] [--json OUT.json]

For each setting (plane efficiency of every tracker plane, tracker noise clusters per plane
and event as a multiple of the setup's) of the 2022-like NA64mu layout, and for the
2023-like period as configured, it simulates ``--events`` beam muons with the calibration
trigger (beam counters only: unscattered muons are written) and reconstructs the tracks.
Among the muons with true p_out > 100 GeV it reports the tracking efficiency (p_out
reconstructed; and with track_match_chi2 < 20, the efficiency the selection sees) and the
fake-momentum rate: reconstructed p_out < 80 GeV, at tracking level
and after the outgoing/incoming track match cut of the selection (track_match_chi2 < 20).
Zero counts: 90 % CL upper limit 2.3 / N.

Simulated files are kept in ``--workdir`` and reused, so the same files can be
reconstructed by another checkout for a before/after comparison (run this script with
PYTHONPATH pointing at it; the 2023 layout needs the run-period setup and is skipped by
checkouts without it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.sim.generate import simulate

SETTINGS = [(0.90, 1.0), (0.97, 1.0), (0.90, 3.0), (0.97, 3.0)]  # (plane efficiency, noise multiplier)


def with_planes(setup, efficiency: float, noise: float):
    planes = tuple(dataclasses.replace(p, efficiency=efficiency, noise_hits=p.noise_hits * noise)
                   for p in setup.planes)
    return dataclasses.replace(setup, planes=planes)


def rate(k, n):
    return f"< {2.3 / n:.1e}" if k == 0 else f"{k / n:.1e} +- {math.sqrt(k) / n:.0e}"


def measure(setup, run: int, path: Path, n: int, seed: int) -> dict:
    if not path.exists():
        simulate(setup, n, seed, run, path, process="beam", trigger="calibration")
    raw = open_raw(path)
    out = reconstruct_tracks(raw.events(), setup, load_conditions(setup, run))
    tp = np.asarray(raw.truth()["p_out"])
    hard = tp > 100
    po, match = out["p_out"], out["track_match_chi2"]
    fake = hard & (po < 80)
    return {"n_hard": int(hard.sum()), "eff": float(np.mean(np.isfinite(po[hard]))),
            "eff_match": float(np.mean(match[hard] < 20)),
            "fake": int(fake.sum()), "fake_match": int(np.sum(fake & (match < 20)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = load_setup("na64mu")
        for eff, noise in SETTINGS:
            r = measure(with_planes(base, eff, noise), 1, work / f"beam_eff{eff:g}_noise{noise:g}.root",
                        args.events, args.seed)
            rows.append({"layout": "2022", "efficiency": eff, "noise": noise, **r})
        try:
            s23 = load_setup("na64mu", run=10000)
        except TypeError:
            s23 = None
        if s23 is not None and s23.period:
            r = measure(s23, 10000, work / "beam_2023.root", args.events, args.seed)
            rows.append({"layout": "2023", "efficiency": "as set", "noise": 1.0, **r})
    print(f"{'layout':>6} {'plane_eff':>9} {'noise':>5} {'N(p>100)':>8} {'track_eff':>9} "
          f"{'eff&match<20':>12} {'fake(p<80)':>16} {'fake & match<20':>16}")
    for r in rows:
        print(f"{r['layout']:>6} {r['efficiency']!s:>9} {r['noise']:>5g} {r['n_hard']:>8} {r['eff']:>9.4f} "
              f"{r['eff_match']:>12.4f} "
              f"{rate(r['fake'], r['n_hard']):>16} {rate(r['fake_match'], r['n_hard']):>16}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
