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

and the ratios of the calo stage to plain uproot reading of its branches.  With
``--before DIR`` (a source tree of an earlier version, e.g. ``git archive <commit> | tar
-x -C DIR``) the waveform kernel of that tree (run from its source, numba cache off) and
of this one are also timed alternately in this process on the same flat digits, and the
largest differences of their outputs are printed.  Times are the
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


def kernel_ab(before: Path, events, setup, cond, repeat: int) -> None:
    """CPU time of the waveform kernel of ``before`` and of this tree on the same digits."""
    import sys
    import types

    from na64reco.reco import waveform as new

    path = before / "na64reco" / "reco" / "waveform.py"
    old = types.ModuleType("waveform_before")
    sys.modules[old.__name__] = old
    exec(compile(path.read_text().replace("cache=True", "cache=False"), str(path), "exec"), old.__dict__)
    calo = events["calo"]
    det = ak.to_numpy(ak.flatten(calo["det"])).astype(np.int64)
    chan = ak.to_numpy(ak.flatten(calo["chan"])).astype(np.int64)
    adc = np.ascontiguousarray(ak.to_numpy(ak.flatten(calo["adc"], axis=1)))
    tables = new._condition_tables(setup, cond)
    width = tables["gain"].shape[1]
    look = {k: np.ascontiguousarray(v.ravel()[det * width + chan]) for k, v in tables.items()}
    cargs = (look["pedestal_even"], look["pedestal_odd"], look["noise_adc"], look["gain"], look["time_offset"],
             look["status"].astype(np.int64), *new._kernel_args(new.waveform_config(setup)))
    kernels = {"before": old._waveform_kernel, "this tree": new._waveform_kernel}
    res = {k: fn(adc, *cargs) for k, fn in kernels.items()}  # compiles
    best = {k: float("inf") for k in kernels}
    for _ in range(repeat):
        for k, fn in kernels.items():
            c = time.process_time()
            fn(adc, *cargs)
            best[k] = min(best[k], time.process_time() - c)
    print(f"waveform kernel A/B on {len(adc)} digits (best of {repeat}, CPU):")
    for k in kernels:
        print(f"  {k:10s}: {best[k]:.3f} s  ({len(adc) / best[k]:,.0f} digits/s)")
    print(f"  speed-up  : {best['before'] / best['this tree']:.2f} x")
    a, b = res["before"], res["this tree"]
    fit = (a[6] & (new.FLAG_BELOW_THRESHOLD)) == 0
    for i, name in ((0, "amplitude (ADC)"), (1, "time (ns)"), (5, "chi2/ndf")):
        d = np.abs(a[i][fit] - b[i][fit])
        print(f"  |before - this| {name:16s}: max {np.nanmax(d):.3g}, rms {np.sqrt(np.nanmean(d * d)):.3g}")
    print(f"  digits with different flags: {int(np.sum(a[6] != b[6]))} of {len(adc)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="beam particles to simulate")
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", type=Path, default=None, help="source tree of an earlier version (A/B)")
    args = ap.parse_args()
    path = args.file or Path(tempfile.gettempdir()) / f"na64reco_bench_calo_{args.events}.root"
    if not path.exists():
        from na64reco.sim.generate import simulate

        t = time.perf_counter()
        simulate("na64mu", args.events, 2024, 5, path)
        print(f"simulated {args.events} muons into {path} in {time.perf_counter() - t:.1f} s")
    with open_raw(path) as f:
        n = f.n_events
        setup = load_setup("na64mu", run=f.run)
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
    if args.before is not None:
        kernel_ab(args.before, events, setup, cond, args.repeat)
    out = reconstruct_calo(events[:1000], setup, cond)
    assert np.isfinite(out["ecal_energy"]).all()


if __name__ == "__main__":
    main()
