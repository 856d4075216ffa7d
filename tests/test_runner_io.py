"""What the runner reads per file and keeps per chunk (issue 11: memory flat in file size,
per-file overhead): each file's trees are checked once per run, coffea's preprocessing
opens no file, the chunk files keep no decoded arrays, and the outputs do not change."""

from __future__ import annotations

import pytest
from coffea.processor import Runner
from test_processors_synthetic import synthetic_reco, write_raw

import na64reco.io.raw as raw_module
import processors.base as base
from na64reco.errors import RawFormatError
from na64reco.io.raw import open_raw
from na64reco.runner import RunOptions, run_files
from processors.na64mu_invisible import Processor


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """Two files of format version 3 (as written before stop 29): no basket maps, the trees read
    through their headers."""
    d = tmp_path_factory.mktemp("runner_io")
    return [str(write_raw(d / f"f{i}.root", n_events=700, first_event=1000 * i, basket_maps=False)) for i in range(2)]


@pytest.fixture(scope="module")
def two_mapped_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("runner_io_maps")
    return [str(write_raw(d / f"f{i}.root", n_events=700, first_event=1000 * i)) for i in range(2)]


def _run(files):
    return run_files({"d": files}, RunOptions("na64mu_invisible", chunksize=250),
                     processor_instance=Processor(reco=synthetic_reco))


def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_each_tree_is_checked_once_and_coffea_preprocessing_opens_none(two_files, monkeypatch):
    reference = _run(two_files)["d"]
    checked = _counting(monkeypatch, raw_module, "_check_tree")
    opened = _counting(monkeypatch, base, "open_raw")

    def no_open(*args, **kwargs):
        raise AssertionError("coffea's preprocessing opened a file the runner had checked")

    monkeypatch.setattr(Runner, "metadata_fetcher_root", staticmethod(no_open))
    out = _run(two_files)["d"]
    # events and spills by the runner's check, truth when the processor first reads it (and
    # events again where the processor reads a checksum block that its 250-event chunk cuts)
    pairs = [(str(a[4]), a[1]) for a in checked]
    assert set(pairs) == {(p, t) for p in two_files for t in ("events", "spills", "truth")}
    assert all(pairs.count(pair) == 1 for pair in pairs if pair[1] != "events")
    assert len(opened) == len(two_files)  # the processor opens a simulated file once, for its truth
    prov = out["provenance"]
    assert prov.events_processed == prov.events_total == 1400 and prov.chunks == reference["provenance"].chunks
    assert out["cutflow"].to_dict() == reference["cutflow"].to_dict()
    assert base._CHECKED == {}  # forgotten after the run


def test_a_file_with_basket_maps_is_read_without_any_tree_header(two_mapped_files, monkeypatch):
    """Each tree's structure checked from its basket map when the file is opened (at the run's
    check, and once more where the processor opens a simulated file for its truth), no header
    of a tree read, and the outputs of the files without maps."""
    reference = _run(two_mapped_files)["d"]
    headers = _counting(monkeypatch, raw_module, "_check_tree")
    mapped = _counting(monkeypatch, raw_module, "_checked_map")
    out = _run(two_mapped_files)["d"]
    assert headers == []
    pairs = [(str(a[2]), a[0].tree) for a in mapped]
    assert set(pairs) == {(p, t) for p in two_mapped_files for t in ("events", "spills", "truth")}
    assert all(pairs.count(pair) == 2 for pair in pairs)
    assert out["cutflow"].to_dict() == reference["cutflow"].to_dict()
    assert out["provenance"].events_processed == 1400


def test_the_processor_opens_no_data_file_the_runner_checked(tmp_path, monkeypatch):
    from na64reco.sim.generate import simulate

    path = tmp_path / "data.root"
    simulate("na64mu", 2000, 3, 1001, path, truth=False, trigger="calibration")
    opened = _counting(monkeypatch, base, "open_raw")
    out = run_files({"d": [str(path)]}, RunOptions("na64mu_invisible"))["d"]
    assert opened == [] and out["provenance"].events_processed == open_raw(path).n_events > 0


