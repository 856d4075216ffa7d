"""Benchmark of the fast simulator (prints figures; not a test).

    python benchmarks/bench_simulate.py [--events 100000] [--memory] [--trigger calibration|physics]
                                        [--repeat 3] [--profile]
    python benchmarks/bench_simulate.py --digest
    python benchmarks/bench_simulate.py --events 30000 --spills 7 [--profile]
    python benchmarks/bench_simulate.py --compile [K]
    python benchmarks/bench_simulate.py --ab OLD_TREE [--events 100000] [--repeat 6]
    python benchmarks/bench_simulate.py --ab-all OLD_TREE [--events 100000] [--repeat 6]
    python benchmarks/bench_simulate.py --tail-ab [--trigger physics] [--repeat 4]

1. NA64mu ``mixture`` beam particles per second on one core, *including* writing the raw
   file (CPU time, minimum of ``--repeat`` runs in one warm process).
2. The same arrays written again with bare uproot (``mktree`` + ``extend``, same ZSTD(1)
   compression, same chunking; minimum of ``--repeat``, each write right after a simulation,
   round by round): the ratio tells how much the simulation costs on top of the unavoidable
   write; also the median of the rounds' own ratios (robust to a drifting load).
3. Bytes per written event on disk.
4. With ``--memory``: peak RSS of fresh processes simulating 50k and 200k beam particles
   (memory must be flat in N: chunked writing).
With ``--digest`` it only prints, for ten small configurations (NA64mu mixture with the
calibration and physics triggers, signal in a 2023-like run, dimuon, punchthrough,
kdecay, hadron; NA64e mixture and signal; a pedestal run), the SHA-256 of the content of
every branch of the written trees: run it on two versions of the code
(``PYTHONPATH=<tree>``) to show that a speed-up leaves the output bit-identical.

5. With ``--profile``: CPU time of the stages (transport and its multiple scattering,
   trigger, MSADC and APV digitisation, writing and its concatenation of the spills) of
   the fastest run (inclusive times: an indented line is part of the line above it).

6. With ``--spills R``: only the simulation proper (no writing), each spill of the run
   simulated R times and the minimum per spill summed: the before/after figure that a
   loaded machine disturbs least.

7. With ``--compile [K]``: the cold numba compilation (a fresh process, ``NUMBA_CACHE_DIR`` an
   empty directory) of the first runs of the first K ``--digest`` configurations (all by
   default; at most 1000 beam particles each): CPU time of those runs, of numba's
   compilations, and per kernel (inclusive and exclusive of what it compiles inside it).

8. With ``--ab OLD_TREE``: an in-process A/B of the digitisation (the seventh pass's
   changes): the functions that ``generate.py`` imports from ``na64reco/sim/digitize.py``
   taken from the file of that name under ``OLD_TREE`` (e.g. a ``git archive`` of an older
   commit) or from this tree, alternating (old, new, new, old, ...) in one warm process,
   ``--repeat`` runs of each on ``--events`` beam particles (writing included): the CPU time
   of each run, the medians and their ratio, the per-pair ratios, and the CPU time of the
   APV and MSADC digitisation in each run.  On a shared machine the pairs move together, so
   this resolves a few per cent where separate processes do not.

9. With ``--ab-all OLD_TREE``: the same alternation for the *whole* simulation (writing
   included): ``OLD_TREE``'s ``na64reco`` package is copied to a temporary directory under
   another name (its own imports renamed, its ``calib/`` and ``selections/`` linked) and imported
   beside this tree's; the CPU time of each run, the medians, their ratio, and the median CPU
   time of each ``--profile`` stage for both (the eighth pass changed more than the
   digitisation).

The default trigger is ``calibration``: ~94 % of the beam particles are written, which is
the configuration of issue 11 (94k written events per 100k MOT) and the one where
digitising and writing matter.  With the physics trigger (``--trigger physics``) about 1 %
of the muons are written and the beam transport of the other 99 % dominates.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _simulate(n: int, path: Path, chunk: int, trigger: str) -> tuple[float, float, object]:
    from na64reco.sim import simulate
    from na64reco.sim.heap import retain_freed_memory

    retain_freed_memory()  # as `na64reco simulate` does; the bare write of the same run then has it too

    t0, c0 = time.perf_counter(), time.process_time()
    result = simulate("na64mu", n, 1, 1, path, chunk_size=chunk, trigger=trigger)
    return time.perf_counter() - t0, time.process_time() - c0, result


#: (module, attribute, label) of the stages timed by ``--profile`` (CPU time, inclusive)
_STAGES = (
    ("na64reco.sim.generate", "simulate_spill", "whole spills (all below but writing)"),
    ("na64reco.sim.generate", "sample_beam", "beam particles (sample_beam)"),
    ("na64reco.sim.generate", "follow", "transport (follow)"),
    ("na64reco.sim.transport", "scatter_thin", "  thin scatterers + flight (incl. RNG)"),
    ("na64reco.sim.transport", "thin_steps", "  tracker stations: planes + air gaps (incl. RNG)"),
    ("na64reco.sim.transport", "scatter_thick", "  thick scatterers (incl. RNG)"),
    ("na64reco.sim.generate", "trigger_mask", "trigger"),
    ("na64reco.sim.generate", "aggregate", "calorimeter deposits summed per channel"),
    ("na64reco.sim.generate", "msadc_digits", "MSADC digits"),
    ("na64reco.sim.generate", "beam_pileup_hits", "out-of-time pile-up muons (their transport)"),
    ("na64reco.sim.generate", "written_hits", "crossings of the written events"),
    ("na64reco.sim.generate", "tracker_points", "tracker points"),
    ("na64reco.sim.generate", "apv_digits", "APV digits"),
    ("na64reco.sim.generate", "straw_digits", "straw digits"),
    ("na64reco.sim.generate", "_flush", "writing (concat + RawWriter)"),
    ("na64reco.sim.generate", "_concat", "  concatenating the spills of a chunk"),
    ("na64reco.sim.generate", "load_sim_params", "simulation parameters (setup YAML)"),
)


def _install_stage_timers(package: str = "na64reco") -> dict[str, float]:
    import functools
    import importlib

    times: dict[str, float] = {}
    for module, name, label in _STAGES:
        mod = importlib.import_module(package + module[len("na64reco"):])
        func = getattr(mod, name, None)
        if func is None:  # a stage of another version of the code (run with PYTHONPATH=<older tree>)
            continue

        @functools.wraps(func)
        def timed(*a, _func=func, _label=label, **k):
            c0 = time.process_time()
            try:
                return _func(*a, **k)
            finally:
                times[_label] = times.get(_label, 0.0) + time.process_time() - c0

        setattr(mod, name, timed)
    return times


def _plain_writer(src: Path, dst: Path, chunk_events: int):
    """Read every tree of ``src`` into memory; returns a function that writes the same arrays to
    ``dst`` with bare uproot and returns (wall, CPU) seconds of the write."""
    import uproot

    with uproot.open(src) as f:
        ev = f["events"].arrays()
        tr = f["truth"].arrays(library="np")
        sp = f["spills"].arrays(library="np")
    names = [k for k in ev.fields if not k.startswith("n")]  # uproot re-creates the counters
    types = {k: ev[k].type.content for k in names}

    def write() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with uproot.recreate(dst, compression=uproot.ZSTD(1)) as out:
            out.mktree("events", types)
            for start in range(0, len(ev), chunk_events):
                out["events"].extend({k: ev[k][start:start + chunk_events] for k in names})
            out.mktree("truth", {k: v.dtype for k, v in tr.items()})
            out["truth"].extend(tr)
            out.mktree("spills", {k: v.dtype for k, v in sp.items()})
            out["spills"].extend(sp)
        return time.perf_counter() - t0, time.process_time() - c0
    return write


#: the configurations of ``--digest`` (small: ~1 min for all)
_DIGEST_RUNS = (
    {"setup": "na64mu", "n_events": 20000, "seed": 3, "run": 1, "trigger": "calibration"},
    {"setup": "na64mu", "n_events": 20000, "seed": 4, "run": 1},
    {"setup": "na64mu", "n_events": 3000, "seed": 5, "run": 12000, "process": "signal", "mass_gev": 0.1},
    {"setup": "na64mu", "n_events": 3000, "seed": 6, "run": 1, "process": "dimuon"},
    {"setup": "na64mu", "n_events": 3000, "seed": 7, "run": 1, "process": "punchthrough"},
    {"setup": "na64mu", "n_events": 3000, "seed": 8, "run": 1, "process": "kdecay"},
    {"setup": "na64mu", "n_events": 3000, "seed": 8, "run": 1, "process": "hadron"},
    {"setup": "na64e", "n_events": 5000, "seed": 9, "run": 1},
    {"setup": "na64e", "n_events": 3000, "seed": 10, "run": 1, "process": "signal", "mass_gev": 0.02},
    {"setup": "na64mu", "n_events": 500, "seed": 11, "run": 1, "process": "pedestal"},
)


def _digests() -> None:
    import hashlib

    import hepunits as u
    import numpy as np
    import uproot

    from na64reco.sim import simulate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digest.root"
        for cfg in _DIGEST_RUNS:
            kw = {k: v for k, v in cfg.items() if k != "mass_gev"}
            if "mass_gev" in cfg:
                kw["mass"] = cfg["mass_gev"] * u.GeV
            simulate(output=path, **kw)
            h = hashlib.sha256()
            with uproot.open(path) as f:
                for tree in ("events", "truth", "spills"):
                    for name, v in f[tree].arrays(library="np").items():
                        flat = (np.concatenate(list(v)) if len(v) else np.zeros(0)) if v.dtype == object else v
                        h.update(name.encode())
                        h.update(np.ascontiguousarray(flat).tobytes())
            print(f"{h.hexdigest()[:16]}  {cfg}")


def _per_spill(n_events: int, repeat: int, trigger: str, stages: dict | None = None,
               stage_best: dict | None = None) -> tuple[float, int]:
    """CPU time of the simulation proper (no writing): every spill of an ``n_events`` run
    simulated ``repeat`` times (the same output each time: a spill's random stream depends
    only on the seed and its number), the minimum of each spill, summed.  Returns
    (seconds, spills).  Less sensitive to a loaded machine than whole runs.  With the
    ``stages`` of :func:`_install_stage_timers`, ``stage_best`` gets the sum over the spills
    of each stage's minimum over the repeats."""
    import na64reco.sim.generate as gen
    from na64reco.sim import simulate

    orig = gen.simulate_spill
    best: list[float] = []
    per_stage: dict[str, float] = {}

    def timed(job, spill, n, first_event=1):
        times = []
        mins: dict[str, float] = {}
        for _ in range(repeat):
            before = dict(stages or {})
            c0 = time.process_time()
            out = orig(job, spill, n, first_event=first_event)
            times.append(time.process_time() - c0)
            for k, v in (stages or {}).items():
                mins[k] = min(mins.get(k, float("inf")), v - before.get(k, 0.0))
        best.append(min(times))
        for k, v in mins.items():
            per_stage[k] = per_stage.get(k, 0.0) + v
        return out

    gen.simulate_spill = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            simulate("na64mu", 2000, 1, 1, Path(tmp) / "warm.root", trigger=trigger)  # imports, caches
            best.clear()
            per_stage.clear()
            simulate("na64mu", n_events, 1, 1, Path(tmp) / "spills.root", trigger=trigger)
    finally:
        gen.simulate_spill = orig
    if stage_best is not None:
        stage_best.update(per_stage)
    return sum(best), len(best)


