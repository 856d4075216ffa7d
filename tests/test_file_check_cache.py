"""The file check kept between runs (:mod:`na64reco.file_check_cache`): a run over files checked
before and unchanged since takes their records from the cache with the same result; a file
changed in any way, a bad file, another check's code or a new file is checked again; a broken
cache never stops a run; what is read back cannot run code."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import shutil
import sqlite3
import zlib

import numpy as np
import pytest
from test_file_check import _simulate

from na64reco import file_check_cache
from na64reco.errors import ConfigError, RawFormatError
from na64reco.file_check import check_files
from na64reco.file_check_cache import CheckCache

N_FILES = 6


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cached")
    return [_simulate(folder / f"f{i}.root", i + 1) for i in range(N_FILES)]


@pytest.fixture
def files(made, tmp_path):
    """Fresh copies of the module's files (a test may change them)."""
    out = []
    for p in made:
        out.append(str(tmp_path / os.path.basename(p)))
        shutil.copy(p, out[-1])
    return out


@pytest.fixture(autouse=True)
def not_racy(monkeypatch):
    """Files made a moment ago are kept (the racy window is tested on its own)."""
    monkeypatch.setattr(file_check_cache, "RACY_SECONDS", 0.0)


def _check(files, cache_dir, **kw):
    cache = CheckCache(cache_dir)
    try:
        return check_files({"d": list(files)}, "na64mu", skip_bad_files=kw.pop("skip", True), cache=cache, **kw), cache
    finally:
        cache.close()


def _same_check(a, b):
    assert a.good == b.good and a.entries == b.entries and a.skipped == b.skipped
    assert a.max_cluster == b.max_cluster and a.coffea_metadata() == b.coffea_metadata()
    assert a.files.keys() == b.files.keys()
    for path, rec in a.files.items():
        other = b.files[path]
        assert {k: v for k, v in rec.items() if k != "blocks"} == {k: v for k, v in other.items() if k != "blocks"}
        assert rec["baskets"] is not None and rec["baskets"] == other["baskets"]
        for x, y in ((rec["blocks"], other["blocks"]),):
            assert x.names == y.names
            np.testing.assert_array_equal(x.table, y.table)
            np.testing.assert_array_equal(x.starts, y.starts)
        for k in a.spills[path]:
            np.testing.assert_array_equal(a.spills[path][k], b.spills[path][k])


def test_a_second_check_takes_the_records_from_the_cache_with_the_same_result(files, tmp_path):
    ref = check_files({"d": files}, "na64mu", skip_bad_files=True)
    first, c1 = _check(files, tmp_path / "cache")
    assert first.from_cache == 0 and c1.stored == N_FILES
    second, c2 = _check(files, tmp_path / "cache")
    assert second.from_cache == c2.hits == N_FILES and c2.stored == 0
    _same_check(ref, first)
    _same_check(ref, second)


def test_a_file_given_by_another_path_is_the_same_file(files, tmp_path, monkeypatch):
    _check(files, tmp_path / "cache")
    monkeypatch.chdir(os.path.dirname(files[0]))
    rel = [os.path.basename(p) for p in files]
    got, cache = _check(rel, tmp_path / "cache")
    assert cache.hits == N_FILES and got.good == {"d": rel}  # (records under the paths as given)


