"""Closure of the MSADC time-offset calibration (``calibrate --kind timing``).

    python benchmarks/validate_timing_calibration.py [--events 30000] [--seed 12] [--spread-ns 4] [--late-ns 40]

A private copy of calib/ gets a *true* NA64mu calorimeter payload that differs from the
default tag's only in the time offsets: every channel moved by N(0, ``--spread-ns``), and
every channel of HCAL module 1 by ``--late-ns`` more (a longer cable, beyond the 25 ns timing
window).  A beam run (calibration trigger) simulated with it is calibrated from the default tag,
as a user would:

    na64reco calibrate --setup na64mu --kind timing --runs 400 600 --tag t-timing BEAM

and printed: per calibrated channel the fitted minus the true offset and its pull, the pulls'
mean and rms, and the mean energy of HCAL module 1 reconstructed with the true, the default and
the calibrated offsets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from na64reco.calibration.publish import calibrate_files, publish_result
from na64reco.conditions import load_conditions, nominal_content, publish
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.event import reconstruct

REPO_CALIB = Path(__file__).resolve().parent.parent / "calib"
RUN = 500


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--spread-ns", type=float, default=4.0)
    ap.add_argument("--late-ns", type=float, default=40.0)
    args = ap.parse_args(argv)
    from na64reco.sim.generate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "calib"
        shutil.copytree(REPO_CALIB, root)
        os.environ["NA64RECO_CALIB"] = str(root)
        setup = load_setup("na64mu", run=RUN)
        base = load_conditions(setup, RUN, root=root)
        content = nominal_content(setup, seed=1)["calorimeter"]  # the default tag's constants (calib v001)
        rng = np.random.default_rng(args.seed)
        hcal = setup.detector("HCAL")
        late = hcal.cell_of_channel(np.arange(hcal.n_channels))[0] == 1
        for name, d in content["detectors"].items():
            off = np.asarray(base.calo[name].time_offset)
            off = off + rng.normal(0, args.spread_ns, off.size)
            off[late if name == "HCAL" else np.zeros(off.size, bool)] += args.late_ns
            d["time_offset_ns"] = np.round(off, 2).tolist()
        publish("na64mu", "true-time", (1, 999999), {"calorimeter": content}, base_tag="na64mu-default", root=root)
        true = load_conditions(setup, RUN, "true-time", root=root)
        beam = Path(tmp) / "beam.root"
        t0 = time.perf_counter()
        simulate("na64mu", args.events, args.seed, RUN, beam, process="beam", calib_tag="true-time",
                 trigger="calibration")
        t1 = time.perf_counter()
        res = calibrate_files("timing", setup, [beam], RUN, root=root, runs=(400, 600))
        t2 = time.perf_counter()
        publish_result(res, setup, "t-timing", (400, 600), root=root)
        print(f"{args.events} beam muons simulated in {t1 - t0:.1f} s; timing calibration of {res.n_events} "
              f"events in {t2 - t1:.1f} s")
        print(f"{'detector':8} {'ch':>3} {'entries':>8} {'moved ns':>9} {'fit - true ns':>14} {'error':>6} {'pull':>6}")
        pulls = []
        for name, d in res.derived.items():
            for ch in np.flatnonzero(np.isfinite(d["time_offset"])):
                diff = d["time_offset"][ch] - true.calo[name].time_offset[ch]
                pulls.append(diff / d["error"][ch])
                print(f"{name:8} {ch:>3} {d['entries'][ch]:>8} {d['shift'][ch]:>+9.2f} {diff:>+14.3f} "
                      f"{d['error'][ch]:>6.3f} {pulls[-1]:>+6.2f}")
        pulls = np.asarray(pulls)
        print(f"{pulls.size} channels calibrated ({res.n_calibrated}), "
              f"{sum(len(v) for v in res.skipped.values())} left at the base offsets (too few clean pulses); "
              f"pulls: mean {pulls.mean():+.2f}, rms {pulls.std():.2f}, largest |pull| {np.abs(pulls).max():.2f}")
        with open_raw(beam) as f:
            events = f.events()
        for label, tag in (("true offsets", "true-time"), ("default tag", None), ("calibrated", "t-timing")):
            reco = reconstruct(events, setup, load_conditions(setup, RUN, tag, root=root), source=str(beam))
            e = np.asarray(reco.hcal_module_energy)[:, 1]
            print(f"HCAL module 1 mean energy, {label:13}: {e.mean():.4f} +- {e.std() / np.sqrt(e.size):.4f} GeV")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
