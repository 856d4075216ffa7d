"""Runner: bad files with and without --skip-bad-files (exact accounting), transient-only
retries, fileset YAML, saved outputs and the cutflow command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot
from test_processors_synthetic import synthetic_reco, write_raw
from test_raw_format import signed_meta

from na64reco.conditions import default_tag
from na64reco.errors import ConfigError, NA64Error
from na64reco.runner import (
    ChunkGuard,
    RunOptions,
    is_transient,
    load_fileset,
    run_files,
    save_outputs,
)
from processors.na64mu_invisible import Processor


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("runner")
    good = [str(write_raw(d / f"good{i}.root", n_events=600, first_event=1000 * i)) for i in range(2)]
    empty = d / "empty.root"
    empty.write_bytes(b"")
    full = (d / "good0.root").read_bytes()
    trunc = d / "truncated.root"
    trunc.write_bytes(full[: len(full) // 2])
    other = str(write_raw(d / "na64e.root", setup="na64e", n_events=321))
    nobranch = d / "nobranch.root"
    with uproot.recreate(nobranch) as f:
        f.mktree("events", {"run": np.int32, "event": np.int64})
        f["events"].extend({"run": np.ones(50, np.int32), "event": np.arange(50)})
        f.mktree("spills", {"run": np.int32})
        f["spills"].extend({"run": np.ones(1, np.int32)})
        f["na64raw"] = json.dumps(signed_meta({"format": "na64raw", "format_version": 2, "setup": "na64mu",
                                               "run": 1, "has_truth": False}))
    return {"good": good, "empty": str(empty), "truncated": str(trunc), "other": other,
            "nobranch": str(nobranch), "dir": d}


def _opts(**kw):
    return RunOptions("na64mu_invisible", chunksize=250, **kw)


@pytest.mark.parametrize("bad, words", [
    ("empty", ["empty"]), ("truncated", ["truncated"]), ("other", ["na64e", "na64mu"]),
    ("nobranch", ["lacks branch"]),
])
def test_a_bad_file_stops_the_run_with_one_error_naming_it(files, bad, words):
    with pytest.raises(NA64Error) as err:
        run_files({"d": [files["good"][0], files[bad]]}, _opts(),
                  processor_instance=Processor(reco=synthetic_reco))
    msg = str(err.value)
    assert files[bad] in msg and "\n" not in msg
    for w in words:
        assert w in msg


def test_skip_bad_files_accounts_every_event(files):
    fs = {"d": [files["good"][0], files["empty"], files["truncated"], files["other"],
                files["nobranch"], files["good"][1]]}
    out = run_files(fs, _opts(skip_bad_files=True), processor_instance=Processor(reco=synthetic_reco))
    prov = out["d"]["provenance"]
    assert prov.events_processed == 1200
    assert set(prov.skipped) == {files[k] for k in ("empty", "truncated", "other", "nobranch")}
    assert prov.skipped[files["other"]]["events"] == 321          # countable: accounted
    assert prov.skipped[files["nobranch"]]["events"] == 50
    assert prov.skipped[files["empty"]]["events"] == 0            # unreadable: nothing to count
    n_trunc = prov.skipped[files["truncated"]]["events"]             # countable if the header survived
    assert n_trunc in (0, 600)
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200 + 321 + 50 + n_trunc
    assert all(r["reason"] for r in prov.skipped.values())
    assert out["d"]["cutflow"].n[0] > 0


def test_a_run_whose_every_file_is_bad_fails_even_when_skipping(files):
    bad = [files[k] for k in ("empty", "truncated", "nobranch")]
    with pytest.raises(NA64Error, match=r"no events processed: all 3 input files were bad") as err:
        run_files({"d": bad}, _opts(skip_bad_files=True), processor_instance=Processor(reco=synthetic_reco))
    assert files["empty"] in str(err.value) and "\n" not in str(err.value)


def test_a_file_failing_inside_its_chunks_is_skipped_chunk_by_chunk(files, tmp_path):
    path = str(write_raw(tmp_path / "late.root", n_events=1000))

    def reco_failing_late(events, setup, conditions, source=""):
        if np.asarray(events["event"]).max() >= 750:
            raise OSError("basket 7 cannot be decompressed")   # what a damaged file gives
        return synthetic_reco(events, setup, conditions, source)

    opts = _opts(skip_bad_files=True)
    out = run_files({"d": [path, files["good"][0]]}, opts, processor_instance=Processor(reco=reco_failing_late))
    prov = out["d"]["provenance"]
    assert prov.skipped[path]["events"] == 250 and "750-1000" in prov.skipped[path]["reason"]
    assert prov.events_processed == 750 + 600
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1600
    with pytest.raises(NA64Error, match="late.root"):
        run_files({"d": [path]}, _opts(), processor_instance=Processor(reco=reco_failing_late))


def _flaky(exc_type, log):
    """A reco stage failing at the first attempt of each chunk; attempts logged to a file
    (the processor is pickled by the runner, so in-memory counters would be copies)."""
    def reco(events, setup, conditions, source=""):
        first = str(int(np.asarray(events["event"])[0]))
        seen = log.read_text().split() if log.exists() else []
        with open(log, "a") as f:
            f.write(first + "\n")
        if first not in seen:
            raise exc_type("first attempt fails")
        return synthetic_reco(events, setup, conditions, source)
    return reco


def _calls(log):
    return len(log.read_text().split()) if log.exists() else 0


def test_transient_errors_are_retried_deterministic_ones_are_not(files, tmp_path):
    log = tmp_path / "a.log"
    out = run_files({"d": [files["good"][0]]}, _opts(retries=2),
                    processor_instance=Processor(reco=_flaky(TimeoutError, log)))
    assert out["d"]["provenance"].events_processed == 600
    assert _calls(log) == 2 * 2                              # 2 chunks, each failed once
    log = tmp_path / "b.log"
    with pytest.raises(NA64Error, match="first attempt fails"):
        run_files({"d": [files["good"][0]]}, _opts(retries=5),
                  processor_instance=Processor(reco=_flaky(ValueError, log)))
    assert _calls(log) == 1                                  # never re-run
    log = tmp_path / "c.log"
    with pytest.raises(NA64Error):
        run_files({"d": [files["good"][0]]}, _opts(retries=0),
                  processor_instance=Processor(reco=_flaky(TimeoutError, log)))
    assert _calls(log) == 1


def test_guard_classification():
    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError())
    assert not is_transient(ValueError()) and not is_transient(FileNotFoundError())
    from na64reco.errors import RawFormatError

    assert not is_transient(RawFormatError("x"))
    g = ChunkGuard(retries=3, skip_bad_files=False, backoff=0)
    n = []

    def f():
        n.append(1)
        raise KeyError("bug")

    with pytest.raises(NA64Error):
        g(3, False, f)
    assert len(n) == 1


def test_fileset_yaml(files, tmp_path):
    p = files["dir"] / "fileset.yaml"
    p.write_text("schema_version: 1\ndatasets:\n  mu: [good0.root]\n  mu2: {files: [good1.root]}\n")
    fs = load_fileset(p)
    assert fs == {"mu": [files["good"][0]], "mu2": [files["good"][1]]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\ndatasets:\n  mu: 3\n")
    with pytest.raises(ConfigError, match=r"datasets\.mu"):
        load_fileset(bad)
    with pytest.raises(ConfigError, match="executor"):
        RunOptions("na64mu_invisible", executor="spark")
    # 1 and "1" are two YAML keys but one dataset name: refused, not one silently replacing the other
    twice = tmp_path / "twice.yaml"
    twice.write_text('schema_version: 1\ndatasets:\n  1: [good0.root]\n  "1": [good1.root]\n')
    with pytest.raises(ConfigError, match=r"datasets\.1.*given twice"):
        load_fileset(twice)


def test_saved_outputs_and_cutflow_command(files, tmp_path, capsys):
    from na64reco.cli import main

    out = run_files({"mc": [files["good"][0]]}, _opts(), processor_instance=Processor(reco=synthetic_reco))
    outdir = save_outputs(out, tmp_path / "out", plots=False)
    for name in ("output.coffea", "hists.root", "cutflow.txt", "cutflow.json", "provenance.json"):
        assert (outdir / name).is_file()
    from na64reco.plotting import plot_cutflow, plot_hist1d

    plot_cutflow(out["mc"]["cutflow"], "mc", outdir / "cf.png")
    plot_hist1d(out["mc"]["nminus1"]["signal_box"], "box", outdir / "box.png", hi=80)
    assert (outdir / "cf.png").stat().st_size > 1000 and (outdir / "box.png").stat().st_size > 1000
    capsys.readouterr()
    with uproot.open(outdir / "hists.root") as f:
        h = f["mc/p_in_all"].to_hist()
        np.testing.assert_allclose(h.values(), out["mc"]["hists"]["p_in"][{"stage": "all"}].values())
    prov = json.loads((outdir / "provenance.json").read_text())["mc"]
    assert prov["selection_sha256"] == Processor().selection.sha256 and prov["calib_tag"] == default_tag("na64mu")
    assert main(["cutflow", str(outdir), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["mc"]["cutflow"][0]["events"] == 600
    assert [r["events"] for r in js["mc"]["cutflow"]] == out["mc"]["cutflow"].n.tolist()
    assert main(["cutflow", str(outdir / "output.coffea")]) == 0
    assert "signal_box" in capsys.readouterr().out
    assert main(["cutflow", str(tmp_path)]) == 1


def test_chunks_are_whole_clusters_of_at_most_the_chunk_size():
    from na64reco.runner import chunking

    clusters = [0, 1900, 3800, 5700, 7600, 9400]
    for chunksize in (1900, 2500, 4000, 5000, 12000):
        target, align = chunking(chunksize, 1900)
        assert align
        edges = [0]  # coffea's rule for aligned chunks
        for c in clusters:
            if c >= edges[-1] + target:
                edges.append(c)
        if edges[-1] != clusters[-1]:
            edges.append(clusters[-1])
        sizes = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        assert max(sizes) <= chunksize and set(edges) <= set(clusters)
    assert chunking(1000, 1900) == (1000, False)  # clusters larger than a chunk: plain cuts
    assert chunking(1000, 0) == (1000, False)


def _reference_exposure(paths, processed):
    """Slow twin of the spill rule: a spill's n_beam counts iff all its events were processed."""
    from na64reco.io.raw import open_raw

    total = 0
    for p in paths:
        with open_raw(p) as raw:
            spills, ev = raw.spills(), raw.events()
        spill_of_event = np.asarray(ev["spill"])
        done = processed(np.asarray(ev["event"]))
        for s, n_beam in zip(spills["spill"], spills["n_beam"], strict=True):
            if done[spill_of_event == s].all():
                total += int(n_beam)
    return total


