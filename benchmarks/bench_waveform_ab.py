"""Before/after speed and outputs of the MSADC waveform kernel alone, both timed in ONE process.

    git archive <before-commit> | tar -x -C BEFORE_DIR
    python benchmarks/bench_waveform_ab.py --before BEFORE_DIR --file RAW.root [--events N] [--repeat 9]

The digits of the file (all events unless ``--events``) are read and flattened once; the
earlier tree's ``waveform.py`` (executed from its sources, numba's on-disk cache off) and
this tree's run alternately on them (``_fit_digits`` with the run's conditions, exactly as
:func:`reconstruct_digits` calls it); each figure is the minimum CPU time of ``--repeat``
rounds (the machine is shared: separate runs scatter by 20-40 %).  Printed before timing:
the largest differences of every output (amplitude and energy relative, time absolute) and
the number of digits whose flags differ.  ``--save OUT.npz`` also writes this tree's outputs.
``--stage``: also the whole calorimeter stage (``reconstruct_calo`` of this tree on the same
events) with the earlier and with this tree's kernel swapped in (``_fit_digits``).
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import uproot

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import assemble_events, event_branches, open_raw
from na64reco.reco import calo
from na64reco.reco import waveform as W

NAMES = ("amplitude", "time", "energy", "ped_even", "ped_odd", "chi2ndf", "flags")


def _module(name: str, path: Path) -> types.ModuleType:
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(path.read_text().replace("cache=True", "cache=False"), str(path), "exec"), mod.__dict__)
    return mod


def _events(path: str, events: int | None):
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    with uproot.open(path, array_cache=None) as f:
        ev = assemble_events(f["events"].arrays(event_branches(), entry_stop=events), path)
    return setup, conds, ev


def kernel_inputs(path: str, events: int | None):
    """(adc, cond, stacked tables, kernel args) of every digit of ``path`` as reconstruct_digits makes them."""
    setup, conds, ev = _events(path, events)
    _, det, chan, adc = calo.flat_digits(ev)
    adc = W.check_samples(adc)
    tables = W._condition_tables(setup, conds)
    stacked = W._stacked_tables(conds, tables)
    cond, bad = W._condition_index(np.asarray(det, np.int64), np.asarray(chan, np.int64),
                                   stacked[W._TABLE_FIELDS.index("gain")], tables["gain"].shape[1])
    assert bad < 0
    return len(ev), adc, cond, stacked, W._kernel_args(W.waveform_config(setup))


def differences(a, b) -> dict[str, float]:
    """Largest differences of the outputs ``a`` (before) and ``b`` (after)."""
    out = {}
    for name, x, y in zip(NAMES, a, b, strict=True):
        if name == "flags":
            out[name] = int(np.sum(x != y))
            continue
        nan = np.isnan(x) | np.isnan(y)
        out[name + " NaN mismatches"] = int(np.sum(np.isnan(x) != np.isnan(y)))
        x, y = x[~nan], y[~nan]
        d = np.abs(x - y)
        if name in ("amplitude", "energy"):
            d = d / np.maximum(np.abs(x), 1e-300)
            name += " (relative)"
        out[name] = float(d.max()) if d.size else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="source tree of the earlier version")
    ap.add_argument("--file", required=True)
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--save", type=Path, default=None)
    ap.add_argument("--stage", action="store_true", help="also the calorimeter stage with either kernel")
    args = ap.parse_args()
    old = _module("before_waveform", args.before / "na64reco" / "reco" / "waveform.py")
    n_ev, adc, cond, stacked, kargs = kernel_inputs(args.file, args.events)

    def before():
        return old._fit_digits(adc, cond, *stacked, *kargs)

    def after():
        return W._fit_digits(adc, cond, *stacked, *kargs)

    a, b = before(), after()
    if args.save:
        np.savez(args.save, **dict(zip(NAMES, b, strict=True)))
    print(f"{args.file}: {n_ev} events, {len(adc)} digits ({adc.dtype}); fitted {np.sum(b[6] & 16 == 0)}")
    for k, v in differences(a, b).items():
        print(f"  max diff {k:28s} {v:.3g}")
    t_b, t_a = [], []
    for _ in range(args.repeat):
        for fn, t in ((before, t_b), (after, t_a)):
            c = time.process_time()
            fn()
            t.append(time.process_time() - c)
    nd = len(adc)
    print(f"waveform kernel  before {min(t_b):.4f} s ({1e9 * min(t_b) / nd:.0f} ns/digit)  "
          f"after {min(t_a):.4f} s ({1e9 * min(t_a) / nd:.0f} ns/digit)  speed-up {min(t_b) / min(t_a):.2f}x  "
          f"(CPU, minimum of {args.repeat} alternating rounds)")
    if args.stage:
        setup, conds, ev = _events(args.file, args.events)
        mine = W._fit_digits

        def stage(kernel):
            W._fit_digits = kernel
            try:
                return calo.reconstruct_calo(ev, setup, conds)
            finally:
                W._fit_digits = mine

        t_b, t_a = [], []
        for _ in range(args.repeat):
            for kernel, t in ((old._fit_digits, t_b), (mine, t_a)):
                c = time.process_time()
                stage(kernel)
                t.append(time.process_time() - c)
        print(f"calorimeter stage before {min(t_b):.4f} s  after {min(t_a):.4f} s  "
              f"speed-up {min(t_b) / min(t_a):.2f}x "
              f"(this tree's reconstruct_calo with either kernel; CPU, minimum of {args.repeat} alternating rounds)")


if __name__ == "__main__":
    main()
