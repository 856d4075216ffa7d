"""Calorimeter reconstruction throughput on a simulated NA64mu file.

    python benchmarks/bench_calo.py [--events 100000] [--file PATH] [--repeat 3]

Simulates the file once (kept in the system temp directory) unless ``--file`` is
given, then reports events/s (one core) of

* plain uproot reading of the calo branches (``calo_det``, ``calo_chan``, ``calo_adc``),
* ``RawFile.events()`` (all branches, assembled into awkward records),
* the calo stage ``reconstruct_calo`` on events already in memory (waveform kernel,
  one numba pass per event for the sums, one for the ECAL quantities),
* its slow twin ``reconstruct_calo_reference`` (the previous numpy scatter-add path, with
  the same waveform kernel),

and the ratios of the calo stage to plain uproot reading of its branches.  Times are the
best of ``--repeat`` in CPU time of this process (``time.process_time``: robust against
other jobs on a shared machine) and, in brackets, wall time.
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
from na64reco.reco.calo import reconstruct_calo, reconstruct_calo_reference  # noqa: E402


def best_of(fn, repeat):
    """(best CPU time, best wall time) of ``repeat`` calls."""
    cpu, wall = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return min(cpu), min(wall)


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
    reconstruct_calo_reference(events[:100], setup, cond)
    t_reco = best_of(lambda: reconstruct_calo(events, setup, cond, source=str(path)), args.repeat)
    t_ref = best_of(lambda: reconstruct_calo_reference(events, setup, cond, source=str(path)), args.repeat)

    def rate(t):
        return f"{n / t[0]:10,.0f} events/s  ({n / t[1]:,.0f} wall)"

    print(f"file: {path} ({n} events, {digits / n:.1f} MSADC digits/event)")
    print(f"uproot read of calo branches : {rate(t_uproot)}")
    print(f"RawFile.events() (all)       : {rate(t_events)}")
    print(f"reconstruct_calo             : {rate(t_reco)}  {digits / t_reco[0]:,.0f} digits/s")
    print(f"reconstruct_calo_reference   : {rate(t_ref)}")
    print(f"calo stage / uproot read     : {t_reco[0] / t_uproot[0]:.2f} x the CPU time "
          f"(reference twin: {t_ref[0] / t_uproot[0]:.2f} x; reading + calo stage: "
          f"{n / (t_uproot[0] + t_reco[0]):,.0f} events/s)")
    out = reconstruct_calo(events[:1000], setup, cond)
    assert np.isfinite(out["ecal_energy"]).all()


if __name__ == "__main__":
    main()
