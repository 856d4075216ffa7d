"""Outputs appear whole or not at all: an interrupted command leaves no output directory
(nor its temporary sibling), an existing one is refused without ``--overwrite`` and
replaced whole with it."""

from __future__ import annotations

import re

import pytest

from na64reco import atomic, cli


def leftovers(folder):
    return [p.name for p in folder.iterdir() if re.match(r"\..*\.(tmp|old)-\d+", p.name)]


# ---- the helpers -----------------------------------------------------------------------
def test_output_dir_appears_only_at_the_end(tmp_path):
    final = tmp_path / "out"
    with atomic.output_dir(final) as staged:
        (staged / "a.txt").write_text("a")
        assert not final.exists() and staged.parent == tmp_path
    assert (final / "a.txt").read_text() == "a" and not leftovers(tmp_path)


def test_output_dir_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic.output_dir(tmp_path / "out") as staged:
        (staged / "a.txt").write_text("a")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_output_dir_refuses_or_replaces_whole(tmp_path):
    final = tmp_path / "out"
    (final / "plots").mkdir(parents=True)
    (final / "plots" / "stale.png").write_text("old")
    with pytest.raises(atomic.OutputExists, match="exists; give --overwrite"), atomic.output_dir(final):
        pass
    assert (final / "plots" / "stale.png").exists()
    with atomic.output_dir(final, overwrite=True) as staged:
        (staged / "new.txt").write_text("new")
    assert sorted(p.name for p in final.rglob("*")) == ["new.txt"] and not leftovers(tmp_path)


