"""The chunk read from the basket map (:mod:`na64reco.io.baskets`): the same arrays as
uproot's read of the same entries, for every compression and entry range, and a clear error,
never other numbers, when the file is not what the map says."""

from __future__ import annotations

import json
import shutil

import awkward as ak
import numpy as np
import pytest
import uproot
from hypothesis import given, settings
from hypothesis import strategies as st

from na64reco.errors import RawFormatError
from na64reco.io.baskets import TreeBaskets
from na64reco.io.raw import event_branches, open_raw
from na64reco.runner import RunOptions, cutflow_summary, run_files
from na64reco.sim import simulate

#: entries written per ``extend`` (one basket per branch each), the last one shorter
BLOCKS = (7, 0, 40, 1, 25)


def _block(rng, n):
    """One ``extend`` of a tree with every kind of branch the reader takes: numbers of each
    type and size, and lists of them (empty lists included)."""
    counts = rng.integers(0, 5, n)
    total = int(counts.sum())
    return {
        "i8": rng.integers(-2**62, 2**62, n), "u4": rng.integers(0, 2**32, n, dtype=np.uint32),
        "f4": rng.normal(size=n).astype(np.float32), "f8": rng.normal(size=n), "b1": rng.random(n) < 0.5,
        "i2": rng.integers(-2**15, 2**15, n).astype(np.int16),
        "jag": ak.unflatten(rng.integers(-2**15, 2**15, total).astype(np.int16), counts),
        "jag_f8": ak.unflatten(rng.normal(size=total), counts),
        "jag_u1": ak.unflatten(rng.integers(0, 256, total).astype(np.uint8), counts),
    }


def _write(path, compression, blocks=BLOCKS, seed=1):
    rng = np.random.default_rng(seed)
    with uproot.recreate(path, compression=compression) as f:
        for i, n in enumerate(blocks):
            data = _block(rng, n)
            if i == 0:
                f.mktree("t", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()},
                         counter_name=lambda b: f"n{b}")
            if n:
                f["t"].extend(data)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("baskets")
    return {name: str(_write(d / f"{name}.root", comp)) for name, comp in
            (("zstd", uproot.ZSTD(1)), ("zlib", uproot.ZLIB(4)), ("lzma", uproot.LZMA(2)), ("lz4", uproot.LZ4(1)),
             ("stored", None))}


def _same(path, baskets, start, stop):
    with uproot.open(path) as f:
        ref = f["t"].arrays(entry_start=start, entry_stop=stop, how=dict)
    got = baskets.read(path, list(ref), start, stop)
    assert list(got) == list(ref)
    for name, want in ref.items():
        have = ak.Array(got[name]) if isinstance(got[name], ak.contents.Content) else got[name]
        assert ak.type(ak.Array(have)) == ak.type(want), name
        assert ak.to_list(have) == ak.to_list(want), name
        if isinstance(have, np.ndarray):
            assert have.dtype == np.asarray(want).dtype and have.dtype.isnative


@pytest.mark.parametrize("kind", ["zstd", "zlib", "lzma", "lz4", "stored"])
def test_every_compression_reads_as_uproot(files, kind):
    path = files[kind]
    with uproot.open(path) as f:
        baskets = TreeBaskets.of_tree(f["t"])
    assert baskets is not None and baskets.entries == sum(BLOCKS)
    assert int(baskets.first[1] - baskets.first[0]) == sum(1 for n in BLOCKS if n)  # one basket per extend
    _same(path, baskets, 0, baskets.entries)


def test_a_system_without_pread_reads_the_same(files, monkeypatch):
    import os

    path = files["zstd"]
    baskets = _map(path)
    want = baskets.read(path, list(baskets.names), 3, 60)
    monkeypatch.delattr(os, "pread")
    got = baskets.read(path, list(baskets.names), 3, 60)
    for name in baskets.names:
        assert ak.to_list(ak.Array(got[name])) == ak.to_list(ak.Array(want[name]))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_entry_range_reads_as_uproot(files, data):
    """Ranges inside one basket, across several, at their edges, empty, one entry."""
    path = files["zstd"]
    with uproot.open(path) as f:
        baskets = TreeBaskets.of_tree(f["t"])
    start = data.draw(st.integers(0, baskets.entries))
    stop = data.draw(st.integers(start, baskets.entries))
    _same(path, baskets, start, stop)