#: the child of ``--compile``: numba's compile events of the first runs of the ``--digest``
#: configurations (small), CPU time per compiled function, inclusive and exclusive of the
#: functions compiled inside it
_COMPILE_CHILD = """
import sys, tempfile, time
from pathlib import Path
c_import = time.process_time()
from numba.core import event
incl, excl, top, stack = {}, {}, set(), []
def name(ev):
    f = ev.data["dispatcher"].py_func
    return f"{f.__module__}.{f.__qualname__}".replace(".<locals>", "") + " " + str(ev.data["args"])
class Recorder(event.Listener):
    def on_start(self, ev):
        stack.append([name(ev), time.process_time(), 0.0])
    def on_end(self, ev):
        k, t, inner = stack.pop()
        dt = time.process_time() - t
        incl[k] = incl.get(k, 0.0) + dt
        excl[k] = excl.get(k, 0.0) + dt - inner
        if stack:
            stack[-1][2] += dt
        else:
            top.add(k)
event.register("numba:compile", Recorder())
import hepunits as u
from na64reco.sim import simulate
sys.path.insert(0, sys.argv[1])
from bench_simulate import _DIGEST_RUNS
c0, w0 = time.process_time(), time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    for cfg in _DIGEST_RUNS[:int(sys.argv[2])]:
        kw = {k: v for k, v in cfg.items() if k != "mass_gev"}
        kw["n_events"] = min(kw["n_events"], 1000)
        if "mass_gev" in cfg:
            kw["mass"] = cfg["mass_gev"] * u.GeV
        simulate(output=Path(tmp) / "c.root", **kw)
c1, w1 = time.process_time(), time.perf_counter()
ours = sorted((k for k in top if k.startswith("na64reco")), key=lambda k: -incl[k])
print(f"first runs: {c1 - c0:.2f} s CPU, {w1 - w0:.2f} s wall; numba compilation {sum(incl[k] for k in top):.2f} s CPU "
      f"in {len(top)} top-level compilations ({len(incl)} with the functions compiled inside them)")
print("  incl. s  excl. s  kernel (argument types)")
for k in ours:
    print(f"  {incl[k]:7.2f}  {excl[k]:7.2f}  {k[:150]}")
"""


