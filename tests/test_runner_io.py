"""What the runner reads per file and keeps per chunk (issue 11: memory flat in file size,
per-file overhead): each file's trees are checked once per run, coffea's preprocessing
opens no file, the chunk files keep no decoded arrays, and the outputs do not change."""

from __future__ import annotations

import os

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
    d = tmp_path_factory.mktemp("runner_io")
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
    assert len(caches) == 2 and all(c is None for c in caches)  # 3 chunks per file, opened once for them
    with open_raw(two_files[0]) as raw:
        assert raw._file.file.array_cache is None


def test_a_file_changed_since_the_check_is_checked_again(two_files, monkeypatch):
    path = two_files[0]
    checked = _counting(monkeypatch, raw_module, "_check_tree")
    base.close_raw_files()
    record = {"setup": "na64mu", "run": 1, "has_truth": True, "blocks": None}
    base.note_checked_files({path: {**record, "version": str(os.stat(path).st_mtime_ns - 1)}})  # another mtime
    try:
        base._raw(path)
        assert {a[1] for a in checked} == {"events", "spills", "truth"}  # every tree, at opening
        base.close_raw_files()
        checked.clear()
        base.note_checked_files({path: {**record, "version": str(os.stat(path).st_mtime_ns)}})
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


def _mapped_kb(path) -> int | None:
    """Resident kB of this process's memory maps of ``path`` (None without /proc/self/smaps)."""
    try:
        text = open("/proc/self/smaps").read()
    except OSError:
        return None
    total, mine = 0, False
    for line in text.splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping's header line
            mine = line.rstrip().endswith(str(path))
        elif mine and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_the_chunk_reader_keeps_a_file_open_for_its_chunks_without_its_pages(two_files):
    """``read_chunk`` opens a local file and reads its tree's header once for all its chunks
    (per thread, at most two files, closed by the runner after the run; a changed file is
    opened again), gives what a plain uproot read gives, and keeps none of the chunks' pages
    of the memory map resident (else the memory would grow with the file's size)."""
    from types import SimpleNamespace

    import numpy as np
    import uproot

    import na64reco.runner as runner
    from na64reco.io.raw import event_branches

    path = two_files[1]

    def item(a, b, f=path):
        return SimpleNamespace(filename=f, treename="events", entrystart=a, entrystop=b, preload=event_branches())

    runner.close_chunk_files()
    try:
        with uproot.open(path) as f:
            plain = f["events"].arrays(event_branches(), library="np")
        trees = []
        for a, b in ((0, 250), (250, 500), (500, 700)):
            chunk = runner.read_chunk(item(a, b), dict(runner.UPROOT_OPTIONS))
            for name in ("event", "spill", "time_in_spill"):
                assert np.array_equal(np.asarray(chunk[name]), plain[name][a:b])
            (kept,) = runner._READERS.trees.values()
            trees.append(kept[1])
            if _mapped_kb(path) is not None:
                assert _mapped_kb(path) == 0
        assert trees[0] is trees[1] is trees[2]  # one header for the three chunks
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # "changed": opened again
        runner.read_chunk(item(0, 250), dict(runner.UPROOT_OPTIONS))
        assert len(runner._READERS.trees) == 2 and all(v[1] is not trees[0] for k, v in runner._READERS.trees.items()
                                                       if k[1] == str(st.st_mtime_ns + 1000))
        runner.read_chunk(item(0, 250, two_files[0]), dict(runner.UPROOT_OPTIONS))
        assert len(runner._READERS.trees) == 2  # the least recently used closed
        assert trees[0]._file.source.closed
    finally:
        runner.close_chunk_files()
    assert runner._READERS.trees == {}


def test_the_records_cut_to_the_fields_the_outputs_read_give_the_same_outputs(tmp_path, monkeypatch):
    """A chunk's reco records keep only the fields of ``reco_fields`` (joined over the
    reconstruction's slices in those only): every output, the blinded data's included
    (protected region, controls), is what the records with every field give."""
    import sys

    from bitflip import canonical

    from na64reco.sim.generate import simulate

    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "benchmarks")))
    from bench_chain_ab import canonical as full_canonical

    files = {"s": [str(tmp_path / "s.root")], "d": [str(tmp_path / "d.root")]}
    simulate("na64mu", 1500, 4, 1001, files["s"][0], trigger="calibration")
    simulate("na64mu", 1500, 5, 1001, files["d"][0], trigger="calibration", truth=False)

    class AllFields(Processor):
        def reco_fields(self):
            return None

    joined = []
    real = base.concatenate_records
    monkeypatch.setattr(base, "concatenate_records", lambda records: joined.append(records[0].fields) or real(records))
    outs = []
    for cls in (Processor, AllFields):
        proc = cls()
        proc.RECO_BATCH = 250
        outs.append(run_files(files, RunOptions("na64mu_invisible"), processor_instance=proc))
    cut, every = joined[0], joined[-1]
    assert set(cut) == Processor().reco_fields() & set(every) and len(cut) < len(every) / 2
    assert outs[0]["d"]["cutflow"].blinded and outs[0]["s"]["cutflow"].n[0] > 1000
    assert canonical(outs[0]) == canonical(outs[1])
    assert full_canonical(outs[0]) == full_canonical(outs[1])