def test_a_raw_file_chunk_reads_as_uproot(tmp_path):
    """The ``events`` of a simulated raw file, as the runner's record of a chunk."""
    from na64reco.reco.event import record

    path = tmp_path / "sim.root"
    simulate("na64mu", 3000, 5, 1001, path, trigger="calibration", chunk_size=1000, spill_particles=1000)
    with open_raw(path) as raw:
        baskets = raw.baskets("events")
        n = raw.n_events
    assert baskets is not None and int(baskets.first[1]) >= 3
    names = event_branches()
    for start, stop in ((0, n), (0, int(baskets.stop[0])), (17, n - 5)):
        with uproot.open(path) as f:
            ref = record(f["events"].arrays(names, entry_start=start, entry_stop=stop, how=dict))
        got = record(baskets.read(str(path), names, start, stop))
        assert got.type == ref.type and ak.array_equal(got, ref)


def test_a_tree_out_of_scope_has_no_map(tmp_path):
    """A fixed-size array branch (not a number per entry or a list of them): uproot reads it."""
    path = tmp_path / "fixed.root"
    with uproot.recreate(path) as f:
        f.mktree("t", {"x": ("i4", (3,)), "y": "f8"})
        f["t"].extend({"x": np.arange(12, dtype=np.int32).reshape(4, 3), "y": np.arange(4.0)})
    with uproot.open(path) as f:
        assert TreeBaskets.of_tree(f["t"]) is None


def _map(path):
    with uproot.open(path) as f:
        return TreeBaskets.of_tree(f["t"])


def test_another_file_at_the_path_is_refused(files, tmp_path):
    """The map of one file applied to another written alike (same sizes, other numbers) or
    otherwise (another compression): an error naming the file, branch and what differs."""
    path = tmp_path / "f.root"
    shutil.copy(files["zstd"], path)
    baskets = _map(path)
    _write(path, uproot.ZLIB(4))  # rewritten in place: the baskets are elsewhere now
    with pytest.raises(RawFormatError, match=rf"{path}: tree 't' branch '\w+' basket at byte \d+: not the basket "
                                             r"of its map: .*\(the file changed since it was checked, or is corrupt\)"):
        baskets.read(str(path), list(baskets.names), 0, baskets.entries)


def test_a_truncated_file_is_refused(files, tmp_path):
    path = tmp_path / "cut.root"
    shutil.copy(files["zstd"], path)
    baskets = _map(path)
    last = int(np.argmax(baskets.seek))
    with open(path, "r+b") as fh:
        fh.truncate(int(baskets.seek[last]) + 10)
    name = baskets.names[int(np.searchsorted(baskets.first, last, side="right")) - 1]
    with pytest.raises(RawFormatError, match=rf"{path}: tree 't' branch '{name}' basket at byte \d+: the file "
                                             r"ends after 10 of the basket's \d+ bytes"):
        baskets.read(str(path), [name], 0, baskets.entries)


@pytest.mark.parametrize("where", ["key", "data"])
def test_a_damaged_basket_is_refused_or_read_as_damaged(files, tmp_path, where):
    """A flipped byte in a basket's key is refused; in its compressed data it fails to
    decompress, or decodes to other numbers, which the content checksums of a raw file catch
    (tests/test_bitflips.py: the run names the file)."""
    path = tmp_path / "flip.root"
    shutil.copy(files["zstd"], path)
    baskets = _map(path)
    k = int(baskets.first[baskets.names.index("jag")])  # the first basket of a list branch
    seek, nbytes = int(baskets.seek[k]), int(baskets.nbytes[k])
    at = seek + (20 if where == "key" else nbytes - 40)
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x10]))
    if where == "key":
        with pytest.raises(RawFormatError, match=rf"{path}: tree 't' branch 'jag' basket at byte {seek}"):
            baskets.read(str(path), ["jag"], 0, baskets.entries)
        return
    try:
        got = baskets.read(str(path), ["jag"], 0, baskets.entries)
    except RawFormatError as exc:
        assert f"branch 'jag' basket at byte {seek}" in str(exc)
    else:
        with uproot.open(files["zstd"]) as f:
            ref = f["t"]["jag"].array()
        assert not ak.array_equal(ak.Array(got["jag"]), ref)


def test_unknown_branch_and_range_are_refused(files):
    baskets = _map(files["zstd"])
    with pytest.raises(RawFormatError, match="has no branch.*nope"):
        baskets.read(files["zstd"], ["i8", "nope"], 0, 1)
    with pytest.raises(ValueError, match="outside"):
        baskets.read(files["zstd"], ["i8"], 0, baskets.entries + 1)


