"""Reading a tree's entries from its baskets directly, by a map of where they are.

uproot reads entries of a tree by deserialising the tree's header first: the ``TTree`` and
its ``TBranch`` objects (~290 objects for the 20 branches of ``events``, ~9 ms for a small
file), then, branch by branch, its generic Python machinery (~0.5 ms a branch).  For the
small files of a muon campaign that is most of the cost of a chunk read
(docs/performance.md, "The chunk read from the basket map").  The runner's file check reads
that header anyway; :meth:`TreeBaskets.of_tree` keeps from it what a read needs -- each
branch's number type and the position, size and entry range of each of its baskets -- and
:meth:`TreeBaskets.read` then reads entries with one ``pread``, one key-header parse and one
decompression per basket (ZSTD by ``zstandard``, any other algorithm by
:func:`uproot.compression.decompress`).  The maps of a raw file of format version 4 are
written in it (``na64raw_baskets``): then no header is read at all.

Scope: branches of one fixed-size number type (uproot's ``AsDtype``) and variable-length
lists of one (``AsJagged(AsDtype)`` without per-entry headers): the branches of the raw
format.  A tree with any other branch, or with baskets kept inside its header (a file not
closed properly), has no map (``of_tree`` gives None) and is read by uproot.

Every basket read is checked against the map and against itself: its key's class is
``TBasket``, its name the branch's, its position (``fSeekKey``) and size (``fNbytes``) those
of the map; its entry count (``fNevBuf``) that of the map; it decompresses to the key's
``fObjlen``; its content fits its entries (a fixed-size branch: entries x item size; a
list branch: offsets from 0 increasing by whole items up to the content's end).  A file
changed since its map was made, truncated or damaged gives a :class:`RawFormatError`
naming the file, the branch and the basket, never other numbers; the chunk's content
checksums (:mod:`.checksum`) are verified after as for any read.

The arrays are those of uproot's ``arrays(..., how=dict)`` (same types and values:
``tests/test_io_baskets.py``): numbers in the machine's byte order; a list branch as an
awkward ``ListOffsetArray`` with 64-bit offsets.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import awkward as ak
import numpy as np

from na64reco.errors import RawFormatError

#: a TKey's header up to its position fields: fNbytes, fVersion, fObjlen, fDatime, fKeylen, fCycle
_KEY = struct.Struct(">ihiIhh")
#: a TBasket's own members after its key's strings: fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast, flag
_BASKET = struct.Struct(">hiiiib")


@dataclass(frozen=True, eq=False)
class TreeBaskets:
    """Where the baskets of each branch of one tree are (see the module doc).

    ``first[i]:first[i + 1]`` are the baskets of branch ``names[i]`` in the arrays ``seek``
    (byte position in the file), ``nbytes`` (size on disk, key included) and ``start``,
    ``stop`` (entry range), in entry order."""

    tree: str
    entries: int
    names: tuple[str, ...]
    dtypes: tuple[str, ...]  # numpy type strings as stored (big-endian)
    jagged: tuple[bool, ...]
    first: np.ndarray
    seek: np.ndarray
    nbytes: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def __eq__(self, other) -> bool:
        if not isinstance(other, TreeBaskets):
            return NotImplemented
        return ((self.tree, self.entries, self.names, self.dtypes, self.jagged)
                == (other.tree, other.entries, other.names, other.dtypes, other.jagged)
                and all(np.array_equal(getattr(self, k), getattr(other, k))
                        for k in ("first", "seek", "nbytes", "start", "stop")))

    __hash__ = object.__hash__

    @classmethod
    def of_tree(cls, tree) -> TreeBaskets | None:
        """The map of an uproot ``TTree`` (its header already read), or None if a branch is not
        of the scope of this module (then read the tree with uproot)."""
        import uproot

        names, dtypes, jagged, first = [], [], [], [0]
        seek, nbytes, start, stop = [], [], [], []
        entries = int(tree.num_entries)
        for branch in tree.branches:
            interp = branch.interpretation
            is_list = isinstance(interp, uproot.interpretation.jagged.AsJagged)
            inner = interp.content if is_list else interp
            if (type(inner) is not uproot.interpretation.numerical.AsDtype or inner.from_dtype.fields is not None
                    or inner.from_dtype.shape != () or (is_list and interp.header_bytes != 0)
                    or len(branch.branches) != 0 or len(branch.embedded_baskets or ()) != 0):
                return None
            n = int(branch.num_baskets)
            edges = np.asarray(branch.member("fBasketEntry")[:n + 1], np.int64)
            if n == 0 or edges.size != n + 1 or edges[0] != 0 or edges[-1] != entries or np.any(np.diff(edges) <= 0):
                return None
            names.append(branch.name)
            dtypes.append(inner.from_dtype.str)
            jagged.append(is_list)
            seek.append(np.asarray(branch.member("fBasketSeek")[:n], np.int64))
            nbytes.append(np.asarray(branch.member("fBasketBytes")[:n], np.int64))
            start.append(edges[:-1])
            stop.append(edges[1:])
            first.append(first[-1] + n)
        if not names:
            return None
        return cls(str(tree.name), entries, tuple(names), tuple(dtypes), tuple(jagged), np.array(first, np.int64),
                   *(np.concatenate(a) for a in (seek, nbytes, start, stop)))

    def to_dict(self) -> dict:
        """The map as JSON-able lists (what the raw format's checksum table keeps of each tree,
        docs/raw-format.md)."""
        return {"branches": list(self.names), "types": list(self.dtypes), "jagged": [int(j) for j in self.jagged],
                **{k: getattr(self, k).tolist() for k in ("first", "seek", "nbytes", "start", "stop")}}

    @classmethod
    def from_dict(cls, tree: str, d: dict, entries: int, source) -> TreeBaskets:
        """The map of :meth:`to_dict`, checked to describe ``entries`` entries: every branch's
        baskets contiguous from 0 to ``entries``, positions and sizes positive; a
        :class:`RawFormatError` naming ``source`` and the tree otherwise."""
        try:
            names = tuple(str(n) for n in d["branches"])
            dtypes = tuple(np.dtype(t).str for t in d["types"])
            jagged = tuple(bool(j) for j in d["jagged"])
            arrays = {k: np.array(d[k], np.int64) for k in ("first", "seek", "nbytes", "start", "stop")}
            first = arrays["first"]
            n_baskets = arrays["seek"].size
            if not (len(names) == len(dtypes) == len(jagged) == first.size - 1 > 0):
                raise ValueError(f"{len(names)} branches, {len(dtypes)} types, {len(jagged)} list flags, "
                                 f"{first.size} basket offsets")
            if any(np.dtype(t).kind not in "biuf" or np.dtype(t).shape != () or np.dtype(t).byteorder not in ">|"
                   for t in dtypes):
                raise ValueError(f"types {dtypes} are not all numbers as ROOT stores them (big-endian)")
            if any(arrays[k].shape != (n_baskets,) for k in ("nbytes", "start", "stop")) or first[0] != 0 \
                    or first[-1] != n_baskets or np.any(np.diff(first) <= 0):
                raise ValueError("basket arrays of different lengths or branch offsets out of order")
            if np.any(arrays["seek"] <= 0) or np.any(arrays["nbytes"] <= 0):
                raise ValueError("basket positions and sizes must be positive")
            for i in range(len(names)):
                a, b = first[i], first[i + 1]
                starts, stops = arrays["start"][a:b], arrays["stop"][a:b]
                if (starts[0] != 0 or stops[-1] != entries or np.any(stops[:-1] != starts[1:])
                        or np.any(stops <= starts)):
                    raise ValueError(f"the baskets of {names[i]!r} do not cover entries 0-{entries} in order")
        except (KeyError, TypeError, ValueError) as exc:
            raise RawFormatError(f"{source}: unreadable basket map of tree {tree!r} in the checksum table: "
                                 f"{type(exc).__name__}: {exc}") from None
        return cls(tree, int(entries), names, dtypes, jagged, first, arrays["seek"], arrays["nbytes"],
                   arrays["start"], arrays["stop"])

    def common_entry_offsets(self) -> list[int]:
        """The entries where every branch starts a basket, and the end (uproot's
        ``TTree.common_entry_offsets``): where chunks can be cut without splitting a basket."""
        common = None
        for i in range(len(self.names)):
            starts = set(self.start[self.first[i]:self.first[i + 1]].tolist())
            common = starts if common is None else common & starts
        return sorted(common) + [self.entries]

    def read(self, path, names, entry_start: int, entry_stop: int) -> dict:
        """``{name: array}`` of the entries ``[entry_start, entry_stop)`` of the branches ``names``
        of the local file ``path`` (the arrays of uproot's ``arrays(names, entry_start, entry_stop,
        how=dict)``); a :class:`RawFormatError` for a basket that is not as the map says."""
        if not 0 <= entry_start <= entry_stop <= self.entries:
            raise ValueError(f"{path}: entries {entry_start}-{entry_stop} outside tree {self.tree!r}'s "
                             f"0-{self.entries}")
        index = {name: i for i, name in enumerate(self.names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise RawFormatError(f"{path}: tree {self.tree!r} has no branch(es) {', '.join(unknown)} in its basket map")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            return {name: self._branch(fd, path, index[name], entry_start, entry_stop) for name in names}
        finally:
            os.close(fd)

    def _branch(self, fd, path, i, entry_start, entry_stop):
        name, jagged = self.names[i], self.jagged[i]
        dtype = np.dtype(self.dtypes[i])
        lo, hi = int(self.first[i]), int(self.first[i + 1])
        k0 = lo + int(np.searchsorted(self.stop[lo:hi], entry_start, side="right"))
        k1 = lo + int(np.searchsorted(self.start[lo:hi], entry_stop, side="left"))
        if entry_start == entry_stop:
            k0 = k1 = lo
        parts = [_basket(fd, path, self.tree, name, int(self.seek[k]), int(self.nbytes[k]),
                         int(self.stop[k] - self.start[k]), dtype, jagged) for k in range(k0, k1)]
        first_entry = int(self.start[k0]) if k1 > k0 else entry_start
        a, b = entry_start - first_entry, entry_stop - first_entry
        if not jagged:
            return _joined(parts, a, b, dtype)
        counts = np.concatenate([np.zeros(0, np.int64), *(c for c, _ in parts)])
        offsets = np.zeros(counts.size + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        content = _joined([v for _, v in parts], int(offsets[a]), int(offsets[b]), dtype)
        offsets = offsets[a:b + 1] - offsets[a]
        return ak.contents.ListOffsetArray(ak.index.Index64(offsets), ak.contents.NumpyArray(content))


def _joined(parts: list[np.ndarray], a: int, b: int, dtype: np.dtype) -> np.ndarray:
    """Items ``[a, b)`` of the baskets' values ``parts`` joined, in the machine's byte order: one
    copy (the byte swap) into the output."""
    out = np.empty(b - a, dtype.newbyteorder("="))
    pos = 0  # item of the joined values where the part starts
    for v in parts:
        lo, hi = max(a, pos), min(b, pos + v.size)
        if hi > lo:
            out[lo - a:hi - a] = v[lo - pos:hi - pos]
        pos += v.size
    return out


def _pread(fd: int, n: int, offset: int) -> bytes:
    """``n`` bytes at ``offset`` of the open file ``fd`` (fewer at its end): ``os.pread`` where the
    system has it (POSIX), else a seek and read."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, n)


