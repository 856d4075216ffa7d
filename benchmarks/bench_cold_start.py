"""The README's first command on a fresh machine: how much of it is numba compiling the kernels.

    python benchmarks/bench_cold_start.py [--events 2000] [--repeat 2] [--compare before=DIR] [--top 12]

Each round runs ``na64reco demo --events N`` (simulation of three samples, the coffea processor over
them, the event display and the plots) in fresh processes:

* cold: with ``NUMBA_CACHE_DIR`` a new empty directory, as on a fresh machine or a new batch worker
  whose cache is not shared: every kernel is compiled;
* warm: again with the cache the cold run filled (the baseline, measured in the same round).

Printed per code tree (this one, and with ``--compare NAME=DIR`` another checkout, e.g. ``git archive
<commit> | tar -x -C DIR``, run with ``PYTHONPATH=DIR`` in the same rounds, alternated): CPU and wall
time of the cold and the warm run (minimum over the rounds), the cold run as a multiple of the warm
one, the CPU numba spent compiling (its ``numba:compile`` events, outermost only) by module and by
function (the function's own time, without the functions compiled inside it), and how many compiled
functions of the package have a second specialisation for literal arguments that never runs
(:func:`na64reco.reco.tracking._jit.duplicate_specialisations`; see "Literal integers" there).

The machine may be shared: its load moves the compile times by +-20 %; quote the rounds' minimum and
say what the load was.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(out: str, events: int, output: str) -> None:
    """Run the demo in this process with numba's compile events recorded; write the figures to ``out``."""
    from numba.core import event

    own = collections.Counter()  # function -> CPU compiling it, without what it compiles inside
    outer = [0.0]
    stack: list = []

    class Listener(event.Listener):
        def on_start(self, ev):
            py = ev.data["dispatcher"].py_func
            stack.append((f"{py.__module__}.{py.__qualname__}", time.process_time()))

        def on_end(self, ev):
            name, t0 = stack.pop()
            dt = time.process_time() - t0
            own[name] += dt
            if stack:
                own[stack[-1][0]] -= dt
            else:
                outer[0] += dt

    event.register("numba:compile", Listener())
    c0, w0 = time.process_time(), time.perf_counter()
    from na64reco.cli import main

    try:
        main(["demo", "--events", str(events), "--output", output])
    except SystemExit as exc:
        if exc.code:
            raise
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    # this tree's scan, also for an older tree without it (the module needs only numba)
    spec = importlib.util.spec_from_file_location("_jit_scan", ROOT / "na64reco/reco/tracking/_jit.py")
    scan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan)
    Path(out).write_text(json.dumps({"cpu": cpu, "wall": wall, "compile": outer[0], "own": dict(own),
                                     "duplicates": sorted(scan.duplicate_specialisations())}))


def _run(tree: Path, cache: Path, events: int, work: Path) -> dict:
    out = work / "child.json"
    demo_out = work / f"demo-{time.time_ns()}"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(tree))
    cmd = [sys.executable, __file__, "--child", str(out), "--events", str(events), "--output", str(demo_out)]
    done = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"the demo failed with {tree} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def _module(function: str) -> str:
    return function.rsplit(".", 1)[0] if not function.startswith("numba.") else "numba (its own helpers)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000, help="muons on target per demo sample (default 2000)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds (default 2)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=DIR", help="another code tree")
    ap.add_argument("--top", type=int, default=12, help="modules and functions listed (default 12)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.events, args.output)
        return
    trees = {"this tree": ROOT}
    for item in args.compare:
        name, _, path = item.partition("=")
        if not path or not Path(path, "na64reco").is_dir():
            ap.error(f"--compare {item!r}: expected NAME=DIR with DIR a checkout holding na64reco/")
        trees[name] = Path(path).resolve()
    runs: dict[str, dict[str, list]] = {t: {"cold": [], "warm": []} for t in trees}
    print(f"na64reco demo --events {args.events}, {args.repeat} round(s), load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for name, tree in trees.items():
                work = Path(tmp, f"{r}-{len(runs[name]['cold'])}-{abs(hash(name))}")
                work.mkdir()
                cache = work / "numba-cache"
                runs[name]["cold"].append(_run(tree, cache, args.events, work))
                runs[name]["warm"].append(_run(tree, cache, args.events, work))
                c, w = runs[name]["cold"][-1], runs[name]["warm"][-1]
                print(f"  round {r + 1}, {name}: cold {c['cpu']:.1f} s CPU ({c['compile']:.1f} s compiling), "
                      f"warm {w['cpu']:.1f} s CPU")
    print(f"load {os.getloadavg()[0]:.1f}")
    for name, rr in runs.items():
        cold = min(rr["cold"], key=lambda x: x["cpu"])
        warm = min(rr["warm"], key=lambda x: x["cpu"])
        print(f"\n{name} ({trees[name]}):")
        print(f"  cold (empty numba cache): {cold['cpu']:6.1f} s CPU, {cold['wall']:6.1f} s wall")
        print(f"  warm (the cache filled) : {warm['cpu']:6.1f} s CPU, {warm['wall']:6.1f} s wall")
        print(f"  cold / warm             : {cold['cpu'] / warm['cpu']:6.2f} x CPU, "
              f"{cold['wall'] / warm['wall']:.2f} x wall")
        rounds = ", ".join(f"{x['compile']:.1f}" for x in rr["cold"])
        print(f"  numba compiling (cold)  : {min(x['compile'] for x in rr['cold']):6.1f} s CPU (rounds: {rounds})")
        dups = cold["duplicates"]
        print(f"  kernels compiled twice for literal arguments: {len(dups)}{': ' + ', '.join(dups) if dups else ''}")
        by_module = collections.Counter()
        for f, t in cold["own"].items():
            by_module[_module(f)] += t
        print(f"  compile CPU by module (the fastest cold run), top {args.top}:")
        for m, t in by_module.most_common(args.top):
            print(f"    {t:6.1f} s  {m}")
        print(f"  by function, top {args.top}:")
        for f, t in collections.Counter(cold["own"]).most_common(args.top):
            print(f"    {t:6.1f} s  {f}")


if __name__ == "__main__":
    main()
