"""Peak memory and rate of ``na64reco run`` against the size of one input file.

    python benchmarks/bench_memory_scaling.py [--mot 1e5 1e6 1e7] [--workdir DIR]
        [--trigger calibration] [--chunksize 50000] [--processor na64mu_invisible]

For each size, simulates ``DIR/mot<N>.root`` once if missing (``na64reco simulate --setup
na64mu --seed 1 --run 1001``; the calibration trigger writes ~94 % of the beam muons, so a
1e6-MOT file holds ~0.94e6 events, ~0.7 kB each on disk), then runs

    na64reco run --processor P --no-plots --no-progress --chunksize C --output OUT FILE

in a child process and prints: events, the run's rate (events / ``provenance.wall_time``,
i.e. the processing after the file check, imports and JIT excluded), the whole command's
wall time, and its peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``),
each also as a ratio to the first (smallest) size of the same invocation.  Flat memory
means a peak-RSS ratio ~1 at every size; linear cost means a rate ratio ~1.
Run on an otherwise idle machine: the rate depends on the load, the memory does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def na64reco_cmd() -> list[str]:
    return [sys.executable, "-m", "na64reco.cli"]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def simulate(path: Path, mot: int, trigger: str) -> None:
    if path.exists():
        return
    tmp = path.with_suffix(".part.root")
    cmd = [*na64reco_cmd(), "simulate", "--setup", "na64mu", "--events", str(mot), "--seed", "1",
           "--run", "1001", "--trigger", trigger, "--quiet", "--output", str(tmp)]
    print(f"simulating {mot:.0e} MOT -> {path} ...", flush=True)
    subprocess.run(cmd, check=True, env=child_env())
    tmp.rename(path)


def run_once(path: Path, processor: str, chunksize: int) -> dict:
    """Run the CLI in a child; its wall time, peak RSS (MB) and provenance."""
    out = Path(tempfile.mkdtemp(prefix="na64mem-")) / "out"
    cmd = [*na64reco_cmd(), "run", "--processor", processor, "--no-plots", "--no-progress",
           "--chunksize", str(chunksize), "--output", str(out), str(path)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {os.waitstatus_to_exitcode(status)}")
    prov = json.loads((out / "provenance.json").read_text())
    shutil.rmtree(out.parent)
    (ds,) = prov.values()
    return {"events": ds["events_processed"], "run_s": ds["wall_time"], "wall_s": wall,
            "rss_mb": usage.ru_maxrss / 1024}  # Linux: ru_maxrss in kB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mot", nargs="+", type=float, default=[1e5, 1e6], help="beam muons per file")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "na64reco-memory-scaling")
    ap.add_argument("--trigger", default="calibration", choices=("physics", "calibration"))
    ap.add_argument("--chunksize", type=int, default=50_000)
    ap.add_argument("--processor", default="na64mu_invisible")
    args = ap.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for mot in sorted(int(m) for m in args.mot):
        path = args.workdir / f"{args.trigger}-mot{mot}.root"
        simulate(path, mot, args.trigger)
        r = run_once(path, args.processor, args.chunksize)
        r["mot"] = mot
        rows.append(r)
        print(f"  {mot:.0e} MOT: {r['events']} events, {r['events'] / r['run_s']:.0f} events/s, "
              f"peak RSS {r['rss_mb']:.0f} MB", flush=True)

    ref = rows[0]
    ref_rate = ref["events"] / ref["run_s"]
    print(f"\nna64reco run --processor {args.processor} --no-plots --no-progress --chunksize {args.chunksize} "
          f"(one file, iterative)")
    print(f"{'MOT':>8}{'events':>10}{'events/s':>10}{'rate/ref':>10}{'cmd wall s':>12}"
          f"{'peak RSS MB':>13}{'RSS/ref':>9}")
    for r in rows:
        rate = r["events"] / r["run_s"]
        print(f"{r['mot']:>8.0e}{r['events']:>10d}{rate:>10.0f}{rate / ref_rate:>10.2f}{r['wall_s']:>12.1f}"
              f"{r['rss_mb']:>13.0f}{r['rss_mb'] / ref['rss_mb']:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