def test_output_that_appears_meanwhile_is_not_overwritten(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(atomic.OutputExists), atomic.output_dir(final) as staged:
        (staged / "mine.txt").write_text("mine")
        final.mkdir()  # another run finished first
        (final / "theirs.txt").write_text("theirs")
    assert [p.name for p in final.iterdir()] == ["theirs.txt"] and not leftovers(tmp_path)


def test_overwrite_never_deletes_inputs_or_the_working_directory(tmp_path, monkeypatch):
    final = tmp_path / "out"
    final.mkdir()
    (final / "input.root").write_text("x")
    with pytest.raises(atomic.OutputExists, match="input.root"):
        atomic.check_new_output(final, overwrite=True, inputs=[final / "input.root"])
    monkeypatch.chdir(final)
    with pytest.raises(atomic.OutputExists, match="current directory"):
        atomic.check_new_output(final, overwrite=True)


def test_output_file_is_replaced_atomically(tmp_path):
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.output_file(target) as staged:
        staged.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and not leftovers(tmp_path)
    with atomic.output_file(target) as staged:
        assert staged.suffix == ".png"
        staged.write_text("new")
    assert target.read_text() == "new" and not leftovers(tmp_path)


def test_an_output_that_cannot_be_written_is_named_as_asked(tmp_path):
    """(the error named the temporary sibling, '/proc/.x.tmp-28827.parquet')"""
    target = tmp_path / "x.parquet"
    with pytest.raises(atomic.OutputError) as err:  # (pyarrow's words)
        with atomic.output_file(target) as staged:
            raise OSError(f"Failed to open local file '{staged}'. Detail: [errno 13] Permission denied")
    assert str(err.value) == f"{target}: cannot write: Failed to open local file '{target}'. Detail: [errno 13] " \
        "Permission denied"
    with pytest.raises(atomic.OutputError) as err:
        with atomic.output_file(target) as staged:
            raise PermissionError(13, "Permission denied", str(staged))
    assert str(err.value) == f"{target}: cannot write: [Errno 13] Permission denied: '{target}'"
    assert not list(tmp_path.iterdir())


def test_write_new_file_never_overwrites(tmp_path):
    path = atomic.write_new_file(tmp_path / "ledger.json", "{}")
    with pytest.raises(FileExistsError):
        atomic.write_new_file(path, "[]")
    assert path.read_text() == "{}" and not leftovers(tmp_path)


# ---- na64reco run ----------------------------------------------------------------------
def _run(files, out, *extra):
    return cli.main(["run", "--processor", "na64mu_invisible", "--no-progress", "--output", str(out),
                     *extra, str(files["data"])])


@pytest.mark.parametrize("exc", [RuntimeError("plotting failed"), KeyboardInterrupt()])
def test_interrupted_run_leaves_no_output(small_na64mu_files, tmp_path, monkeypatch, exc, capsys):
    import na64reco.plotting

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(na64reco.plotting, "control_plots", broken)
    monkeypatch.setenv(cli.CRASH_DIR_ENV, str(tmp_path / "crashes"))
    out = tmp_path / "runs" / "out"
    code = _run(small_na64mu_files, out)
    assert code == (cli.EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else cli.EXIT_BUG)
    assert not out.exists() and list((tmp_path / "runs").iterdir()) == []
    assert cli.main(["cutflow", str(out)]) == 1  # nothing that reads as a finished run
    capsys.readouterr()


def test_existing_output_is_refused_then_replaced_with_overwrite(small_na64mu_files, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "stale.png").write_bytes(b"old plot")
    (out / "cutflow.txt").write_text("an old run")
    assert _run(small_na64mu_files, out) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "exists" in err and "--overwrite" in err
    assert (out / "cutflow.txt").read_text() == "an old run"  # untouched

    assert _run(small_na64mu_files, out, "--overwrite", "--no-plots") == 0
    assert not (out / "plots").exists()  # nothing of the old run survives
    assert "an old run" not in (out / "cutflow.txt").read_text()
    assert {p.name for p in out.iterdir()} == {"output.coffea", "hists.root", "cutflow.json", "cutflow.txt",
                                              "provenance.json"}
    assert not leftovers(tmp_path)
    assert "outputs written to" in capsys.readouterr().out


# ---- reco --output ---------------------------------------------------------------------
def test_interrupted_reco_leaves_no_table(small_na64mu_files, tmp_path, monkeypatch, capsys):
    import na64reco.export as files

    real = files._write_chunk
    calls = []

    def fail_second(writer, output, reco):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(writer, output, reco)

    monkeypatch.setattr(files, "_write_chunk", fail_second)
    out = tmp_path / "mc.parquet"
    assert cli.main(["reco", str(small_na64mu_files["mc"]), "--output", str(out), "--chunk-size", "10",
                     "--quiet"]) == cli.EXIT_INTERRUPTED
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []
    capsys.readouterr()


def test_reco_progress_bar_advances_chunk_by_chunk(small_na64mu_files, tmp_path, monkeypatch):
    import tqdm

    import na64reco.export as files

    log = []
    real_update, real_init, real_reco = tqdm.tqdm.update, tqdm.tqdm.__init__, files.reconstruct

    def init(self, *args, **kwargs):
        log.append("bar")
        return real_init(self, *args, **kwargs)

    def update(self, n=1):
        log.append(n)
        return real_update(self, n)

    def reconstruct(*args, **kwargs):
        log.append("chunk")
        return real_reco(*args, **kwargs)

    monkeypatch.setattr(tqdm.tqdm, "__init__", init)
    monkeypatch.setattr(tqdm.tqdm, "update", update)
    monkeypatch.setattr(files, "reconstruct", reconstruct)
    summary = files.reconstruct_file(small_na64mu_files["mc"], tmp_path / "mc.parquet", chunk_size=10,
                                     progress=True)
    assert log[0] == "bar"  # shown before the first chunk is worked on
    updates = [x for x in log if isinstance(x, int)]
    assert len(updates) == log.count("chunk") >= 3 and sum(updates) == summary["events"]
    assert all(n == 10 for n in updates[:-1])
    assert log[1:] == ["chunk", 10] * (len(updates) - 1) + ["chunk", updates[-1]]  # one step per chunk