def test_chunk_files_and_raw_files_keep_no_array_cache(two_files, monkeypatch):
    import uproot

    caches = []
    real = uproot.open

    def spy(path, *args, **kwargs):
        file = real(path, *args, **kwargs)
        if isinstance(path, dict):  # the runner's chunk reader ({path: None}, as coffea opened it)
            caches.append(file.file.array_cache)
        return file

    monkeypatch.setattr(uproot, "open", spy)
    _run(two_files)
    assert caches == []  # the chunks read from the check's basket map: no uproot file opened
    monkeypatch.setattr(Processor, "known_baskets", lambda self, path: None)  # read by uproot
    _run(two_files)
    assert len(caches) == 6 and all(c is None for c in caches)  # 3 chunks per file
    with open_raw(two_files[0]) as raw:
        assert raw._file.file.array_cache is None


def test_a_file_changed_since_the_check_is_checked_again(two_files, monkeypatch):
    from na64reco.io.location import file_version

    path = two_files[0]
    checked = _counting(monkeypatch, raw_module, "_check_tree")
    base.close_raw_files()
    record = {"setup": "na64mu", "run": 1, "has_truth": True, "blocks": None}
    base.note_checked_files({path: {**record, "version": file_version(path) + "-before"}})  # another version
    try:
        base._raw(path)
        assert {a[1] for a in checked} == {"events", "spills", "truth"}  # every tree, at opening
        base.close_raw_files()
        checked.clear()
        base.note_checked_files({path: {**record, "version": file_version(path)}})
        base._raw(path)
        assert checked == []  # the same file as checked: its trees when first read
    finally:
        base.close_raw_files()


def test_open_without_the_structure_check_reads_the_same_and_still_checks_the_metadata(two_files, tmp_path):
    with open_raw(two_files[0]) as full, open_raw(two_files[0], structure=False) as light:
        assert (light.meta, light.n_events, light.has_truth) == (full.meta, full.n_events, full.has_truth)
        assert light.truth(100, 300)["event"].tolist() == full.truth(100, 300)["event"].tolist()
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    with pytest.raises(RawFormatError, match="empty"):
        open_raw(empty, structure=False)


def test_reconstruction_in_slices_gives_the_same_outputs(tmp_path):
    """Chunks larger than ``RECO_BATCH`` are reconstructed in slices (worker memory): every
    cut-flow row, region and histogram is the same as from the whole chunk."""
    from bitflip import canonical

    from na64reco.sim.generate import simulate

    path = tmp_path / "sim.root"
    simulate("na64mu", 1500, 4, 1001, path, trigger="calibration")
    whole, sliced = Processor(), Processor()
    sliced.RECO_BATCH = 250
    opts = RunOptions("na64mu_invisible")
    outs = [run_files({"d": [str(path)]}, opts, processor_instance=p) for p in (whole, sliced)]
    assert outs[0]["d"]["provenance"].chunks == 1 and open_raw(path).n_events > 4 * sliced.RECO_BATCH
    assert canonical(outs[0]) == canonical(outs[1])


def test_the_chunk_reader_gives_what_coffeas_nanoevents_gave(tmp_path, monkeypatch):
    """The runner reads chunks itself (``ChunkRunner``, one uproot ``arrays`` call) and the
    processor fills numpy histogram sums: every cut-flow row, region, exposure and histogram
    (flow bins included) is what coffea's own chunk reading and ``process()`` give."""
    import numpy as np
    from bitflip import canonical
    from coffea import processor

    import na64reco.runner as runner
    from na64reco.sim.generate import simulate

    files = []
    for seed, truth in ((5, True), (6, False)):
        files.append(str(tmp_path / f"{seed}.root"))
        simulate("na64mu", 800, seed, 1001, files[-1], trigger="calibration", truth=truth)
    fileset, opts = {"s": files[:1], "d": files[1:]}, RunOptions("na64mu_invisible", chunksize=300)
    ours = run_files(fileset, opts)
    monkeypatch.setattr(runner, "ChunkRunner", processor.Runner)  # coffea's NanoEvents and process()
    theirs = run_files(fileset, opts)
    assert canonical(ours) == canonical(theirs)
    for ds in fileset:
        assert ours[ds]["provenance"].chunks == theirs[ds]["provenance"].chunks >= 2
        assert ours[ds]["provenance"].files == theirs[ds]["provenance"].files
        for group in ("hists", "nminus1"):
            for name, h in ours[ds][group].items():
                ref = theirs[ds][group][name]
                assert type(h) is type(ref) and h.axes == ref.axes
                assert np.array_equal(h.view(flow=True).value, ref.view(flow=True).value)
                assert np.array_equal(h.view(flow=True).variance, ref.view(flow=True).variance)