def test_a_changed_file_is_checked_again(files, made, tmp_path):
    _check(files, tmp_path / "cache")
    # another file's content copied over the first, its times kept (size and mtime alike as can be)
    shutil.copy2(made[1], files[0])
    os.utime(files[0], ns=(os.stat(made[0]).st_atime_ns, os.stat(made[0]).st_mtime_ns))
    with pytest.raises(ConfigError) as copied:  # now a copy of files[1]: seen only if checked again
        _check(files, tmp_path / "cache")
    assert f"{files[1]} is a copy of {files[0]}" in str(copied.value)
    # truncated in place: bad, and reported as bad, not taken from the cache
    data = open(made[0], "rb").read()
    with open(files[0], "wb") as fh:
        fh.write(data[: len(data) // 2])
    got, cache = _check(files, tmp_path / "cache")
    assert list(got.skipped) == [files[0]] and cache.hits == N_FILES - 1
    with pytest.raises(RawFormatError) as bad:
        _check(files, tmp_path / "cache", skip=False)
    assert str(bad.value).startswith(f"{files[0]}: ") and "truncated" in str(bad.value)


def test_a_bad_file_is_not_kept_and_is_reported_every_time(files, tmp_path):
    data = open(files[2], "rb").read()
    with open(files[2], "wb") as fh:
        fh.write(data[: len(data) // 3])
    first, c1 = _check(files, tmp_path / "cache")
    second, c2 = _check(files, tmp_path / "cache")
    assert c1.stored == N_FILES - 1 and c2.hits == N_FILES - 1
    assert first.skipped == second.skipped and list(second.skipped) == [files[2]]


def test_a_copy_of_a_kept_file_is_still_refused(files, tmp_path):
    _check(files, tmp_path / "cache")
    copy = str(tmp_path / "copy.root")
    shutil.copy(files[3], copy)
    with pytest.raises(ConfigError) as err:
        _check([*files, copy], tmp_path / "cache")
    assert copy in str(err.value) and files[3] in str(err.value)


def test_another_check_code_or_setup_checks_again(files, tmp_path, monkeypatch):
    _check(files, tmp_path / "cache")
    monkeypatch.setattr(file_check_cache, "check_code_digest", lambda: "another check")
    got, cache = _check(files, tmp_path / "cache")
    assert cache.hits == 0 and got.from_cache == 0
    cache = CheckCache(tmp_path / "cache")
    assert cache.lookup(files, "na64e") == {}


def test_a_file_changed_just_before_its_check_is_not_kept(files, tmp_path, monkeypatch):
    monkeypatch.setattr(file_check_cache, "RACY_SECONDS", 3600.0)
    _, cache = _check(files, tmp_path / "cache")
    assert cache.stored == 0


def test_workers_check_only_what_the_cache_does_not_know(files, tmp_path):
    from test_file_check import ThreadChecks

    _check(files[:3], tmp_path / "cache")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        remote = ThreadChecks(pool)
        cache = CheckCache(tmp_path / "cache")
        got = check_files({"d": files}, "na64mu", skip_bad_files=True, remote=remote, cache=cache)
    assert got.from_cache == 3 and cache.stored == N_FILES - 3
    _same_check(check_files({"d": files}, "na64mu", skip_bad_files=True), got)


def test_a_cache_that_cannot_be_used_warns_and_checks_every_file(files, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / file_check_cache.FILENAME).write_bytes(b"not a database" * 100)
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    for where in (corrupt, not_a_dir):
        with pytest.warns(UserWarning, match=str(where)):
            got, cache = _check(files, where)
        assert got.from_cache == 0 and got.good == {"d": files}


def test_a_record_that_would_run_code_is_not_read_back(files, tmp_path):
    _check(files[:1], tmp_path / "cache")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    db = sqlite3.connect(tmp_path / "cache" / file_check_cache.FILENAME)
    with db:
        db.execute("UPDATE checks SET record = ?", (zlib.compress(pickle.dumps(Evil())),))
    db.close()
    got, cache = _check(files[:1], tmp_path / "cache")
    assert not marker.exists() and cache.hits == 0 and got.good == {"d": files[:1]}


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("NA64RECO_CACHE_DIR", str(tmp_path / "a"))
    assert file_check_cache.default_dir() == tmp_path / "a"
    monkeypatch.delenv("NA64RECO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert file_check_cache.default_dir() == tmp_path / "x" / "na64reco"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert file_check_cache.default_dir() == tmp_path / "h" / ".cache" / "na64reco"


def test_a_run_over_files_it_checked_before_checks_none_and_gives_the_same_outputs(files, monkeypatch):
    from na64reco import file_check
    from na64reco.runner import RunOptions, cutflow_summary, run_files

    checked = []
    real = file_check.check_file
    monkeypatch.setattr(file_check, "check_file", lambda p, *a, **kw: checked.append(p) or real(p, *a, **kw))

    def run(**kw):
        checked.clear()
        out = run_files({"mc": files}, RunOptions("na64mu_invisible", **kw))
        return out["mc"], cutflow_summary(out)["mc"], list(checked)

    first, summary, n1 = run()
    again, s2, n2 = run()
    full, s3, n3 = run(check_cache=False)
    assert n1 == files and n2 == [] and n3 == files
    for out, s in ((again, s2), (full, s3)):
        for k in ("cutflow", "nminusone", "regions"):  # (as JSON: an empty row's efficiency is NaN)
            assert json.dumps(s[k], sort_keys=True) == json.dumps(summary[k], sort_keys=True)
        assert out["provenance"].events_processed == first["provenance"].events_processed > 0
        assert out["provenance"].n_beam == first["provenance"].n_beam
        for name, h in first["hists"].items():
            np.testing.assert_array_equal(out["hists"][name].values(flow=True), h.values(flow=True))


def test_the_unblinding_run_checks_every_file(monkeypatch):
    from na64reco import runner
    from na64reco.unblinding import outputs

    seen = {}

    class Stop(Exception):
        pass

    def run_files(fileset, opts, **kw):
        seen["opts"] = opts
        raise Stop

    monkeypatch.setattr(runner, "make_processor", lambda opts, unblind=None: None)
    monkeypatch.setattr(runner, "run_files", run_files)
    state = {"processor": {"name": "na64mu_invisible", "options": {}}, "calibration": {"tag": "t"},
             "selection": {"path": None}, "files": [{"path": "a.root"}]}
    with pytest.raises(Stop):
        outputs.run_unblinded({"state": state}, token=None, output_dir=None)
    assert seen["opts"].check_cache is False


def test_old_records_are_dropped(files, tmp_path, monkeypatch):
    _check(files[:2], tmp_path / "cache")
    db = sqlite3.connect(tmp_path / "cache" / file_check_cache.FILENAME)
    with db:
        db.execute("UPDATE checks SET stored = stored - ? WHERE path = ?",
                   ((file_check_cache.KEEP_DAYS + 1) * 86400, os.path.realpath(files[0])))
    db.close()
    _check(files[2:3], tmp_path / "cache")  # storing drops the old record
    cache = CheckCache(tmp_path / "cache")
    assert set(cache.lookup(files[:3], "na64mu")) == set(files[1:3])


def test_a_cache_of_another_layout_is_emptied_not_a_failure(files, tmp_path):
    (tmp_path / "cache").mkdir()
    db = sqlite3.connect(tmp_path / "cache" / file_check_cache.FILENAME)
    with db:  # (an older library's table: other columns)
        db.execute("CREATE TABLE checks (path TEXT, setup TEXT, code TEXT, stamp TEXT, record BLOB)")
        db.execute("INSERT INTO checks VALUES ('x', 'na64mu', 'c', 's', x'00')")
    db.close()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, c1 = _check(files, tmp_path / "cache")
        second, c2 = _check(files, tmp_path / "cache")
    assert c1.stored == N_FILES and c2.hits == N_FILES


def test_a_bit_flipped_unseen_by_stat_is_an_error_or_changes_nothing(files, tmp_path, monkeypatch):
    """Flips the file system never saw (the record's stamp set to the flipped file's, as if its
    times had not moved), in every region of the file: the run again takes the record back and
    stops naming the file (the chunk read, or its checksums against the record's blocks), or
    gives the clean run's outputs (the flip hit nothing that is read); never other outputs."""
    from bitflip import classify, draw_flips, result_of

    from na64reco.runner import RunOptions, run_files

    monkeypatch.setenv("NA64RECO_CACHE_DIR", str(tmp_path / "cache"))
    target = files[2]

    def run(_):
        return run_files({"mc": files}, RunOptions("na64mu_invisible"))

    kind, clean = result_of(target, run)  # (also keeps every file's record)
    assert kind == "result"
    original = open(target, "rb").read()
    outcomes = {}
    for region, bit in draw_flips(target, 2, np.random.default_rng(11)):
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        with open(target, "r+b") as fh:
            fh.write(bytes(data))
        db = sqlite3.connect(tmp_path / "cache" / file_check_cache.FILENAME)
        with db:
            db.execute("UPDATE checks SET stamp = ? WHERE path = ?",
                       (file_check_cache._stamp_text(file_check_cache.file_stamp(target)), os.path.realpath(target)))
        db.close()
        cache = CheckCache(tmp_path / "cache")
        assert target in cache.lookup(files, "na64mu")  # (the record is taken back)
        cache.close()
        outcomes[(region, bit)] = classify(*result_of(target, run), target, clean)
    assert set(outcomes.values()) <= {"error", "identical"}, outcomes
    assert any(v == "error" for (region, _), v in outcomes.items() if region == "events baskets"), outcomes


def test_a_futures_pool_process_takes_the_files_it_was_not_told_of_from_the_cache(tmp_path, monkeypatch):
    """A process of the futures pool, which the run cannot tell what its check found, looks the
    file up in the run's cache: a data file is then not opened for its checksum blocks, spills or
    setup (open_raw fails here if called)."""
    from na64reco.io.location import file_version
    from na64reco.sim.generate import simulate
    from processors import base
    from processors.na64mu_invisible import Processor

    data = str(tmp_path / "data.root")
    simulate("na64mu", 100, 5, 1001, data, process="beam", trigger="calibration", spill_particles=50, truth=False)
    check, _ = _check([data], tmp_path / "cache")
    proc = Processor()
    proc.check_cache = str(tmp_path / "cache")
    proc = pickle.loads(pickle.dumps(proc))  # (as shipped to a pool process)
    base.close_raw_files()

    def no_open(*a, **kw):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(base, "open_raw", no_open)
    try:
        info = proc.file_info({"filename": data}, None)
        note = base._checked(data, file_version(data))
        assert info.is_data and info.run == 1001 and note is not None and note["blocks"] is not None
        for k, v in check.spills[data].items():
            np.testing.assert_array_equal(proc._spills(data)[k], v)
    finally:
        base.close_raw_files()


def test_a_futures_run_from_the_cache_gives_the_run_in_one_process(files):
    from na64reco.runner import RunOptions, cutflow_summary, run_files

    ref = cutflow_summary(run_files({"mc": files}, RunOptions("na64mu_invisible", check_cache=False)))["mc"]
    run_files({"mc": files}, RunOptions("na64mu_invisible"))  # (keeps the records)
    got = cutflow_summary(run_files({"mc": files}, RunOptions("na64mu_invisible", executor="futures", workers=2,
                                                               chunksize=40)))["mc"]
    for k in ("cutflow", "nminusone", "regions"):
        assert json.dumps(got[k], sort_keys=True) == json.dumps(ref[k], sort_keys=True)
    assert got["provenance"]["events_processed"] == ref["provenance"]["events_processed"] > 0
    assert got["provenance"]["n_beam"] == ref["provenance"]["n_beam"]


def test_a_run_with_progress_says_which_checks_came_from_the_cache(files, capsys):
    from na64reco.runner import RunOptions, run_files

    run_files({"mc": files}, RunOptions("na64mu_invisible", status=True))
    assert "taken from" not in capsys.readouterr().err  # (a first run: every file checked)
    run_files({"mc": files}, RunOptions("na64mu_invisible", status=True))
    err = capsys.readouterr().err
    assert f"the checks of {N_FILES} of {N_FILES} files taken from" in err and "--no-check-cache" in err