def _cold_compile(configs: int) -> None:
    """``--compile``: a fresh process with an empty numba cache runs the first ``configs`` of the
    ``--digest`` configurations (at most 1000 beam particles each) and prints the CPU time of
    the runs and of numba's compilations per kernel."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        # cwd: not the checkout, whose directory ``python -c`` would put before PYTHONPATH=<tree>
        out = subprocess.run([sys.executable, "-c", _COMPILE_CHILD, str(Path(__file__).resolve().parent),
                              str(configs)], capture_output=True, text=True, env=env, check=True, cwd=cache)
    print(f"cold numba cache, first {configs} --digest configuration(s) (<= 1000 beam particles each):")
    print(out.stdout, end="")


#: what ``generate.py`` imports from ``digitize.py`` (swapped by ``--ab``)
_AB_FUNCTIONS = ("aggregate", "apv_digits", "msadc_digits", "straw_digits", "tracker_points")


def _ab(old_tree: str, n: int, repeat: int, trigger: str) -> None:
    """``--ab``: the digitisation of ``old_tree`` against this tree's, alternating in one process."""
    import importlib.util
    import statistics

    import na64reco.sim.generate as gen
    from na64reco.sim import simulate
    from na64reco.sim.heap import retain_freed_memory

    retain_freed_memory()
    path = Path(old_tree) / "na64reco" / "sim" / "digitize.py"
    spec = importlib.util.spec_from_file_location("_old_digitize", path)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    stage: dict[str, float] = {}

    def timed(func, label):
        def run(*a, **k):
            c0 = time.process_time()
            try:
                return func(*a, **k)
            finally:
                stage[label] = stage.get(label, 0.0) + time.process_time() - c0
        return run

    impl = {which: {name: timed(getattr(mod, name), name) for name in _AB_FUNCTIONS}
            for which, mod in (("old", old), ("new", gen))}
    runs: dict[str, list[float]] = {"old": [], "new": []}
    parts: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat + 1):  # round 0: warm-up of both (imports, numba caches)
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                for name, func in impl[which].items():
                    setattr(gen, name, func)
                stage.clear()
                c0 = time.process_time()
                simulate("na64mu", n if r else 2000, 1, 1, Path(tmp) / "ab.root", trigger=trigger)
                if r:
                    runs[which].append(time.process_time() - c0)
                    parts[which].append(dict(stage))
    print(f"in-process A/B, {n} beam particles, trigger {trigger}, {repeat} runs each (CPU s incl. writing); "
          f"old = {path}")
    for which in ("old", "new"):
        apv = " ".join(f"{p['apv_digits']:.3f}" for p in parts[which])
        msadc = " ".join(f"{p['msadc_digits']:.3f}" for p in parts[which])
        print(f"  {which}: {' '.join(f'{x:.3f}' for x in runs[which])}  median {statistics.median(runs[which]):.3f}"
              f"  | APV {apv} | MSADC {msadc}")
    print(f"  old / new of the medians: {statistics.median(runs['old']) / statistics.median(runs['new']):.3f}; "
          f"per pair: {' '.join(f'{a / b:.3f}' for a, b in zip(runs['old'], runs['new'], strict=True))}")


