r"""The full chain (``run_files``, iterative) before/after in ONE process, alternated with the plain read.

    mkdir -p AB && git archive <before-commit> | tar -x -C AB
    cd AB && mv na64reco na64reco_before && mv processors processors_before
    grep -rl 'na64reco\|processors' --include=*.py na64reco_before processors_before | xargs sed -i -E \
        's/\bna64reco\./na64reco_before./g; s/\bimport na64reco\b/import na64reco_before/g;
         s/from na64reco import/from na64reco_before import/g; s/\bprocessors\./processors_before./g;
         s/from processors import/from processors_before import/g; s/\bimport processors\b/import processors_before/g'
    python benchmarks/bench_chain_ab.py AB RAW.root [ROUNDS] [--chunksize 50000] [--steps] [--heap]

The earlier tree (renamed ``na64reco_before`` / ``processors_before``) and this one run the same
file through ``run_files`` (iterative executor) alternately with a plain uproot read of the
``events`` tree (all branches: at once, as ``bench_chain.py``, and in the chain's chunks); printed: the
minimum CPU time of each over the rounds, the speed-up and the chain / read ratios against both reads
(quote the one against the faster read: on a host where allocating the whole file's arrays at once
costs page faults, the read at once is the slower baseline).  The outputs are compared first
(:func:`canonical`: every cut-flow and N-1 row with its weighted sums, the regions, the
provenance with its per-file records, every histogram's axes and sums with flow bins; the
wall time, code version and the selection file's path left out, the conditions files' paths
from their ``calib/`` on: the two trees are in different folders): the script stops if they
differ.  ``--steps``: the CPU time of each step of the new chain as well (timers around the
functions; the rounds' minimum).  Separate runs of bench_chain.py on the shared machine
scatter by 20-40 % (the read's CPU time with them); alternated rounds in one process do not.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import uproot
from step_timers import cpu_step_timers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def canonical(out: dict) -> str:
    """Everything ``run_files`` returns for each dataset, as one string (floats exactly: JSON
    writes their shortest round-trip repr), but the wall time, the code version, the
    selection file's path and the provenance fields that are None (a field added since, e.g.
    ``bad_spills_sha256`` without a list); the conditions files from their ``calib/`` folder on."""
    res = {}
    for ds, acc in out.items():
        prov = acc["provenance"].to_dict()
        for key in ("wall_time", "code_version", "selection_file"):
            prov.pop(key, None)
        prov = {k: v for k, v in prov.items() if v is not None}  # a field one tree lacks reads as None in the other
        prov["conditions"] = [c[c.rindex("calib/"):] if "calib/" in c else c for c in prov["conditions"]]
        cf = acc["cutflow"]
        entry = {"provenance": prov,
                 "cutflow": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(cf).items()},
                 "regions": {k: [v.n, v.sumw, v.sumw2, v.blinded] for k, v in acc["regions"].items()}}
        for group in ("hists", "nminus1"):
            entry[group] = {name: [repr(h.axes), str(h.storage_type),
                                   np.asarray(h.view(flow=True).value).tolist(),
                                   np.asarray(h.view(flow=True).variance).tolist()]
                            for name, h in sorted(acc[group].items())}
        res[ds] = entry
    return json.dumps(res, sort_keys=True, default=str)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="folder holding na64reco_before/ and processors_before/")
    ap.add_argument("file")
    ap.add_argument("rounds", type=int, nargs="?", default=7)
    ap.add_argument("--chunksize", type=int, default=50000)
    ap.add_argument("--processor", default="na64mu_invisible")
    ap.add_argument("--steps", action="store_true")
    ap.add_argument("--heap", action="store_true",
                    help="keep freed memory in the heap first, as a na64reco command's process does "
                         "(na64reco.sim.heap; the reads and both chains alike)")
    args = ap.parse_args()
    if args.heap:
        from na64reco.sim.heap import retain_freed_memory

        retain_freed_memory()
    if not (Path(args.before) / "na64reco_before").is_dir():
        raise SystemExit(f"{args.before}: no na64reco_before/ in it (make it as the usage above says)")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
    sys.path.insert(0, args.before)
    from na64reco_before.runner import RunOptions as OptionsBefore
    from na64reco_before.runner import run_files as run_before

    import na64reco.runner as runner
    from na64reco.runner import RunOptions

    path = args.file
    opts_b = OptionsBefore(args.processor, executor="iterative", chunksize=args.chunksize)
    opts_a = RunOptions(args.processor, executor="iterative", chunksize=args.chunksize)

    def read():
        with uproot.open(path) as f:
            return len(f["events"].arrays(library="ak"))

    def read_chunks():  # the same read in the chain's chunks (smaller arrays, fewer page faults)
        with uproot.open(path) as f:
            return sum(len(a) for a in f["events"].iterate(step_size=args.chunksize))

    def before():
        return run_before({"ab": [path]}, opts_b)

    def after():
        return runner.run_files({"ab": [path]}, opts_a)

    same = canonical(before()) == canonical(after())
    n = read()
    print(f"{path}: {n} events, chunks of {args.chunksize}; outputs {'identical' if same else 'DIFFER'}")
    if not same:
        raise SystemExit(1)
    with cpu_step_timers(_step_patches()) if args.steps else contextlib.nullcontext() as spent:
        t = _rounds(args.rounds, read, read_chunks, before, after, spent)
    _report(args, t, spent is not None)


def _rounds(rounds, read, read_chunks, before, after, spent) -> dict:
    """CPU s of each round's reads (whole, in chunks), chain before and after (and the after chain's steps)."""
    t = collections.defaultdict(list)
    for _ in range(rounds):
        for key, fn in (("read", read), ("read_chunks", read_chunks), ("before", before), ("after", after)):
            if spent is not None:
                spent.clear()
            c = time.process_time()
            fn()
            t[key].append(time.process_time() - c)
            if spent is not None and key == "after":
                for k, v in spent.items():
                    t[k].append(v)
    return t


def _report(args, t: dict, steps: bool) -> None:
    r, b, a = (min(t[k]) for k in ("read", "before", "after"))
    print(f"CPU s, minimum of {args.rounds} alternated rounds: plain read {r:.3f}, chain before {b:.3f}, "
          f"after {a:.3f} ({b / a:.3f}x); chain / read: before {b / r:.2f}x, after {a / r:.2f}x")
    rc = min(t["read_chunks"])
    print(f"  the plain read in the chain's chunks of {args.chunksize}: {rc:.3f}; chain / that read: before "
          f"{b / rc:.2f}x, after {a / rc:.2f}x; against the faster of the two reads: after {a / min(r, rc):.2f}x")
    print("  medians: read {:.3f}, read in chunks {:.3f}, before {:.3f}, after {:.3f}".format(
        *(sorted(t[k])[len(t[k]) // 2] for k in ("read", "read_chunks", "before", "after"))))
    paired = sorted(x / y for x, y in zip(t["before"], t["after"], strict=True))
    print(f"  paired (each round's before / after): median {paired[len(paired) // 2]:.3f}x, "
          f"range {paired[0]:.3f}-{paired[-1]:.3f}x")
    if steps:
        print("after, CPU ms per step (minimum over the rounds):")
        step_keys = (k for k in t if k not in ("read", "read_chunks", "before", "after"))
        for k in sorted(step_keys, key=lambda k: -min(t[k])):
            print(f"  {k:<34}{min(t[k]) * 1e3:9.1f}")


def _step_patches() -> list:
    """(object, function, label) of the new chain's steps (module functions and processor methods)."""
    import na64reco.io.raw as raw
    import na64reco.runner as runner
    import processors.base as base

    groups = ((runner, ("check_files", "read_chunk", "make_processor")),
              (base, ("assemble_events", "reconstruct_stage", "concatenate_records", "attach_truth_stage",
                      "cut_masks", "apply_blinding", "region_mask")),
              (base.InvisibleProcessor, ("process_chunk", "verify", "attach_truth", "fill_histograms",
                                         "fill_nminusone", "count_regions", "provenance", "postprocess")),
              (raw.RawFile, ("truth",)))
    return [(obj, name, f"{obj.__name__}.{name}") for obj, names in groups for name in names]


if __name__ == "__main__":
    main()
