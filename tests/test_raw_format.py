"""Round trip and error handling of the raw ROOT format."""

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from na64reco.errors import RawFormatError, SetupMismatch
from na64reco.io.raw import N_SAMPLES, TRUTH_BRANCHES, RawWriter, open_raw


def _place(counts):
    """Each digit's index in its event (random channels made distinct within an event: a channel
    is read once per event)."""
    return np.concatenate([np.arange(k) for k in counts]) if len(counts) else np.zeros(0, np.int64)


def _chunk(rng, n, first_event=0, spill=0):
    nc, na, ns = rng.integers(0, 6, n), rng.integers(0, 12, n), rng.integers(0, 3, n)
    tc, ta, ts = nc.sum(), na.sum(), ns.sum()
    return {
        "run": np.full(n, 7),
        "spill": np.full(n, spill),  # (the spills tree of each test lists it with these events)
        "event": first_event + np.arange(n),
        "trigger": np.ones(n),
        "time_in_spill": rng.uniform(0, 4.8, n),
        "n_calo": nc,
        "calo_det": rng.integers(1, 15, tc),
        "calo_chan": 10 * _place(nc) + rng.integers(0, 10, tc),
        "calo_adc": rng.integers(0, 4096, (tc, N_SAMPLES)),
        "n_apv": na,
        "apv_plane": rng.integers(0, 17, ta),
        "apv_chan": 26 * _place(na) + rng.integers(0, 26, ta),
        "apv_a0": rng.integers(-20, 500, ta),
        "apv_a1": rng.integers(-20, 900, ta),
        "apv_a2": rng.integers(-20, 700, ta),
        "n_straw": ns,
        "straw_plane": rng.integers(0, 17, ts),
        "straw_tube": rng.integers(0, 64, ts),
        "straw_tdc": rng.integers(0, 200, ts),
    }


def _truth(rng, n):
    t = {k: np.abs(rng.normal(size=n)) for k in TRUTH_BRANCHES}  # (deposited energies: >= 0)
    t.update(run=np.full(n, 7), spill=np.zeros(n), event=np.arange(n), process=rng.integers(0, 9, n),
             weight=rng.uniform(size=n),  # (expected events per beam particle: 0..1)
             p_in=rng.normal(160.0, 3.0, n), p_out=rng.uniform(0.0, 160.0, n),  # (GeV: 0..500 or NaN)
             x=rng.uniform(0.0, 1.0, n))  # (an energy fraction)
    return t


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "run7.root"
    chunks = [_chunk(rng, 500, 0, spill=0), _chunk(rng, 300, 500, spill=1)]
    truth = _truth(rng, 800)
    with RawWriter(path, setup="na64mu", run=7, has_truth=True) as w:
        for c in chunks:
            w.write_events(c)
        w.write_truth(truth)
        w.write_spills({"run": [7, 7], "spill": [0, 1], "n_beam": [1000, 900], "n_triggered": [500, 300]})
    return path, chunks, truth


def test_round_trip(written):
    path, chunks, truth = written
    with open_raw(path, setup="na64mu") as f:
        assert f.n_events == 800 and f.has_truth and f.run == 7 and f.setup == "na64mu"
        ev = f.events()
        assert ak.fields(ev.calo) == ["det", "chan", "adc"]
        for k in ("event", "spill", "run"):
            assert np.array_equal(np.asarray(ev[k]), np.concatenate([c[k] for c in chunks]))
        adc = ak.to_numpy(ak.flatten(ev.calo.adc))
        assert adc.shape[1] == N_SAMPLES and adc.dtype == np.int16
        assert np.array_equal(adc, np.concatenate([c["calo_adc"] for c in chunks]))
        assert np.array_equal(ak.to_numpy(ak.num(ev.calo)), np.concatenate([c["n_calo"] for c in chunks]))
        for fld in ("plane", "chan", "a0", "a1", "a2"):
            assert np.array_equal(
                ak.to_numpy(ak.flatten(ev.apv[fld])), np.concatenate([c[f"apv_{fld}"] for c in chunks])
            )
        assert np.array_equal(ak.to_numpy(ak.flatten(ev.straw.tdc)), np.concatenate([c["straw_tdc"] for c in chunks]))
        part = f.events(100, 600)
        assert np.array_equal(ak.to_numpy(part.event), np.arange(100, 600))
        sp = f.spills()
        assert sp["n_beam"].sum() == 1900
        t = f.truth()
        assert np.allclose(t["p_in"], truth["p_in"].astype(np.float32))
        assert np.array_equal(t["process"], truth["process"])