def test_mot_counts_exactly_the_spills_whose_events_were_processed(files, tmp_path):
    """A chunk skipped while reading removes the MOT of the spills it touches, and only those."""
    path = str(write_raw(tmp_path / "early.root", n_events=1000))  # 4 spills of 250 events

    def reco_failing_early(events, setup, conditions, source=""):
        if np.asarray(events["event"]).min() < 250:
            raise OSError("basket 0 cannot be decompressed")
        return synthetic_reco(events, setup, conditions, source)

    paths = [path, files["good"][0]]  # good0: 600 events in 4 spills of 150
    out = run_files({"d": paths}, _opts(skip_bad_files=True), processor_instance=Processor(reco=reco_failing_early))
    prov = out["d"]["provenance"]
    assert prov.n_beam == _reference_exposure(paths, lambda event: event >= 250) == 3 * 100_000 + 2 * 100_000
    assert prov.n_spills == 5
    uncounted = {(s["file"], s["spill"]) for s in prov.partial_spills}
    assert uncounted == {(path, 1), (files["good"][0], 1), (files["good"][0], 2)}
    assert all(s["processed"] < s["written"] for s in prov.partial_spills)
    assert prov.events_processed + prov.events_skipped == prov.events_total


def test_a_file_refused_up_front_adds_no_exposure(files):
    out = run_files({"d": [files["good"][0], files["empty"]]}, _opts(skip_bad_files=True),
                    processor_instance=Processor(reco=synthetic_reco))
    prov = out["d"]["provenance"]
    assert prov.n_beam == _reference_exposure([files["good"][0]], lambda event: event >= 0) == 4 * 100_000
    assert prov.partial_spills == []


def test_the_provenance_lists_files_and_spills_in_fileset_order_whatever_order_chunks_finished():
    """(dask merged two files' provenance the other way round from the iterative executor: provenance.json
    and the cut-flow's excluded spills differed between executors; executors review, stop 48)"""
    from na64reco.runner import _in_fileset_order
    from processors.base import Provenance

    prov = Provenance("p", "s", "sha", "src", "tag", "v")
    prov.files = {"b.root": {"run": 2}, "a.root": {"run": 1}}
    prov.excluded_spills = [{"file": "b.root", "spill": 1}, {"file": "a.root", "spill": 5},
                            {"file": "a.root", "spill": 2}]
    prov.partial_spills = [{"file": "b.root", "spill": 3}, {"file": "a.root", "spill": 4}]
    _in_fileset_order(prov, ["a.root", "b.root"])
    assert list(prov.files) == ["a.root", "b.root"]
    assert [(e["file"], e["spill"]) for e in prov.excluded_spills] == [("a.root", 2), ("a.root", 5), ("b.root", 1)]
    assert [e["file"] for e in prov.partial_spills] == ["a.root", "b.root"]
