r"""Track-search kernel and calorimeter per-event kernel, before/after in ONE process.

    mkdir -p AB && git archive <before-commit> | tar -x -C AB && mv AB/na64reco AB/na64reco_before
    (rename the imports as bench_reco_ab.py's docstring says)
    python benchmarks/bench_track_calo_ab.py AB RAW.root [ROUNDS]

The inputs of ``tracks._track_kernel`` and ``calo._event_kernel`` are captured while this tree
reconstructs the file (chunks of 50k events); then both trees' kernels run on the same inputs
alternately (the calorimeter kernel on a fresh copy of its ``flags``, which it updates).  Outputs
are checked bit-identical first; printed: the minimum CPU time of each over the rounds.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import uproot


def _identical(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint8) if a.dtype.kind == "f" else a, b.view(np.uint8) if b.dtype.kind == "f" else b)


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    sys.path.insert(0, sys.argv[1])
    from na64reco_before.reco import calo as calo_b
    from na64reco_before.reco.tracking import tracks as tracks_b

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import assemble_events, event_branches, open_raw
    from na64reco.reco import calo as calo_a
    from na64reco.reco.event import reconstruct
    from na64reco.reco.tracking import tracks as tracks_a

    path = sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 9
    with open_raw(path) as raw:
        run, name = raw.run, raw.setup
    setup = load_setup(name, run=run)
    cond = load_conditions(setup, run)
    captured = {"track": [], "calo": []}
    orig_t, orig_c = tracks_a._track_kernel, calo_a._event_kernel

    def cap_t(*args):
        captured["track"].append(args)
        return orig_t(*args)

    def cap_c(*args):
        captured["calo"].append(tuple(a.copy() if i == 5 else a for i, a in enumerate(args)))
        return orig_c(*args)

    tracks_a._track_kernel, calo_a._event_kernel = cap_t, cap_c
    try:
        with uproot.open(path) as f:
            for chunk in f["events"].iterate(event_branches(), step_size=50000):
                reconstruct(assemble_events(chunk, path), setup, cond)
    finally:
        tracks_a._track_kernel, calo_a._event_kernel = orig_t, orig_c

    def run_track(kernel):
        return [kernel(*a) for a in captured["track"]]

    def run_calo(kernel):
        outs = []
        for a in captured["calo"]:
            args = list(a)
            args[5] = a[5].copy()
            outs.append((*kernel(*args), args[5]))
        return outs

    kernels = {"track": (tracks_b._track_kernel, tracks_a._track_kernel, run_track),
               "calo": (calo_b._event_kernel, calo_a._event_kernel, run_calo)}
    for key, (kb, ka, fn) in kernels.items():
        same = all(_identical(tuple(x), tuple(y)) for x, y in zip(fn(kb), fn(ka), strict=True))
        print(f"{key}: outputs {'identical' if same else 'DIFFER'}")
    for key, (kb, ka, fn) in kernels.items():
        t = {"before": [], "after": []}
        for _ in range(rounds):
            for side, k in (("before", kb), ("after", ka)):
                c = time.process_time()
                fn(k)
                t[side].append(time.process_time() - c)
        b, a = min(t["before"]), min(t["after"])
        print(f"{key}: CPU minimum of {rounds} alternating rounds: before {b:.4f} s, after {a:.4f} s ({b / a:.3f}x)")


if __name__ == "__main__":
    main()