def _old_package(old_tree: str, tmp: Path) -> str:
    """``OLD_TREE``'s ``na64reco`` importable beside this one: copied to ``tmp`` as
    ``na64reco_ab_old`` (its own imports renamed), with links to its ``calib/`` and ``selections/``
    (found beside the package, :mod:`na64reco.resources`).  Returns the package name."""
    import re
    import shutil

    name = "na64reco_ab_old"
    tree = Path(old_tree).resolve()
    shutil.copytree(tree / "na64reco", tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (tmp / name).rglob("*.py"):
        path.write_text(re.sub(r"\bna64reco\b", name, path.read_text()))
    for data in ("calib", "selections"):
        (tmp / data).symlink_to(tree / data)
    sys.path.insert(0, str(tmp))
    return name


def _ab_all(old_tree: str, n: int, repeat: int, trigger: str) -> None:
    """``--ab-all``: the whole simulation of ``old_tree`` (its package imported under another
    name) against this tree's, alternating in one process, with the stages of ``--profile``."""
    import importlib
    import statistics

    from na64reco.sim.heap import retain_freed_memory

    retain_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = _old_package(old_tree, tmp)
        sims = {"old": importlib.import_module(old + ".sim").simulate,
                "new": importlib.import_module("na64reco.sim").simulate}
        stages = {"old": _install_stage_timers(old), "new": _install_stage_timers("na64reco")}
        runs: dict[str, list[float]] = {"old": [], "new": []}
        parts: dict[str, list[dict]] = {"old": [], "new": []}
        for r in range(repeat + 1):  # round 0: warm-up of both (imports, numba caches)
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                stages[which].clear()
                c0 = time.process_time()
                sims[which]("na64mu", n if r else 2000, 1, 1, tmp / "ab.root", trigger=trigger)
                if r:
                    runs[which].append(time.process_time() - c0)
                    parts[which].append(dict(stages[which]))
    print(f"in-process A/B of the whole simulation, {n} beam particles, trigger {trigger}, {repeat} runs each "
          f"(CPU s); old = {Path(old_tree).resolve()}")
    for which in ("old", "new"):
        print(f"  {which}: {' '.join(f'{x:.3f}' for x in runs[which])}  median {statistics.median(runs[which]):.3f}")
    print(f"  old / new of the medians: {statistics.median(runs['old']) / statistics.median(runs['new']):.3f}; "
          f"per pair: {' '.join(f'{a / b:.3f}' for a, b in zip(runs['old'], runs['new'], strict=True))}")
    print(f"  {'stage (median CPU s)':48s} {'old':>7s} {'new':>7s}  old-new")
    for _, _, label in _STAGES:
        if all(label in p for w in parts for p in parts[w]):
            a, b = (statistics.median(p[label] for p in parts[w]) for w in ("old", "new"))
            print(f"  {label:48s} {a:7.3f} {b:7.3f}  {a - b:+.3f}")


def _peak_rss_child(n: int, trigger: str) -> float:
    code = (
        "import resource, tempfile, os\n"
        "from na64reco.sim import simulate\n"
        "d = tempfile.mkdtemp()\n"
        f"simulate('na64mu', {n}, 1, 1, os.path.join(d, 'm.root'), chunk_size=20000, trigger={trigger!r})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())  # not the checkout: ``-c`` puts the cwd before PYTHONPATH
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0  # kB -> MB (Linux)


def _tail_ab(n: int, repeat: int, trigger: str) -> None:
    """``--tail-ab``: the simulation with and without the natural single-scattering tail
    (:mod:`na64reco.sim.hard_scatter`), alternating in one warm process, writing included."""
    import statistics

    from na64reco.sim import simulate

    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        simulate("na64mu", 20_000, 1, 1001, Path(tmp) / "warm.root", trigger=trigger)
        for r in range(repeat):
            for flag in ((False, True) if r % 2 == 0 else (True, False)):
                c = time.process_time()
                simulate("na64mu", n, 1, 1001, Path(tmp) / f"{flag}.root", trigger=trigger, hard_scatter=flag)
                times[flag].append(time.process_time() - c)
    for flag, v in times.items():
        print(f"natural tail {'on ' if flag else 'off'}: CPU s per {n} MOT {sorted(round(x, 3) for x in v)}, "
              f"median {statistics.median(v):.3f}")
    print(f"ratio on / off (medians): {statistics.median(times[True]) / statistics.median(times[False]):.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--trigger", choices=("calibration", "physics"), default="calibration")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the minimum is shown)")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS for 50k and 200k")
    ap.add_argument("--profile", action="store_true", help="CPU time per simulation stage")
    ap.add_argument("--digest", action="store_true", help="only the content digests of ten small runs")
    ap.add_argument("--spills", type=int, default=0, metavar="R",
                    help="only the simulation proper: each spill of an --events run simulated R times, minimum "
                         "per spill (e.g. --events 30000 --spills 7)")
    ap.add_argument("--compile", type=int, nargs="?", const=len(_DIGEST_RUNS), default=0, metavar="K",
                    help="only the cold numba compilation of the first K --digest configurations (default: all)")
    ap.add_argument("--ab", metavar="OLD_TREE", help="in-process A/B of the digitisation against OLD_TREE's")
    ap.add_argument("--ab-all", metavar="OLD_TREE",
                    help="in-process A/B of the whole simulation (stages included) against OLD_TREE's")
    ap.add_argument("--tail-ab", action="store_true",
                    help="in-process A/B of the natural single-scattering tail (simulate hard_scatter on / off)")
    args = ap.parse_args(argv)
    if args.tail_ab:
        _tail_ab(args.events, args.repeat, args.trigger)
        return 0
    if args.ab:
        _ab(args.ab, args.events, args.repeat, args.trigger)
        return 0
    if args.ab_all:
        _ab_all(args.ab_all, args.events, args.repeat, args.trigger)
        return 0
    if args.compile:
        _cold_compile(args.compile)
        return 0
    if args.digest:
        _digests()
        return 0
    if args.spills:
        stages = _install_stage_timers() if args.profile else None
        stage_best: dict[str, float] = {}
        sec, n_spills = _per_spill(args.events, args.spills, args.trigger, stages, stage_best)
        scale = 100_000 / args.events
        print(f"simulation proper (no writing), trigger {args.trigger}: {sec:6.3f} s CPU for {args.events} beam "
              f"particles in {n_spills} spills (minimum of {args.spills} per spill) = {sec * scale:6.3f} s per 100k")
        if stage_best:
            print("CPU time by stage per 100k (each stage's minimum per spill, summed):")
            for _, _, label in _STAGES:
                if label in stage_best:
                    print(f"  {label:48s} {stage_best[label] * scale:6.3f} s")
        return 0
    if args.memory:
        # first, while this process is small: Linux children inherit the parent's ru_maxrss
        for n in (50_000, 200_000):
            print(f"peak RSS, fresh process, N = {n:>7}: {_peak_rss_child(n, args.trigger):7.0f} MB")
    stages = _install_stage_timers() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _simulate(2000, tmp / "warm.root", args.chunk, args.trigger)  # imports, caches
        # the simulation and the bare write alternate round by round (the host's load drifts: separate
        # blocks of repeats bias the ratio); the first simulation makes the arrays the write writes
        walls, best, plain_w, plain_c, paired = [], None, [], [], []
        write = None
        for _ in range(max(1, args.repeat)):
            if stages is not None:
                stages.clear()
            w, c, result = _simulate(args.events, tmp / "sim.root", args.chunk, args.trigger)
            walls.append(w)
            if best is None or c < best[0]:
                best = (c, dict(stages or {}))
            if write is None:
                size = os.path.getsize(tmp / "sim.root")
                chunk_events = max(1, int(args.chunk * result.n_written / result.n_beam))
                write = _plain_writer(tmp / "sim.root", tmp / "plain.root", chunk_events)
            pw, pc = write()
            plain_w.append(pw)
            plain_c.append(pc)
            paired.append(c / pc)
        wall, (cpu, profile) = min(walls), best
        plain, plain_cpu = min(plain_w), min(plain_c)
        print(f"setup na64mu, process mixture, trigger {args.trigger}, {result.n_beam} beam particles -> "
              f"{result.n_written} written (minimum of {args.repeat} runs)")
        print(f"simulate + write : {wall:7.2f} s wall, {cpu:7.2f} s CPU -> "
              f"{result.n_beam / wall:8.0f} beam particles/s, {result.n_written / wall:8.0f} written events/s")
        print(f"plain uproot write of the same arrays: {plain:7.2f} s wall, {plain_cpu:7.2f} s CPU")
        print(f"ratio simulate+write / plain write: {wall / plain:5.2f} (wall), {cpu / plain_cpu:5.2f} (CPU)")
        print(f"  paired (each round's simulate / its write, CPU): median {statistics.median(paired):5.2f}, "
              f"range {min(paired):.2f}-{max(paired):.2f}")
        print(f"per core (CPU time): {result.n_beam / cpu:8.0f} beam particles/s")
        per_event = size / max(result.n_written, 1)
        print(f"file size        : {size / 1e6:7.2f} MB = {per_event:6.0f} bytes per written event")
        if profile:
            print("CPU time by stage (fastest run):")
            for _, _, label in _STAGES:
                if label in profile:
                    print(f"  {label:48s} {profile[label]:6.3f} s  {profile[label] / cpu:4.0%}")
        print(f"this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
