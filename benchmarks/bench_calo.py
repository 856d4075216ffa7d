"""Calorimeter reconstruction throughput on a simulated NA64mu file.

    python benchmarks/bench_calo.py [--events 100000] [--file PATH] [--repeat 3]

Simulates the file once (kept in the system temp directory) unless ``--file`` is
given, then reports events/s (one core) of

* plain uproot reading of the calo branches (``calo_det``, ``calo_chan``, ``calo_adc``),
* ``RawFile.events()`` (all branches, assembled into awkward records),
* the calo stage ``reconstruct_calo`` on events already in memory (waveform kernel,
  scatter-adds, shower shape),

and the ratio of the calo stage to plain uproot reading of its branches.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import awkward as ak  # noqa: E402
import numpy as np  # noqa: E402
import uproot  # noqa: E402

from na64reco.conditions import load_conditions  # noqa: E402
from na64reco.geometry import load_setup  # noqa: E402
from na64reco.io.raw import open_raw  # noqa: E402
from na64reco.reco.calo import reconstruct_calo  # noqa: E402


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="beam particles to simulate")
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = args.file or Path(tempfile.gettempdir()) / f"na64reco_bench_calo_{args.events}.root"
    if not path.exists():
        from na64reco.sim.generate import simulate

        t = time.perf_counter()
        simulate("na64mu", args.events, 2024, 5, path)
        print(f"simulated {args.events} muons into {path} in {time.perf_counter() - t:.1f} s")
    setup = load_setup("na64mu")
    with open_raw(path) as f:
        n = f.n_events
        cond = load_conditions(setup, f.run)
        branches = ["calo_det", "calo_chan", "calo_adc"]

        def plain_uproot():  # a fresh file each time: no array/basket cache reuse
            with uproot.open(path) as raw:
                raw["events"].arrays(branches)

        t_uproot = best_of(plain_uproot, args.repeat)
        t_events = best_of(f.events, args.repeat)
        events = f.events()
    digits = int(ak.sum(ak.num(events["calo"])))
    reconstruct_calo(events[:100], setup, cond)  # compile / load the numba cache
    t_reco = best_of(lambda: reconstruct_calo(events, setup, cond, source=str(path)), args.repeat)
    print(f"file: {path} ({n} events, {digits / n:.1f} MSADC digits/event)")
    print(f"uproot read of calo branches : {n / t_uproot:12,.0f} events/s")
    print(f"RawFile.events() (all)       : {n / t_events:12,.0f} events/s")
    print(f"reconstruct_calo             : {n / t_reco:12,.0f} events/s  ({digits / t_reco:,.0f} digits/s)")
    print(f"calo stage / uproot read     : {t_reco / t_uproot:.2f} x the time "
          f"(reading + calo stage: {n / (t_uproot + t_reco):,.0f} events/s)")
    out = reconstruct_calo(events[:1000], setup, cond)
    assert np.isfinite(out["ecal_energy"]).all()


if __name__ == "__main__":
    main()