def test_a_run_reads_its_chunks_from_the_map_with_the_outputs_of_uproot(tmp_path, monkeypatch):
    """The same cut-flow, regions, histograms and provenance with the chunks read from the
    check's basket map as with uproot (chunks of 250 events: inside and across baskets)."""
    import na64reco.runner as runner
    import processors.base as base

    files = []
    for seed in (1, 2):
        simulate("na64mu", 1500, seed, 1001, tmp_path / f"d{seed}.root", trigger="calibration", truth=False,
                 chunk_size=600, spill_particles=600)
        files.append(str(tmp_path / f"d{seed}.root"))
    reads = []  # (file, read from the map) of each chunk
    real = runner.read_chunk
    monkeypatch.setattr(runner, "read_chunk", lambda item, *a, baskets=None: reads.append(
        (item.filename, baskets is not None)) or real(item, *a, baskets=baskets))
    opts = RunOptions("na64mu_invisible", chunksize=250, check_cache=False)
    fast = run_files({"d": files}, opts)["d"]
    assert len(reads) >= 2 * 4 and {f for f, _ in reads} == set(files) and all(m for _, m in reads)
    monkeypatch.setattr(base.InvisibleProcessor, "known_baskets", lambda self, path: None)
    reads.clear()
    slow = run_files({"d": files}, opts)["d"]
    assert len(reads) >= 2 * 4 and not any(m for _, m in reads)
    for k in ("cutflow", "nminusone", "regions"):  # (as JSON: an empty row's efficiency is NaN)
        assert json.dumps(cutflow_summary({"d": fast})["d"][k], sort_keys=True) == \
               json.dumps(cutflow_summary({"d": slow})["d"][k], sort_keys=True)
    assert fast["provenance"].events_processed == slow["provenance"].events_processed > 0
    for group in ("hists", "nminus1"):
        assert fast[group].keys() == slow[group].keys()
        for name, h in fast[group].items():
            np.testing.assert_array_equal(h.values(flow=True), slow[group][name].values(flow=True))


def test_the_raw_reader_reads_every_tree_as_uproot(tmp_path):
    """:meth:`RawFile.read_verified` (``events()``, ``spills()``, ``truth()``, the event
    numbers) from the basket maps gives uproot's arrays."""
    path = tmp_path / "sim.root"
    simulate("na64mu", 2000, 6, 1001, path, trigger="calibration", chunk_size=700, spill_particles=700)
    fast, slow = open_raw(path), open_raw(path)
    for tree in ("events", "spills", "truth"):
        slow._baskets[tree] = None  # (no map: read by uproot)
        assert fast.baskets(tree) is not None
    n = fast.n_events
    assert ak.array_equal(fast.events(), slow.events()) and fast.events().type == slow.events().type
    for start, stop in ((0, n), (5, n // 2), (n // 2, n - 1)):
        a, b = fast.read_verified("events", start, stop), slow.read_verified("events", start, stop)
        assert a.type == b.type and ak.array_equal(a, b)
    for get in (lambda r: r.spills(), lambda r: r.truth(), lambda r: {"event": r.event_numbers()}):
        a, b = get(fast), get(slow)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])


# -- the basket maps a raw file keeps (``na64raw_baskets``) --------------------------------------
def _mapped(tmp_path, name="m.root", **kw):
    from test_processors_synthetic import write_raw

    return write_raw(tmp_path / name, n_events=300, **kw)


def test_a_raw_file_keeps_the_maps_of_its_trees_headers(tmp_path):
    """The map written with a file is the one its trees' headers give, each tree is opened
    from it without its header, and a file written without maps reads the same."""
    path = _mapped(tmp_path)
    plain = _mapped(tmp_path, "plain.root", basket_maps=False)
    with open_raw(path, structure=False) as raw, uproot.open(path) as f, open_raw(plain) as old:
        for tree in ("events", "spills", "truth"):
            assert raw._baskets[tree] == TreeBaskets.of_tree(f[tree])
        assert raw._trees == {}  # (no header read)
        assert ak.array_equal(raw.events(), old.events()) and raw._trees == {}
        assert old._trees.keys() == {"events", "spills", "truth"}  # (opened with every header read and checked)
    with uproot.open(plain) as f:
        assert "na64raw_baskets" not in f.keys(cycle=False)


def _rewrite(path, out, maps):
    """``path`` copied to ``out`` with its basket map string replaced by ``maps(text)`` and the
    metadata's checksum of it made again (a well-formed file whose writer was wrong)."""
    from test_raw_format import signed_meta

    from na64reco.io.checksum import table_checksum

    with uproot.open(path) as f:
        meta = {k: v for k, v in json.loads(str(f["na64raw"])).items() if k != "checksum"}
        text = maps(str(f["na64raw_baskets"]))
    shutil.copy(path, out)
    with uproot.update(out) as f:
        f["na64raw_baskets"] = text
        f["na64raw"] = json.dumps(signed_meta({**meta, "baskets_checksum": table_checksum(text)}))


