"""Content checksums of the raw format.

Every tree ``T`` of a raw file has a *block table*: one row per block -- the entries
written by one ``extend`` call, i.e. one basket cluster -- holding ``entry_start``,
``entry_stop`` and, for every branch ``b`` of ``T``, the 64-bit sum ``b`` of the block's
content (:func:`content_sum`).  Format version 3 stores the tables of all trees in one
JSON string, ``na64raw_sums`` (:func:`encode_table`, :func:`decode_table`), whose
SHA-256 the metadata carries; version 2 stored each in a companion tree ``T_sums``
(reading one TTree header costs ~3-8 ms, the string ~0.1 ms).  The metadata carries the
entry count of every tree and a checksum of itself (:func:`meta_checksum`).

A reader verifies what it reads: a range of entries is widened to whole blocks, their
sums are recomputed from the decoded arrays and compared.  A single flipped bit in
the content changes one value by +-2^k and so the sum (mod 2^64); a flip in the
compressed bytes garbles many values or fails to decompress; a flip in the ROOT
structure fails to read, changes an entry count or changes content.  Every case
ends as a :class:`~na64reco.errors.RawFormatError` naming the file, the tree and the
entry range -- never as a silently different result.

The sum of a branch is taken over its flattened content (jagged branches: the values,
their counts being checked through the counter branches ``n<collection>``), as the
little-endian bytes of the branch's own type read in 8-byte words: one pass over the
decoded bytes at memory speed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import awkward as ak
import numpy as np

from na64reco.errors import RawFormatError

SUMS_SUFFIX = "_sums"
BOUNDS = ("entry_start", "entry_stop")


def sums_tree(tree: str) -> str:
    """Name of the checksum tree of ``tree``."""
    return tree + SUMS_SUFFIX


def _flat(values) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat content and (jagged) entry offsets into it, of a numpy or awkward array."""
    if isinstance(values, np.ndarray):
        return values.reshape(-1), None
    layout = ak.to_layout(values)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets.data).astype(np.int64, copy=False)
        return np.asarray(layout.content.data), offsets  # no copy: the reader's own buffers
    arr = ak.Array(layout)
    if arr.ndim == 1:
        return ak.to_numpy(arr), None
    counts = ak.to_numpy(ak.num(arr, axis=1))
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return ak.to_numpy(ak.flatten(arr, axis=None)), offsets


def content_sum(flat: np.ndarray) -> np.uint64:
    """64-bit wrapping sum of the bytes of ``flat`` (little-endian, in the branch's own
    type), read as 8-byte words, the last one zero-padded.  One pass at memory speed."""
    data = np.ascontiguousarray(flat)
    if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and np.little_endian is False):
        data = data.astype(data.dtype.newbyteorder("<"))
    raw = data.reshape(-1).view(np.uint8)
    n_words = raw.size // 8
    total = np.sum(raw[: n_words * 8].view(np.uint64), dtype=np.uint64) if n_words else np.uint64(0)
    tail = raw[n_words * 8:]
    if tail.size:
        last = np.frombuffer(tail.tobytes() + bytes(8 - tail.size), np.uint64)
        total = np.add(np.asarray([total], np.uint64), last)[0]  # wraps, as the sum does (no scalar warning)
    return np.uint64(total)


