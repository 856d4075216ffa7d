"""Benchmark of the fast simulator (prints figures; not a test).

    python benchmarks/bench_simulate.py [--events 100000] [--memory]

1. NA64mu ``mixture`` events per second on one core, *including* writing the raw file.
2. The same arrays written again with bare uproot (``mktree`` + ``extend``, same ZSTD(1)
   compression, same chunking): the ratio tells how much the simulation costs on top of
   the unavoidable write.
3. Bytes per written event on disk.
4. With ``--memory``: peak RSS of fresh processes simulating 50k and 200k beam particles
   (memory must be flat in N: chunked writing).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _simulate(n: int, path: Path, chunk: int) -> tuple[float, object]:
    from na64reco.sim import simulate

    t0 = time.perf_counter()
    result = simulate("na64mu", n, 1, 1, path, chunk_size=chunk)
    return time.perf_counter() - t0, result


def _plain_write(src: Path, dst: Path, chunk_events: int) -> tuple[float, float]:
    """Read every tree of ``src`` into memory, then time a bare uproot write of the same arrays."""
    import uproot

    with uproot.open(src) as f:
        ev = f["events"].arrays()
        tr = f["truth"].arrays(library="np")
        sp = f["spills"].arrays(library="np")
    names = [k for k in ev.fields if not k.startswith("n")]  # uproot re-creates the counters
    types = {k: ev[k].type.content for k in names}
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


def _peak_rss_child(n: int) -> float:
    code = (
        "import resource, tempfile, os\n"
        "from na64reco.sim import simulate\n"
        "d = tempfile.mkdtemp()\n"
        f"simulate('na64mu', {n}, 1, 1, os.path.join(d, 'm.root'), chunk_size=20000)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0  # kB -> MB (Linux)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS for 50k and 200k")
    args = ap.parse_args(argv)
    if args.memory:
        # first, while this process is small: Linux children inherit the parent's ru_maxrss
        for n in (50_000, 200_000):
            print(f"peak RSS, fresh process, N = {n:>7}: {_peak_rss_child(n):7.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _simulate(2000, tmp / "warm.root", args.chunk)  # imports, caches
        cpu0 = time.process_time()
        wall, result = _simulate(args.events, tmp / "sim.root", args.chunk)
        cpu = time.process_time() - cpu0
        size = os.path.getsize(tmp / "sim.root")
        chunk_events = max(1, int(args.chunk * result.n_written / result.n_beam))
        plain, plain_cpu = _plain_write(tmp / "sim.root", tmp / "plain.root", chunk_events)
        print(f"setup na64mu, process mixture, {result.n_beam} beam particles -> {result.n_written} written")
        print(f"simulate + write : {wall:7.2f} s wall, {cpu:7.2f} s CPU -> "
              f"{result.n_beam / wall:8.0f} beam particles/s, {result.n_written / wall:8.0f} written events/s")
        print(f"plain uproot write of the same arrays: {plain:7.2f} s wall, {plain_cpu:7.2f} s CPU")
        print(f"ratio simulate+write / plain write: {wall / plain:5.2f} (wall), {cpu / plain_cpu:5.2f} (CPU)")
        print(f"per core (CPU time): {result.n_beam / cpu:8.0f} beam particles/s")
        print(f"file size        : {size / 1e6:7.2f} MB = {size / result.n_written:6.0f} bytes per written event")
        print(f"this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