def _string(head: bytes, pos: int) -> tuple[bytes, int]:
    """A ROOT ``TString`` at ``pos`` of ``head``: (its bytes, the position after it)."""
    n = head[pos]
    pos += 1
    if n == 255:
        (n,) = struct.unpack_from(">i", head, pos)
        pos += 4
    return head[pos:pos + n], pos + n


def _basket(fd, path, tree, name, seek, nbytes, n_entries, dtype, jagged):
    """The values of one basket (fixed-size branch), or (counts, values) of its entries (list
    branch), big-endian as stored; every field checked (see the module doc)."""
    where = f"{path}: tree {tree!r} branch {name!r} basket at byte {seek}"
    data = _pread(fd, nbytes, seek)
    if len(data) != nbytes:
        raise RawFormatError(f"{where}: the file ends after {len(data)} of the basket's {nbytes} bytes "
                             f"(truncated, or changed since it was checked)")
    try:
        key_nbytes, version, objlen, _, keylen, _ = _KEY.unpack_from(data, 0)
        pos = _KEY.size
        (seek_key,) = struct.unpack_from(">q" if version > 1000 else ">i", data, pos)
        pos += 16 if version > 1000 else 8
        class_name, pos = _string(data, pos)
        branch_name, pos = _string(data, pos)
        _, pos = _string(data, pos)
        _, _, _, nevbuf, last, _ = _BASKET.unpack_from(data, pos)
        pos += _BASKET.size
    except (struct.error, IndexError):
        raise RawFormatError(f"{where}: not the basket of its map: unreadable key (the file changed since it "
                             f"was checked, or is corrupt)") from None
    found = {"class": class_name, "name": branch_name.decode(errors="replace"), "fSeekKey": seek_key,
             "fNbytes": key_nbytes, "fKeylen": keylen, "fNevBuf": nevbuf}
    wanted = {"class": b"TBasket", "name": name, "fSeekKey": seek, "fNbytes": nbytes, "fKeylen": pos,
              "fNevBuf": n_entries}
    wrong = [f"{k} {found[k]!r} (expected {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    if wrong or not keylen <= last <= keylen + objlen:
        wrong = wrong or [f"fLast {last} outside {keylen}..{keylen + objlen}"]
        raise RawFormatError(f"{where}: not the basket of its map: {', '.join(wrong)} (the file changed since "
                             f"it was checked, or is corrupt)")
    raw = _decompressed(data, keylen, objlen, where)
    border = last - keylen  # the values end here; a list branch's entry offsets follow
    item = dtype.itemsize
    if not jagged:
        if border != n_entries * item:
            raise RawFormatError(f"{where}: {border} bytes of values for {n_entries} entries of {item} bytes")
        return np.frombuffer(raw, dtype, n_entries)
    # after the values: the entry offsets as ROOT writes an array (its length, then the entry
    # starts, counted from the key's start)
    if raw.size < border + 4 * (n_entries + 1):
        raise RawFormatError(f"{where}: no room for the offsets of {n_entries} entries")
    starts = np.frombuffer(raw, ">i4", n_entries, border + 4).astype(np.int64) - keylen
    bounds = np.empty(n_entries + 1, np.int64)
    bounds[:-1] = starts
    bounds[-1] = border
    step = np.diff(bounds)
    if n_entries and (bounds[0] != 0 or np.any(step < 0) or np.any(step % item)):
        raise RawFormatError(f"{where}: entry offsets do not run from 0 to {border} in whole {item}-byte values")
    return step // item, np.frombuffer(raw, dtype, border // item)


def _zstd_blocks(data: bytes, keylen: int, objlen: int, where: str) -> np.ndarray | None:
    """The basket's object decompressed by ``zstandard`` when every compression block after the key
    is ZSTD (ROOT's 9-byte block header: ``ZS``, method, compressed and uncompressed sizes as
    3-byte little-endian numbers); None for any other algorithm or an inconsistent header (then
    :func:`uproot.compression.decompress` decompresses it or words the error).  uproot's ZSTD codec
    (cramjam's) took 2.3 ms for the 610 kB of a 1k-MOT file's ``calo_adc`` basket, ``zstandard``
    1.0 ms (docs/performance.md, "The chunk read from the basket map")."""
    import zstandard

    blocks, pos, end = [], keylen, len(data)
    while pos < end:
        h = data[pos:pos + 9]
        if len(h) < 9 or h[:2] != b"ZS":
            return None
        size, full = h[3] | h[4] << 8 | h[5] << 16, h[6] | h[7] << 8 | h[8] << 16
        blocks.append((pos + 9, size, full))
        pos += 9 + size
    if pos != end or sum(b[2] for b in blocks) != objlen:
        return None
    view = memoryview(data)
    decompressor = zstandard.ZstdDecompressor()  # (one per basket: an instance is not for concurrent threads)
    parts = []
    for start, size, full in blocks:
        try:
            part = decompressor.decompress(view[start:start + size], max_output_size=full)
        except zstandard.ZstdError as exc:
            raise RawFormatError(f"{where}: cannot decompress: ZstdError: {exc}") from None
        if len(part) != full:
            raise RawFormatError(f"{where}: a compression block decompressed to {len(part)} bytes, its header "
                                 f"says {full}")
        parts.append(part)
    return np.frombuffer(parts[0] if len(parts) == 1 else b"".join(parts), np.uint8)


def _decompressed(data: bytes, keylen: int, objlen: int, where: str) -> np.ndarray:
    """The basket's object (``objlen`` bytes) after its key: stored, or decompressed block by block
    (ZSTD by :func:`_zstd_blocks`, any other algorithm by uproot)."""
    import uproot

    stored = len(data) - keylen
    if stored == objlen:
        return np.frombuffer(data, np.uint8, objlen, keylen)
    out = _zstd_blocks(data, keylen, objlen, where)
    if out is not None:
        return out
    try:
        chunk = uproot.source.chunk.Chunk.wrap(None, np.frombuffer(data, np.uint8))
        out = uproot.compression.decompress(chunk, uproot.source.cursor.Cursor(keylen), {}, stored, objlen).raw_data
    except Exception as exc:  # zstd, zlib, lzma, lz4 and uproot raise their own types
        raise RawFormatError(f"{where}: cannot decompress: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split()[:20])}") from None
    if out.size != objlen:
        raise RawFormatError(f"{where}: decompressed to {out.size} bytes, the key says {objlen}")
    return out
