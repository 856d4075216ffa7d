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


def test_each_file_is_checked_once_and_coffea_preprocessing_opens_none(two_files, monkeypatch):
    reference = _run(two_files)["d"]
    structure = _counting(monkeypatch, raw_module, "_check_structure")

    def no_open(*args, **kwargs):
        raise AssertionError("coffea's preprocessing opened a file the runner had checked")

    monkeypatch.setattr(Runner, "metadata_fetcher_root", staticmethod(no_open))
    out = _run(two_files)["d"]
    assert len(structure) == len(two_files)  # the runner's check; the processor does not repeat it
    prov = out["provenance"]
    assert prov.events_processed == prov.events_total == 1400 and prov.chunks == reference["provenance"].chunks
    assert out["cutflow"].to_dict() == reference["cutflow"].to_dict()
    assert base._CHECKED == {}  # forgotten after the run


def test_chunk_files_and_raw_files_keep_no_array_cache(two_files, monkeypatch):
    from coffea.nanoevents import NanoEventsFactory

    caches = []
    real = NanoEventsFactory.from_root.__func__

    def from_root(cls, file, *args, **kwargs):
        caches.append(file.file.array_cache)
        return real(cls, file, *args, **kwargs)

    monkeypatch.setattr(NanoEventsFactory, "from_root", classmethod(from_root))
    _run(two_files)
    assert len(caches) == 6 and all(c is None for c in caches)  # 3 chunks per file
    with open_raw(two_files[0]) as raw:
        assert raw._file.file.array_cache is None


def test_a_file_changed_since_the_check_is_checked_again(two_files, monkeypatch):
    path = two_files[0]
    structure = _counting(monkeypatch, raw_module, "_check_structure")
    base.close_raw_files()
    base.note_checked_files({path: str(os.stat(path).st_mtime_ns - 1)})  # checked at another mtime
    try:
        base._raw(path)
        assert len(structure) == 1
        base.close_raw_files()
        base.note_checked_files({path: str(os.stat(path).st_mtime_ns)})
        base._raw(path)
        assert len(structure) == 1  # the same file as checked: not again
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
