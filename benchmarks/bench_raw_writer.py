"""The raw format's writer against a bare uproot write of the same arrays, in one process.

    python benchmarks/bench_raw_writer.py RAW.root [--rounds 5] [--chunk 50000]

Reads the ``events``, ``truth`` and ``spills`` trees of ``RAW.root`` into memory, then writes them
alternately, round by round, (a) with bare uproot (``mktree`` + ``extend``, ZSTD(1), the chunking of
the simulator) and (b) with :class:`na64reco.io.raw.RawWriter` from the flat arrays the simulator hands
it (content sums, block tables, the basket map read back at close, the metadata).  Prints the minimum
CPU time of each and the writer's own share (b - a): what the simulation's ratio to a bare write pays
for the format.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from na64reco.io.raw import COLLECTIONS, EVENT_SCALARS, N_SAMPLES, RawWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=50_000)
    args = ap.parse_args()
    with uproot.open(args.raw) as f:
        ev = f["events"].arrays()
        tr = f["truth"].arrays(library="np")
        sp = f["spills"].arrays(library="np")
    flat = {k: ak.to_numpy(ev[k]) for k in EVENT_SCALARS}
    for name, fields in COLLECTIONS.items():
        first = next(iter(fields))
        flat[f"n_{name}"] = ak.to_numpy(ak.num(ev[f"{name}_{first}"]))
        for f in fields:
            flat[f"{name}_{f}"] = ak.to_numpy(ak.flatten(ev[f"{name}_{f}"]))
    flat["calo_adc"] = ak.to_numpy(ak.flatten(ev["calo_adc"])).reshape(-1, N_SAMPLES)
    offsets = {name: np.concatenate([[0], np.cumsum(flat[f"n_{name}"])]) for name in COLLECTIONS}
    names = [k for k in ev.fields if not k.startswith("n")]
    types = {k: ev[k].type.content for k in names}
    n, chunk = len(ev), args.chunk
    out = Path(tempfile.mkdtemp())

    def bare():
        with uproot.recreate(out / "bare.root", compression=uproot.ZSTD(1)) as f:
            f.mktree("events", types)
            for s in range(0, n, chunk):
                f["events"].extend({k: ev[k][s:s + chunk] for k in names})
            f.mktree("truth", {k: v.dtype for k, v in tr.items()})
            f["truth"].extend(tr)
            f.mktree("spills", {k: v.dtype for k, v in sp.items()})
            f["spills"].extend(sp)

    def writer():
        with RawWriter(out / "raw.root", setup="na64mu", run=1, has_truth=True) as w:
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                part = {k: flat[k][s:e] for k in EVENT_SCALARS}
                for name, fields in COLLECTIONS.items():
                    o = offsets[name]
                    part[f"n_{name}"] = flat[f"n_{name}"][s:e]
                    part.update({f"{name}_{f}": flat[f"{name}_{f}"][o[s]:o[e]] for f in fields})
                part["calo_adc"] = flat["calo_adc"][offsets["calo"][s]:offsets["calo"][e]]
                w.write_events(part)
            w.write_truth(tr)
            w.write_spills(sp)

    cpu = {"bare": [], "writer": []}
    for _ in range(args.rounds):
        for key, fn in (("bare", bare), ("writer", writer)):
            c0 = time.process_time()
            fn()
            cpu[key].append(time.process_time() - c0)
    a, b = min(cpu["bare"]), min(cpu["writer"])
    print(f"{args.raw}: {n} events, chunks of {chunk}, minimum CPU of {args.rounds} alternated rounds")
    print(f"bare uproot write: {a:.3f} s;  RawWriter: {b:.3f} s ({b / a:.2f}x);  the format's own work: {b - a:+.3f} s")


if __name__ == "__main__":
    main()
