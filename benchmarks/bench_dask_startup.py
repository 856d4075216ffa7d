"""Where the start-up of ``na64reco run --executor dask`` goes, and the two wall times.

    python benchmarks/bench_dask_startup.py data.root [--workers 2] [--repeat 2]

``data.root`` as in the README Quickstart::

    na64reco simulate --setup na64mu --events 100000 --seed 3 --run 1002 --no-truth --output data.root

Part 1 (``--phases``) times each phase of a dask run in this process, with the
cluster made as the runner makes it (:func:`na64reco.runner.local_cluster`), once
without and once with the worker preload (:mod:`na64reco.dask_worker`):

* client imports (runner, coffea, processors);
* cluster start (scheduler, ``--workers`` worker processes, preload);
* worker imports (what the first task would import; ~0 with the preload);
* worker numba load (reconstruct 64 events: loads the kernels from the on-disk cache);
* first run (``run_files`` over the file, workers now warm) and a second run;
* cluster close (the nanny waits for each worker process to exit).

Part 2 (``--walls``) runs the command line ``na64reco run --processor
na64mu_invisible --no-plots --no-progress`` with ``--executor iterative`` and with
``--executor dask --workers N``, interleaved, ``--repeat`` rounds, and prints the wall
times side by side.  ``--compare before=DIR`` times another checkout's code too, in the
same rounds (e.g. ``git archive <commit> | tar -x -C DIR``, for before/after figures).

The machine may be shared: say so when quoting the figures, and repeat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()


def _warm(path: str) -> float:
    """In a worker: reconstruct 64 events of ``path`` (loads the numba kernels)."""
    import time as _time

    t0 = _time.perf_counter()
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import open_raw
    from na64reco.reco.event import reconstruct

    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        reconstruct(raw.events(0, min(64, raw.n_events)), setup, load_conditions(setup, raw.run, None))
    return _time.perf_counter() - t0


def phases(path: str, workers: int, preload: bool, t_imports: float) -> list[tuple[str, float]]:
    from dask.distributed import Client

    from na64reco.dask_worker import import_modules
    from na64reco.runner import RunOptions, fileset_from_files, local_cluster, run_files

    rows = [("client imports (runner, coffea, processors)", t_imports)]
    fileset = fileset_from_files([path])

    def step(label, fn):
        t0 = time.perf_counter()
        value = fn()
        rows.append((label, time.perf_counter() - t0))
        return value

    cluster = step(f"cluster start ({workers} workers{', preload' if preload else ''})",
                   lambda: local_cluster(workers, preload=preload))
    client = step("client connect", lambda: Client(cluster))
    step("worker imports (slowest worker)", lambda: client.run(import_modules))
    step("worker numba load: reconstruct 64 events", lambda: client.run(_warm, path))
    opts = RunOptions("na64mu_invisible", executor="dask", client=client)
    step("first run (workers warm)", lambda: run_files(fileset, opts))
    step("second run", lambda: run_files(fileset, opts))
    step("client close", client.close)
    step("cluster close (worker processes exit)", cluster.close)
    return rows


def walls(path: str, workers: int, repeat: int, checkouts: dict[str, str | None]) -> dict[str, list[float]]:
    """Wall times of the command line, ``{"<checkout> <executor>": [seconds]}``; every round
    runs each checkout and executor once, in turn, so that a changing load hits all alike."""
    exe = str(Path(sys.executable).with_name("na64reco"))
    base = [exe, "run", "--processor", "na64mu_invisible", "--no-plots", "--no-progress"]
    runs = {"iterative": ["--executor", "iterative"], "dask": ["--executor", "dask", "--workers", str(workers)]}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            for name, extra in runs.items():
                for label, pythonpath in checkouts.items():
                    env = dict(os.environ)
                    if pythonpath:
                        env["PYTHONPATH"] = pythonpath
                    key = f"{label} {name}".strip()
                    t0 = time.perf_counter()
                    done = subprocess.run([*base, *extra, "--output", f"{tmp}/{label}{name}{i}", path], env=env,
                                          capture_output=True, text=True)
                    times.setdefault(key, []).append(time.perf_counter() - t0)
                    if done.returncode:
                        raise SystemExit(f"{key} failed:\n{done.stderr}")
                    noise = [line for line in done.stderr.splitlines() if line.strip()]
                    if noise:
                        print(f"  ({key} run {i + 1} wrote {len(noise)} line(s) on stderr: {noise[0][:100]})")
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--phases", action="store_true", help="only part 1")
    p.add_argument("--walls", action="store_true", help="only part 2")
    p.add_argument("--compare", metavar="LABEL=DIR", action="append", default=[],
                   help="also time the command line of another checkout (PYTHONPATH=DIR), e.g. "
                        "before=/tmp/old (an export of an older commit); repeatable")
    args = p.parse_args()
    both = not (args.phases or args.walls)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (a shared machine inflates every figure)")
    if args.phases or both:
        t0 = time.perf_counter()
        import na64reco.runner  # noqa: F401
        import processors.na64mu_invisible  # noqa: F401

        t_imports = time.perf_counter() - t0
        for preload in (False, True):
            print(f"\n-- phases, worker preload {'on' if preload else 'off'}")
            for label, seconds in phases(args.file, args.workers, preload, t_imports):
                print(f"  {label:46s} {seconds:6.2f} s")
    if args.walls or both:
        checkouts = dict(c.split("=", 1) for c in args.compare)
        checkouts = {**checkouts, ("this" if checkouts else ""): None}
        times = walls(args.file, args.workers, args.repeat, checkouts)
        print(f"\n-- na64reco run wall times, s ({args.repeat} rounds, runs interleaved)")
        for name, ts in times.items():
            print(f"  {name:22s} " + "  ".join(f"{t:6.1f}" for t in ts) + f"   median {statistics.median(ts):5.1f}")
        for label in checkouts:
            med = {ex: statistics.median(times[f"{label} {ex}".strip()]) for ex in ("iterative", "dask")}
            print(f"  {label or 'this'}: dask - iterative = {med['dask'] - med['iterative']:+.1f} s")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
