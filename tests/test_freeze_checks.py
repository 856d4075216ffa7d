"""``na64reco freeze`` refuses, before it writes a ledger, an analysis that a run would refuse
(and so its unblinding, which then left a permanent "unblinding-aborted" record): bad run
options, input files that fail the run's file checks or are of another setup than the
processor's, runs the calibration tag does not cover, and tag names that are not tag names.

Uses the synthetic data, temporary calib/ and registry of ``tests/test_unblinding.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from na64reco.cli import main
from na64reco.unblinding import DEFAULT_AUDIT_NAME

pytest.importorskip("processors")
import test_unblinding as tu  # noqa: E402
from test_unblinding import PROC, TAG, write_data  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The temporary calib/, selection, code tree, registry and data files of test_unblinding.py."""
    return tu.env.__wrapped__(tmp_path, monkeypatch)


def _freeze_cli(env, *extra, files=None, processor=PROC, tag=TAG):
    files = env["files"] if files is None else files
    return main(["freeze", "--processor", processor, "--calib-tag", tag, *extra, "--ledger", str(env["ledger"]),
                 *map(str, files)])


def _refused(env, capsys, *words):
    """One line on stderr with ``words``; no ledger, no audit log, nothing in the registry."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("na64reco freeze: error: "), err
    assert all(w in err for w in words), err
    assert not env["ledger"].exists()
    assert not (env["ledger"].parent / DEFAULT_AUDIT_NAME).exists()
    assert not env["registry"].exists() or not any(env["registry"].iterdir())
    return err


@pytest.mark.parametrize("options, words", [
    ('{"executor": "nope"}', ("executor 'nope' is not one of", "iterative")),
    ('{"workers": -2}', ("workers must be >= 1", "-2")),
    ('{"chunksize": 0}', ("chunksize must be >= 1",)),
    ('{"retries": -1}', ("retries must be >= 0",)),
    ('{"workers": "2"}', ("processor option workers", "'2'", "int")),
    ('{"skip_bad_files": "no"}', ("processor option skip_bad_files", "bool")),
])
def test_freeze_refuses_options_a_run_refuses(env, capsys, options, words):
    assert _freeze_cli(env, "--options", options) == 1
    _refused(env, capsys, *words)


def test_freeze_refuses_a_truncated_file_unless_the_run_would_skip_it(env, capsys):
    good = env["files"][1]
    bad = env["tmp"] / "data" / "run7_c.root"
    data = env["files"][0].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert _freeze_cli(env, files=[good, bad]) == 1
    _refused(env, capsys, "run7_c.root")
    # with skip_bad_files the run (and so the unblinding) skips it: that can be frozen
    assert _freeze_cli(env, "--options", '{"skip_bad_files": true}', files=[good, bad]) == 0
    assert env["ledger"].exists()


def test_freeze_refuses_a_file_given_twice(env, capsys):
    """`run` refuses a file listed twice; freeze merged it silently (stop 49 review)."""
    first = env["files"][0]
    relative = Path(first).parent / ".." / Path(first).parent.name / Path(first).name
    assert _freeze_cli(env, files=[*env["files"], relative]) == 1
    _refused(env, capsys, "given twice", Path(first).name)


def test_freeze_refuses_a_file_of_another_setup(env, capsys):
    from na64reco.sim.generate import simulate

    e_file = env["tmp"] / "data" / "na64e.root"
    simulate("na64e", 20, 5, 7, e_file, truth=False)
    assert _freeze_cli(env, files=[*env["files"], e_file]) == 1
    _refused(env, capsys, "na64e.root", "na64e", "na64mu")
    # the NA64e processor on the NA64mu files
    assert _freeze_cli(env, processor="na64e_invisible", tag="na64e-default") == 1
    _refused(env, capsys, "run7_a.root", "na64mu", "na64e")


def test_freeze_refuses_a_run_the_calibration_does_not_cover(env, capsys):
    # run 0: in no run period of the setup (nor of the tag's conditions): a run stops there
    outside = write_data(env["tmp"] / "data" / "run0.root", 500, 20, run=0)
    assert _freeze_cli(env, files=[*env["files"], outside]) == 1
    _refused(env, capsys, "run0.root", "run 0")


@pytest.mark.parametrize("tag", ["../tags/na64mu-default", "", ".hidden", "a b/c"])
def test_freeze_refuses_a_calibration_tag_that_is_not_a_tag_name(env, capsys, tag):
    shutil.copy(env["calib"] / "tags" / f"{TAG}.yaml", env["calib"] / "tags" / ".hidden.yaml")
    assert _freeze_cli(env, tag=tag) == 1
    _refused(env, capsys, f"calibration tag {tag!r}: not a tag name")


def test_freeze_of_two_samples_says_what_to_freeze(env, capsys, monkeypatch):
    """(files of two beam energies were refused with the run's advice: "dataset 'frozen' mixes ...; give
    them as two datasets (a --fileset, or no --dataset)", options freeze does not have)"""
    import na64reco.file_check
    from na64reco.datasets import Sample, SampleMix

    def mixed(fileset, setup, **kwargs):
        (name, files), = fileset.items()
        mix = SampleMix(name)
        mix.add(files[0], Sample("na64mu", 7, False, beam_energy_gev=160.0))
        mix.add(files[1], Sample("na64mu", 7, False, beam_energy_gev=100.0))

    monkeypatch.setattr(na64reco.file_check, "check_files", mixed)
    assert _freeze_cli(env) == 1
    err = _refused(env, capsys, "the files to freeze mix files of a 160 GeV beam", "100 GeV",
                   "freeze each sample as its own analysis")
    assert "--fileset" not in err and "'frozen'" not in err