def block_sums(values, bounds: np.ndarray) -> np.ndarray:
    """Sum of ``values`` (one branch, entries 0..n) in each block ``[bounds[i], bounds[i+1])``."""
    flat, entry_offsets = _flat(values)
    offsets = bounds if entry_offsets is None else entry_offsets[bounds]
    return np.array([content_sum(flat[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)],
                    dtype=np.uint64)


def meta_checksum(meta: Mapping) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``meta`` without its checksum."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def table_checksum(text: str) -> str:
    """SHA-256 (first 16 hex digits) of the block-table string, kept in the metadata."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_table(tables: Mapping[str, Mapping[str, list]]) -> str:
    """The JSON string of the block tables of a file: ``{tree: {"entry_start": [...],
    "entry_stop": [...], "sums": {branch: [...]}}}``, one value per block, sums as
    unsigned 64-bit integers."""
    out = {tree: {"entry_start": [int(v) for v in t["entry_start"]], "entry_stop": [int(v) for v in t["entry_stop"]],
                  "sums": {b: [int(v) for v in vals] for b, vals in t["sums"].items()}}
           for tree, t in tables.items()}
    return json.dumps(out, separators=(",", ":"))


def decode_table(text: str, entries: Mapping[str, int], branches: Mapping[str, list[str]], source) -> dict[str, Blocks]:
    """The :class:`Blocks` of every tree from the string of :func:`encode_table`, checked:
    exactly the trees of ``entries`` (their entry counts, from the checked metadata), the
    ``branches`` of each, blocks covering each tree."""
    try:
        tables = json.loads(text)
        if not isinstance(tables, dict) or set(tables) != set(entries):
            raise ValueError(f"trees {sorted(tables) if isinstance(tables, dict) else tables!r}, "
                             f"expected {sorted(entries)}")
        out = {}
        for tree, t in tables.items():
            sums = t["sums"]
            if set(sums) != set(branches[tree]):
                raise ValueError(f"tree {tree!r} has sums of {sorted(sums)}, expected {sorted(branches[tree])}")
            starts, stops = np.array(t["entry_start"], np.int64), np.array(t["entry_stop"], np.int64)
            table = np.array([sums[b] for b in branches[tree]], dtype=np.uint64).reshape(len(sums), -1).T
            if table.shape[0] != len(starts):
                raise ValueError(f"tree {tree!r}: {table.shape[0]} rows of sums for {len(starts)} blocks")
            out[tree] = Blocks.from_table(tree, starts, stops, tuple(branches[tree]), table, int(entries[tree]),
                                          source)
        return out
    except RawFormatError:
        raise
    except Exception as exc:  # malformed JSON, wrong types, values out of range
        raise RawFormatError(f"{source}: unreadable checksum table: {type(exc).__name__}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    """One shared tuple per list of branch names (the runner keeps a table per file)."""
    return names


@dataclass(frozen=True)
class Blocks:
    """The block table of one tree: boundaries and the stored sums of every branch
    (``table[i, k]``: block ``i``, branch ``names[k]``; ~0.5 kB for a one-block tree)."""

    tree: str
    starts: np.ndarray
    stops: np.ndarray
    names: tuple[str, ...]
    table: np.ndarray

    @property
    def sums(self) -> dict[str, np.ndarray]:
        """The stored sums by branch."""
        return {b: self.table[:, k] for k, b in enumerate(self.names)}

    @classmethod
    def from_table(cls, tree: str, starts, stops, names: tuple[str, ...], table: np.ndarray, n_entries: int,
                   source) -> Blocks:
        starts = np.asarray(starts, np.int64)
        stops = np.asarray(stops, np.int64)
        contiguous = len(starts) == len(stops) and ((len(starts) == 0 and n_entries == 0) or (
            len(starts) > 0 and starts[0] == 0 and np.all(starts[1:] == stops[:-1])
            and np.all(stops > starts) and stops[-1] == n_entries))
        if not contiguous:
            raise RawFormatError(f"{source}: checksum blocks of tree {tree!r} do not cover its "
                                 f"{n_entries} entries (corrupt file)")
        return cls(tree, starts, stops, _names(tuple(names)), np.ascontiguousarray(table, dtype=np.uint64))

    @classmethod
    def from_arrays(cls, tree: str, arrays: Mapping[str, np.ndarray], n_entries: int, source) -> Blocks:
        """From the branches of a version-2 ``<tree>_sums`` tree."""
        names = tuple(k for k in arrays if k not in BOUNDS)
        table = np.array([np.asarray(arrays[k]).astype(np.uint64) for k in names], dtype=np.uint64)
        table = table.reshape(len(names), -1).T
        return cls.from_table(tree, arrays["entry_start"], arrays["entry_stop"], names, table, n_entries, source)

    def covering(self, start: int, stop: int) -> tuple[int, int]:
        """Indices ``[i, j)`` of the blocks that overlap entries ``[start, stop)``."""
        i = int(np.searchsorted(self.stops, start, side="right"))
        j = int(np.searchsorted(self.starts, stop, side="left"))
        return i, max(i, j)

    def widen(self, start: int, stop: int) -> tuple[int, int]:
        """The smallest range of whole blocks that contains ``[start, stop)``."""
        if stop <= start:
            return start, start
        i, j = self.covering(start, stop)
        return int(self.starts[i]), int(self.stops[j - 1])

    def verify(self, arrays: Mapping[str, object], start: int, stop: int, source, branches=None) -> None:
        """Check ``arrays`` (entries ``[start, stop)``, whole blocks) against the stored sums
        (of the ``branches`` given, default all)."""
        i, j = self.covering(start, stop)
        if j == i or stop <= start:  # (an empty range: nothing to check)
            return
        if self.starts[i] != start or self.stops[j - 1] != stop:
            raise ValueError(f"range {start}-{stop} is not made of whole blocks")  # a bug, not a bad file
        bounds = np.append(self.starts[i:j], self.stops[j - 1]) - start
        names = set(arrays.fields if isinstance(arrays, ak.Array) else arrays.keys())
        for k, branch in enumerate(self.names):
            if branches is not None and branch not in branches:
                continue
            if branch not in names:
                raise RawFormatError(f"{source}: tree {self.tree!r} lacks branch {branch!r} of its checksums")
            got = block_sums(arrays[branch], bounds)
            bad = np.flatnonzero(got != self.table[i:j, k])
            if bad.size:
                k = i + int(bad[0])
                raise RawFormatError(
                    f"{source}: checksum mismatch in tree {self.tree!r}, branch {branch!r}, entries "
                    f"{int(self.starts[k])}-{int(self.stops[k])}: the file is corrupt")


def verify_chunk(blocks: Blocks, arrays: Mapping[str, object], start: int, stop: int, source,
                 read: Callable[[int, int], Mapping[str, object]]) -> None:
    """Verify the entries ``[start, stop)`` held in ``arrays``.

    The range must lie inside the tree and every branch of ``arrays`` hold ``stop - start``
    entries.  Whole blocks inside the range are checked from ``arrays``; a block cut by the
    range is read whole with ``read(block_start, block_stop)``, checked, and the part of it
    the range covers compared value by value with ``arrays`` (chunks aligned to the basket
    clusters, as the runner makes them, never need that): a chunk is the content of the
    entries it names, or an error, also when it covers no whole block.
    """
    if isinstance(arrays, ak.Array):  # (a record array: its fields)
        arrays = {f: arrays[f] for f in arrays.fields}
    n_tree = int(blocks.stops[-1]) if len(blocks.stops) else 0
    if not 0 <= start <= stop <= n_tree:
        raise RawFormatError(f"{source}: entries {start}-{stop} are not inside tree {blocks.tree!r} "
                             f"(entries 0-{n_tree})")
    missing = [b for b in blocks.names if b not in arrays]
    if missing:
        raise RawFormatError(f"{source}: tree {blocks.tree!r}: the chunk lacks branch {missing[0]!r} of its checksums")
    for name, values in arrays.items():
        if _length(values) != stop - start:
            raise RawFormatError(f"{source}: tree {blocks.tree!r}, branch {name!r}: the chunk holds "
                                 f"{_length(values)} entries for entries {start}-{stop} ({stop - start})")
    if start == stop:
        return  # (an empty chunk holds nothing to compare)
    lo, hi = blocks.widen(start, stop)
    if (lo, hi) == (start, stop):
        blocks.verify(arrays, start, stop, source)
        return
    i, j = blocks.covering(start, stop)
    inner = [k for k in range(i, j) if blocks.starts[k] >= start and blocks.stops[k] <= stop]
    if inner:
        a, b = int(blocks.starts[inner[0]]), int(blocks.stops[inner[-1]])
        blocks.verify({k: v[a - start:b - start] for k, v in arrays.items()}, a, b, source)
    for k in range(i, j):
        if k not in inner:
            a, b = int(blocks.starts[k]), int(blocks.stops[k])
            whole = read(a, b)
            blocks.verify(whole, a, b, source)
            lo, hi = max(a, start), min(b, stop)  # the part of the block the chunk holds
            for name in blocks.names:
                if not same_content(arrays[name][lo - start:hi - start], whole[name][lo - a:hi - a]):
                    raise RawFormatError(f"{source}: tree {blocks.tree!r}, branch {name!r}, entries {lo}-{hi}: "
                                         "the chunk's content is not the file's")


def _length(values) -> int:
    """Entries of a numpy array, an awkward array or layout."""
    return int(values.shape[0]) if isinstance(values, np.ndarray) else len(values)


def same_content(x, y) -> bool:
    """Whether two branches' entries (numpy or awkward, flat or jagged) hold the same values in
    the same lists (NaN equal to NaN; the dtypes may differ in byte order only)."""
    fx, ox = _flat(x)
    fy, oy = _flat(y)
    if (ox is None) != (oy is None) or fx.dtype.newbyteorder("=") != fy.dtype.newbyteorder("="):
        return False
    if ox is not None:
        if len(ox) != len(oy) or not np.array_equal(np.diff(ox), np.diff(oy)):
            return False
        fx, fy = fx[ox[0]:ox[-1]], fy[oy[0]:oy[-1]]
    return fx.shape == fy.shape and bool(np.array_equal(fx, fy, equal_nan=fx.dtype.kind in "fc"))