def test_data_like_file_has_no_truth(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "data.root"
    with RawWriter(path, setup="na64e", run=3, has_truth=False) as w:
        w.write_events(_chunk(rng, 10))
        w.write_spills({"run": [3], "spill": [0], "n_beam": [10], "n_triggered": [10]})
    f = open_raw(path)
    assert not f.has_truth
    assert "truth" not in uproot.open(path).keys(cycle=False)
    with pytest.raises(RawFormatError, match="has no truth"):
        f.truth()


def test_errors(written, tmp_path):
    path, _, _ = written
    with pytest.raises(SetupMismatch, match="was written for setup 'na64mu', not 'na64e'"):
        open_raw(path, setup="na64e")
    with pytest.raises(RawFormatError, match="file not found"):
        open_raw(tmp_path / "missing.root")
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    with pytest.raises(RawFormatError, match="file is empty"):
        open_raw(empty)
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(RawFormatError, match="truncated.root"):
        open_raw(truncated).events()


def signed_meta(meta: dict) -> dict:
    """Metadata with a valid self-checksum (a well-formed file of the wrong content)."""
    from na64reco.io.checksum import meta_checksum

    return {**meta, "checksum": meta_checksum(meta)}


def test_unknown_version_and_missing_branch(tmp_path):
    rng = np.random.default_rng(2)
    future = tmp_path / "future.root"
    c = _chunk(rng, 5)
    with RawWriter(future, setup="na64mu", run=1, has_truth=False, extra_meta={"format_version": 99}) as w:
        w.write_events(c)
    with pytest.raises(RawFormatError, match="version 99; this na64reco reads 'na64raw' versions 2, 3, 4"):
        open_raw(future)
    other = tmp_path / "missing_branch.root"
    with uproot.recreate(other) as f:
        f.mktree("events", {"run": np.int32})
        f["events"].extend({"run": np.ones(3, np.int32)})
        f.mktree("spills", {"run": np.int32})
        f["na64raw"] = json.dumps(signed_meta({"format": "na64raw", "format_version": 2, "setup": "na64mu", "run": 1}))
    with pytest.raises(RawFormatError, match="tree 'events' lacks branch\\(es\\) spill, event"):
        open_raw(other)
    plain = tmp_path / "plain.root"
    with uproot.recreate(plain) as f:
        f["x"] = "y"
    with pytest.raises(RawFormatError, match="not an na64reco raw file"):
        open_raw(plain)


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(RawFormatError, match="a_file/x.root: cannot write"):
        RawWriter(blocker / "x.root", setup="na64mu", run=1, has_truth=False)


def test_a_truth_tree_added_to_a_data_file_does_not_make_it_simulation(tmp_path):
    """A data copy with a dummy ``truth`` tree (one ``uproot.update``), with or without the
    metadata edited to say ``has_truth``, is refused, never read as MC."""
    from na64reco.io.raw import TRUTH_BRANCHES
    from na64reco.sim.generate import simulate

    data = tmp_path / "data.root"
    simulate("na64mu", 300, 1, 1001, data, truth=False)
    assert not open_raw(data).has_truth
    n = open_raw(data).n_events
    added = tmp_path / "added.root"
    added.write_bytes(data.read_bytes())
    with uproot.update(added) as f:
        f["truth"] = {k: np.zeros(n, t) for k, t in TRUTH_BRANCHES.items()}
    with pytest.raises(RawFormatError, match="added.root: unexpected object.*'truth'"):
        open_raw(added)
    edited = tmp_path / "edited.root"
    edited.write_bytes(added.read_bytes())
    with uproot.update(edited) as f:
        meta = json.loads(str(f["na64raw"]))
        f["na64raw"] = json.dumps({**meta, "has_truth": True})
    with pytest.raises(RawFormatError, match="edited.root: metadata checksum mismatch"):
        open_raw(edited)


class _WriterV2(RawWriter):
    """The version-2 layout (a ``<tree>_sums`` tree per tree, no checksum table), to check
    that files written before version 3 still read."""

    def _make_trees(self):
        from na64reco.io.checksum import BOUNDS, sums_tree
        from na64reco.io.raw import data_branch_types

        super()._make_trees()
        for tree, types in data_branch_types(self.has_truth).items():
            self._file.mktree(sums_tree(tree), {**{b: np.int64 for b in BOUNDS}, **{b: np.uint64 for b in types}})

    def close(self):
        from na64reco.io.checksum import meta_checksum, sums_tree

        if not self._trees_made:
            self._make_trees()
        for tree, t in self.tables.items():
            if t["entry_start"]:
                bounds = {b: np.array(t[b], np.int64) for b in ("entry_start", "entry_stop")}
                sums = {b: np.array(v, np.uint64) for b, v in t["sums"].items()}
                self._file[sums_tree(tree)].extend({**bounds, **sums})
        meta = {**self.meta, "format_version": 2, "entries": dict(self.entries)}
        meta["checksum"] = meta_checksum(meta)
        self._file["na64raw"] = json.dumps(meta)
        self._file.close()


def _write_both(tmp_path, rng):
    chunks = [_chunk(rng, n, first_event=100 * i, spill=i + 1) for i, n in enumerate((40, 25))]
    paths = {}
    for name, cls in (("v3", RawWriter), ("v2", _WriterV2)):
        paths[name] = tmp_path / f"{name}.root"
        with cls(paths[name], setup="na64mu", run=7, has_truth=False) as w:  # (_chunk's run)
            for c in chunks:
                w.write_events(c)
            w.write_spills({"run": [7, 7], "spill": [1, 2], "n_beam": [100, 200], "n_triggered": [40, 25]})
    return paths


def test_version_3_holds_one_checksum_table_and_version_2_files_still_read(tmp_path):
    paths = _write_both(tmp_path, np.random.default_rng(5))
    with uproot.open(paths["v3"]) as f:
        assert set(f.keys(cycle=False)) == {"events", "spills", "na64raw", "na64raw_sums", "na64raw_baskets"}
    with uproot.open(paths["v2"]) as f:
        assert {"events_sums", "spills_sums"} <= set(f.keys(cycle=False))
    with open_raw(paths["v3"]) as v3, open_raw(paths["v2"]) as v2:
        assert (v3.version, v2.version) == (4, 2)  # (the writer writes version 4: version 3 and the basket maps)
        assert v3.verify() == v2.verify() == {"events": 65, "spills": 2}
        assert ak.to_list(v3.events(10, 50)) == ak.to_list(v2.events(10, 50))
        b3, b2 = v3.blocks("events"), v2.blocks("events")
        assert b3.starts.tolist() == b2.starts.tolist() == [0, 40] and b3.stops.tolist() == [40, 65]
        assert b3.names == b2.names and np.array_equal(b3.table, b2.table)


def test_a_damaged_checksum_table_is_refused(tmp_path):
    from na64reco.io.checksum import encode_table, meta_checksum, table_checksum

    paths = _write_both(tmp_path, np.random.default_rng(6))
    with uproot.open(paths["v3"]) as f:
        meta, table = json.loads(str(f["na64raw"])), json.loads(str(f["na64raw_sums"]))

    def rewrite(name, table, meta):
        path = tmp_path / name
        path.write_bytes(paths["v3"].read_bytes())
        with uproot.update(path) as f:
            f["na64raw_sums"] = encode_table(table)
            f["na64raw"] = json.dumps(meta)
        return path

    edited = json.loads(json.dumps(table))
    edited["events"]["sums"]["run"][0] += 1
    with pytest.raises(RawFormatError, match="edited.root: checksum table mismatch"):
        open_raw(rewrite("edited.root", edited, meta))
    # re-signed: the table is read, and the changed sum is caught when the events are read
    resigned = {**meta, "sums_checksum": table_checksum(encode_table(edited))}
    resigned["checksum"] = meta_checksum(resigned)
    with pytest.raises(RawFormatError, match="resigned.root: checksum mismatch in tree 'events', branch 'run'"):
        open_raw(rewrite("resigned.root", edited, resigned), structure=False).events()
    del edited["spills"]["sums"]["n_beam"]
    resigned = {**meta, "sums_checksum": table_checksum(encode_table(edited))}
    resigned["checksum"] = meta_checksum(resigned)
    with pytest.raises(RawFormatError, match="lacking.root: unreadable checksum table.*'spills' has sums of"):
        open_raw(rewrite("lacking.root", edited, resigned), structure=False)
