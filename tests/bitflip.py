"""Single-bit corruption of raw files: where to flip, and what a run then gives.

Used by ``tests/test_bitflips.py`` (a few dozen flips) and
``benchmarks/bench_bitflips.py`` (a thousand).  Flips are drawn per *region* of the
file so that every tree is hit, however small: the baskets of each branch of each
tree (``events``, ``spills``, ``truth``), the metadata string,
the TTree headers, the checksum table (``na64raw_sums``, format version 3; version 2 had
the ``*_sums`` trees), the basket maps (``na64raw_baskets``, version 4), and the rest of the
file (ROOT header, streamers, free space).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import uproot

from na64reco.errors import NA64Error
from na64reco.io.raw import BASKETS_KEY, SUMS_KEY


def regions(path) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges ``[(start, stop), ...]`` of each region of a raw file."""
    out: dict[str, list[tuple[int, int]]] = {}
    covered = []
    with uproot.open(path) as f:
        for name in f.keys(cycle=False):
            key = f.key(name)
            span = (int(key.fSeekKey), int(key.fSeekKey) + int(key.fNbytes))
            obj = f[name]
            if isinstance(obj, uproot.TTree):
                out.setdefault(f"{name} header", []).append(span)
                for branch in obj.branches:
                    n = branch.num_baskets
                    seeks = branch.member("fBasketSeek")[:n]
                    sizes = branch.member("fBasketBytes")[:n]
                    out.setdefault(f"{name} baskets", []).extend(
                        (int(s), int(s) + int(b)) for s, b in zip(seeks, sizes, strict=True) if b > 0)
            else:
                label = {SUMS_KEY: "checksum table", BASKETS_KEY: "basket maps"}.get(name, "metadata")
                out.setdefault(label, []).append(span)
    for spans in out.values():
        covered += spans
    covered.sort()
    rest, pos = [], 0
    for a, b in covered:
        if a > pos:
            rest.append((pos, a))
        pos = max(pos, b)
    size = Path(path).stat().st_size
    if pos < size:
        rest.append((pos, size))
    out["rest of file"] = rest
    return out


def draw_flips(path, n_per_region: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """``n_per_region`` random bit positions (byte * 8 + bit) in each region."""
    flips = []
    for region, spans in regions(path).items():
        lengths = np.array([b - a for a, b in spans], dtype=np.int64)
        if lengths.sum() == 0:
            continue
        for _ in range(n_per_region):
            k = rng.choice(len(spans), p=lengths / lengths.sum())
            byte = int(rng.integers(spans[k][0], spans[k][1]))
            flips.append((region, byte * 8 + int(rng.integers(8))))
    return flips


def flipped_copy(src, dst, bit: int) -> Path:
    data = bytearray(Path(src).read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def result_of(path, run) -> tuple[str, object]:
    """``("error", message)`` for a library error, else ``("result", canonical JSON)``.

    ``run(path)`` returns the processor output of one dataset; anything other than an
    :class:`NA64Error` propagates (an unhandled exception is a failure of its own).
    """
    try:
        out = run(path)
    except NA64Error as exc:
        return "error", str(exc)
    return "result", canonical(out)


def canonical(out: dict) -> str:
    """Everything a run reports, as one comparable string (timings and paths left out)."""
    from na64reco.runner import cutflow_summary

    summary = cutflow_summary(out)
    for entry in summary.values():
        for key in ("wall_time", "files", "skipped", "partial_spills"):
            entry["provenance"].pop(key, None)
    hists = {f"{ds}/{name}": (np.asarray(h.values()).tolist(), np.asarray(h.variances()).tolist())
             for ds, acc in out.items() for group in ("hists", "nminus1")
             for name, h in acc.get(group, {}).items()}
    return json.dumps({"summary": summary, "hists": hists}, sort_keys=True, default=str)


def classify(kind: str, value, path, clean: str) -> str:
    """``error`` (one line naming the file), ``identical``, or what went wrong."""
    if kind == "error":
        return "error" if (str(path) in value and "\n" not in value) else "unclear error"
    return "identical" if value == clean else "SILENT CHANGE"
