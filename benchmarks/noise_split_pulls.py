"""Pull distribution of the tracker noise split over independent simulated beam runs.

    python benchmarks/noise_split_pulls.py [--seeds 5] [--events 20000] [--first-seed 100]

Each seed: a beam run of the nominal NA64mu setup (run 700: 2022 period, beam pile-up on,
noise_hits 0.03 / 0.02 / 0.03 for MM / GEM / straw), every muon written (calibration
trigger); the views reconstructed with the nominal conditions and the off-track clusters
split (:mod:`na64reco.calibration.noise_split`, with the conditions' plane efficiencies, as
``tests/test_noise_split.py``).  Printed: per plane the mean measured noise, the mean and rms
of the pulls ``(measured - generated) / error`` over the seeds; all pulls together; the
pile-up muons per event against the generator's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from na64reco.calibration import noise_split
from na64reco.calibration.beam_tracks import read_beam_runs, reconstruct_views
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.sim.generate import simulate
from na64reco.sim.occupancy import expected_per_event

RUN = 700


def split_run(path: Path, setup, cond) -> dict:
    run = read_beam_runs([path], setup)[0]
    hits, vts, _ = reconstruct_views(run, setup, cond)
    accs = {p.name: noise_split.Counts() for p in setup.planes}
    partners: dict = {}
    for vt in vts:
        partners.update(noise_split.split_view(hits, vt, setup, {}, accs))
    return noise_split.finish(setup, accs, partners, {p.name: cond.plane_efficiency(p) for p in setup.planes})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--first-seed", type=int, default=100)
    args = ap.parse_args(argv)
    setup = load_setup("na64mu", run=RUN)
    cond = load_conditions(setup, RUN)
    true = {p.name: cond.plane_noise_hits(p) for p in setup.planes}
    pulls = {p.name: [] for p in setup.planes}
    values = {p.name: [] for p in setup.planes}
    rates = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="na64split-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            path = Path(tmp) / f"beam{seed}.root"
            simulate(setup, args.events, seed, RUN, path, process="beam", trigger="calibration")
            res = split_run(path, setup, cond)
            for name, s in res.items():
                values[name].append(s.noise_hits)
                pulls[name].append((s.noise_hits - true[name]) / s.noise_error)
            rates.append(noise_split.combined_rate(res.values()))
            path.unlink()
    print(f"{args.seeds} beam runs x {args.events} muons (seeds {args.first_seed}..), "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'plane':6s} {'generated':>9s} {'mean measured':>13s} {'pull mean':>9s} {'pull rms':>8s}")
    for name in pulls:
        p = np.array(pulls[name])
        print(f"{name:6s} {true[name]:9.3f} {np.mean(values[name]):13.4f} {p.mean():+9.2f} {p.std():8.2f}")
    every = np.concatenate([np.array(v) for v in pulls.values()])
    apv = np.concatenate([np.array(v) for k, v in pulls.items() if not k.startswith("ST")])
    print(f"all pulls ({every.size}): mean {every.mean():+.2f} +- {every.std() / np.sqrt(every.size):.2f}, "
          f"rms {every.std():.2f}, |pull| > 3: {(np.abs(every) > 3).sum()}; APV planes: mean {apv.mean():+.2f}, "
          f"rms {apv.std():.2f}")
    r = np.array(rates)
    print(f"pile-up muons per event: {r[:, 0].mean():.3f} (seeds' rms {r[:, 0].std():.3f}, quoted error "
          f"{r[:, 1].mean():.3f}) for {expected_per_event(setup):.4f} generated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
