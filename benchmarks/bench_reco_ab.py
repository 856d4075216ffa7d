r"""Whole ``reconstruct`` before/after in ONE process (the per-kernel A/B is bench_kernels_ab.py).

    mkdir -p AB && git archive <before-commit> | tar -x -C AB && mv AB/na64reco AB/na64reco_before
    grep -rl na64reco --include=*.py AB/na64reco_before | xargs sed -i -E 's/\bna64reco\./na64reco_before./g;
        s/\bimport na64reco\b/import na64reco_before/g; s/from na64reco import/from na64reco_before import/g'
    python benchmarks/bench_reco_ab.py AB RAW.root [ROUNDS] [--batch N]

The earlier tree, renamed ``na64reco_before``, and this one reconstruct the same chunks of
50k events alternately with a plain read of the file; printed: the minimum CPU time of each
over the rounds, the speed-up and both read + reconstruction ratios; the outputs (every field)
are checked identical first (where not, each differing field's largest difference is printed).
``--batch N``: each chunk reconstructed in slices of N events, as the processors do
(``RECO_BATCH``, 5000), so that the per-call cost counts as in the chain.
On a loaded machine the separate runs of bench_reco.py scatter
by 20-40 %; this does not.
"""

from __future__ import annotations

import sys
import time

import awkward as ak
import numpy as np
import uproot


def _column(x):
    return np.asarray(ak.to_numpy(ak.fill_none(x, np.nan)) if x.layout.is_option else ak.to_numpy(x))


def _same(a, b) -> bool:
    """Every field (record fields component by component) equal, NaN equal to NaN."""
    for k in a.fields:
        parts = [(a[k][s], b[k][s]) for s in a[k].fields] if a[k].fields else [(a[k], b[k])]
        for x, y in parts:
            x, y = _column(x), _column(y)
            if x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
    return a.fields == b.fields


def _differences(pairs) -> dict[str, str]:
    """Per differing field over all chunks: the largest absolute and relative difference (floats,
    NaN equal to NaN) or the number of differing entries (other types)."""
    out: dict[str, list] = {}
    for a, b in pairs:
        for k in a.fields:
            parts = [(f"{k}.{s}", a[k][s], b[k][s]) for s in a[k].fields] if a[k].fields else [(k, a[k], b[k])]
            for name, x, y in parts:
                x, y = _column(x), _column(y)
                d = out.setdefault(name, [0.0, 0.0, 0, 0])
                if x.dtype.kind == "f" and y.dtype.kind == "f":
                    nan = np.isnan(x) | np.isnan(y)
                    d[2] += int(np.sum(np.isnan(x) != np.isnan(y)))
                    x, y = x[~nan], y[~nan]
                    with np.errstate(invalid="ignore"):  # (inf - inf where equal)
                        diff = np.where(x == y, 0.0, np.abs(x - y))
                    if diff.size:
                        d[0] = max(d[0], float(diff.max()))
                        d[1] = max(d[1], float((diff / np.maximum(np.abs(x), 1e-300)).max()))
                else:
                    d[3] += int(np.sum(x != y)) if x.shape == y.shape else max(x.size, y.size)
    return {k: f"max |diff| {v[0]:.3g}, relative {v[1]:.3g}, NaN mismatches {v[2]}, other mismatches {v[3]}"
            for k, v in out.items() if any(v)}


def main() -> None:
    batch = None
    if "--batch" in sys.argv:
        i = sys.argv.index("--batch")
        batch = int(sys.argv[i + 1])
        del sys.argv[i:i + 2]
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    from pathlib import Path

    if not (Path(sys.argv[1]) / "na64reco_before").is_dir():
        raise SystemExit(f"{sys.argv[1]}: no na64reco_before/ in it (make it as the usage above says)")
    sys.path.insert(0, sys.argv[1])
    from na64reco_before.conditions import load_conditions as conditions_before
    from na64reco_before.geometry import load_setup as setup_before
    from na64reco_before.io.raw import assemble_events as assemble_before
    from na64reco_before.reco.event import reconstruct as reconstruct_before

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import assemble_events, event_branches, open_raw
    from na64reco.reco.event import reconstruct

    path = sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open_raw(path) as raw:
        run, name = raw.run, raw.setup
    s_a = load_setup(name, run=run)
    c_a = load_conditions(s_a, run)
    s_b = setup_before(name, run=run)
    c_b = conditions_before(s_b, run)
    with uproot.open(path) as f:
        chunks = list(f["events"].iterate(event_branches(), step_size=50000))
    ev_a = [assemble_events(c, path) for c in chunks]
    ev_b = [assemble_before(c, path) for c in chunks]
    n = sum(len(e) for e in ev_a)
    if batch:  # the slices as the processors make them (views of the chunk)
        ev_a = [e[a:a + batch] for e in ev_a for a in range(0, len(e), batch)]
        ev_b = [e[a:a + batch] for e in ev_b for a in range(0, len(e), batch)]

    def read():
        with uproot.open(path) as f:
            for _ in f["events"].iterate(event_branches(), step_size=50000):
                pass

    def after():
        return [reconstruct(e, s_a, c_a) for e in ev_a]

    def before():
        return [reconstruct_before(e, s_b, c_b) for e in ev_b]

    outputs = list(zip(before(), after(), strict=True))
    same = all(_same(x, y) for x, y in outputs)
    print(f"{path}: {n} events{f' in slices of {batch}' if batch else ''}; outputs {'identical' if same else 'DIFFER'}")
    for name, text in ({} if same else _differences(outputs)).items():
        print(f"  {name}: {text}")
    del outputs
    t = {"read": [], "before": [], "after": []}
    for _ in range(rounds):
        for key, fn in (("read", read), ("before", before), ("after", after)):
            c = time.process_time()
            fn()
            t[key].append(time.process_time() - c)
    m = {k: min(v) for k, v in t.items()}
    print(f"CPU minimum of {rounds} alternating rounds: plain read {m['read']:.3f} s; reconstruct before "
          f"{m['before']:.3f} s, after {m['after']:.3f} s ({m['before'] / m['after']:.2f}x)")
    for key in ("before", "after"):
        tot = m["read"] + m[key]
        print(f"read + reconstruct {key:6s}: {tot / m['read']:.2f}x the read, {n / tot:.0f} events/s/core")


if __name__ == "__main__":
    main()