def test_an_edited_basket_map_is_refused_when_the_file_is_opened(tmp_path):
    path = _mapped(tmp_path)
    bad = tmp_path / "edited.root"
    shutil.copy(path, bad)
    with uproot.update(bad) as f:
        text = str(f["na64raw_baskets"])
        f["na64raw_baskets"] = text.replace('"seek":[', '"seek":[1', 1)
    with pytest.raises(RawFormatError, match=rf"{bad}: basket map mismatch: 'na64raw_baskets' is corrupt"):
        open_raw(bad, structure=False)


def test_a_basket_map_against_the_format_is_refused(tmp_path):
    """A map whose checksum matches (a writer's error, not damage) but whose branch has
    another type, or whose baskets do not cover the tree: refused at opening, naming it."""
    path = _mapped(tmp_path)
    retyped = tmp_path / "retyped.root"
    _rewrite(path, retyped, lambda t: t.replace('">i8"', '">f8"', 1))
    with pytest.raises(RawFormatError, match=rf"{retyped}: branch events.event holds float64, expected int64"):
        open_raw(retyped, structure=False)
    little = tmp_path / "little.root"
    _rewrite(path, little, lambda t: t.replace('">i8"', '"<i8"', 1))
    with pytest.raises(RawFormatError, match=rf"{little}: unreadable basket map of tree 'events'.*big-endian"):
        open_raw(little, structure=False)
    short = tmp_path / "short.root"
    _rewrite(path, short, lambda t: json.dumps({k: {**v, "stop": [s - 1 for s in v["stop"]]}
                                                      for k, v in json.loads(t).items()}))
    with pytest.raises(RawFormatError, match=rf"{short}: unreadable basket map of tree '\w+'.*do not cover entries"):
        open_raw(short, structure=False)
    gone = tmp_path / "gone.root"
    shutil.copy(path, gone)
    with uproot.update(gone) as f:
        del f["na64raw_baskets"]
    with pytest.raises(RawFormatError, match=rf"{gone}: has no 'na64raw_baskets' basket map, which its metadata"):
        open_raw(gone, structure=False)


def test_a_basket_map_pointing_elsewhere_is_refused_on_reading(tmp_path):
    """A map that passes the open's checks but does not match the file's baskets (here: the
    positions of two branches swapped): the read names the branch and basket."""
    path = _mapped(tmp_path)
    swapped = tmp_path / "swapped.root"

    def swap(text):
        maps = json.loads(text)
        ev = maps["events"]
        i, j = ev["branches"].index("run"), ev["branches"].index("spill")
        ev["seek"][i], ev["seek"][j] = ev["seek"][j], ev["seek"][i]
        ev["nbytes"][i], ev["nbytes"][j] = ev["nbytes"][j], ev["nbytes"][i]
        return json.dumps(maps)

    _rewrite(path, swapped, swap)
    with open_raw(swapped, structure=False) as raw:
        with pytest.raises(RawFormatError, match=rf"{swapped}: tree 'events' branch '(run|spill)' basket at byte "
                                                 r"\d+: not the basket of its map: name '(run|spill)' \(expected"):
            raw.events()


def test_zstd_baskets_of_several_compression_blocks_read_as_uproot(tmp_path, monkeypatch):
    """ROOT compresses a basket in blocks of at most 16 MiB: a 24 MB basket has two, which
    ``zstandard`` decompresses (any other algorithm goes to uproot's codec)."""
    import na64reco.io.baskets as baskets_module

    path = tmp_path / "big.root"
    rng = np.random.default_rng(3)
    values = rng.integers(0, 1000, 6_000_000).astype(np.int32)
    counts = np.full(1000, 6000)
    with uproot.recreate(path, compression=uproot.ZSTD(1)) as f:
        f.mktree("t", {"flat": np.int32, "lists": ak.types.ListType(ak.types.NumpyType("int32"))})
        f["t"].extend({"flat": np.arange(1000, dtype=np.int32), "lists": ak.unflatten(values, counts)})
    used = []  # (decompressed size, taken by the ZSTD path) of each compressed basket
    real = baskets_module._zstd_blocks

    def spy(*args):
        out = real(*args)
        used.append((args[2], out is not None))
        return out

    monkeypatch.setattr(baskets_module, "_zstd_blocks", spy)
    _same(str(path), _map(str(path)), 0, 1000)
    _same(str(path), _map(str(path)), 10, 20)
    assert all(taken for _, taken in used) and max(n for n, _ in used) > 16 * 2**20  # (two blocks)
    used.clear()
    zlib = str(_write(tmp_path / "z.root", uproot.ZLIB(4)))
    _same(zlib, _map(zlib), 0, 10)
    assert used and not any(taken for _, taken in used)  # ZLIB blocks: uproot's codec
