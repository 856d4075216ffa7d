"""`na64reco run` datasets as a user gives them: plain names only, one sample per dataset,
the automatic groups split by trigger, beam energy and run period, the same order of the
datasets on every executor, and one-line errors of a malformed --bad-spills list."""

from __future__ import annotations

import json

import hepunits as u
import pytest

from na64reco import cli
from na64reco.bad_spills import load_bad_spills
from na64reco.errors import ConfigError
from na64reco.runner import RunOptions, fileset_from_files, load_fileset, run_files

MOT = 300  # beam particles per file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small NA64mu files of several kinds (``{kind: str path}``)."""
    from na64reco.sim.generate import simulate

    d = tmp_path_factory.mktemp("kinds")
    kinds = {
        "mu": dict(seed=1, run=5),
        "calib": dict(seed=2, run=5, trigger="calibration"),
        "e100": dict(seed=3, run=5, beam_energy=100 * u.GeV),
        "mu23": dict(seed=4, run=10001),
        "data": dict(seed=5, run=6, truth=False),
        "data23": dict(seed=6, run=10002, truth=False),
        "sig": dict(seed=7, run=5, process="signal", mass=0.1 * u.GeV),
        "sig05": dict(seed=8, run=5, process="signal", mass=0.5 * u.GeV),
    }
    for name, kw in kinds.items():
        simulate("na64mu", MOT, output=d / f"{name}.root", **kw)
    return {name: str(d / f"{name}.root") for name in kinds}


def _run(*args) -> int:
    return cli.main(["run", "--processor", "na64mu_invisible", "--no-progress", "--no-plots", *map(str, args)])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---- 1. dataset names ------------------------------------------------------------------
def test_a_dataset_name_cannot_write_outside_the_output(files, tmp_path, monkeypatch, capsys):
    """(`--dataset ../../escape` wrote ~40 escape_*.png into the parent of the output)"""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert _run("--dataset", "../../escape", "--output", "r", files["mu"]) == 1
    err = _one_line_error(capsys)
    assert "'../../escape'" in err and "letters, digits and '_ . + -'" in err
    assert not any(tmp_path.rglob("*.png")) and not (work / "r").exists()


@pytest.mark.parametrize("name", ["", ".hidden", "a b", "x/y", "..", "é"])
def test_dataset_names_are_checked_before_any_work(name, tmp_path):
    with pytest.raises(ConfigError, match="dataset name .* is not allowed: expected letters, digits"):
        fileset_from_files([str(tmp_path / "missing.root")], name)
    # in Python too, before a file is opened (the file does not exist)
    with pytest.raises(ConfigError, match="dataset name .* is not allowed"):
        run_files({name: [str(tmp_path / "missing.root")]}, RunOptions("na64mu_invisible"))


def test_a_fileset_dataset_name_is_checked_when_the_fileset_is_read(files, tmp_path, monkeypatch, capsys):
    """(a fileset dataset "weird/name" failed after all the processing, with a raw
    "[Errno 2] No such file or directory ... plots/weird/name_nminus1_trigger.png")"""
    fs = tmp_path / "fs.yaml"
    fs.write_text(f"schema_version: 1\ndatasets:\n  good: [{files['mu']}]\n  weird/name: [{files['sig']}]\n")
    monkeypatch.chdir(tmp_path)
    assert _run("--fileset", fs, "--output", "r") == 1
    err = _one_line_error(capsys)
    assert "fs.yaml: key 'datasets.weird/name': dataset name 'weird/name' is not allowed" in err
    fs.write_text(f"schema_version: 1\ndatasets:\n  mu_data-2022+v1.0: [{files['mu']}]\n")
    assert list(load_fileset(fs)) == ["mu_data-2022+v1.0"]


# ---- 2. one sample per dataset ---------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "what"), [
    ("sig", "data", ("simulation", "data")),
    ("mu", "calib", ("files of the physics trigger", "files of the calibration trigger")),
    ("mu", "e100", ("files of a 160 GeV beam", "files of a 100 GeV beam")),
    ("sig", "sig05", ("signal of mass 0.1 GeV", "signal of mass 0.5 GeV")),  # (summed at first)
    ("mu", "sig", ("simulated 'mixture' files", "simulated 'signal' files")),
])
def test_an_explicit_dataset_of_two_samples_is_refused(files, a, b, what, tmp_path, monkeypatch, capsys):
    """(`--dataset all sig.root data.root` summed data, weight 1, and MC, weights ~5e-12, in one
    cut-flow and one MOT)"""
    monkeypatch.chdir(tmp_path)
    assert _run("--dataset", "all", "--output", "r", files[a], files[b]) == 1
    err = _one_line_error(capsys)
    assert f"dataset 'all' mixes {what[0]} ({files[a]}) and {what[1]} ({files[b]})" in err, err
    assert not (tmp_path / "r").exists()


def test_one_dataset_may_sum_run_periods(files, tmp_path):
    from na64reco.file_check import check_files

    check = check_files({"all": [files["mu"], files["mu23"]]}, "na64mu", skip_bad_files=False)
    assert check.good == {"all": [files["mu"], files["mu23"]]}


def test_files_are_grouped_by_trigger_beam_energy_and_period(files):
    order = ["mu", "data", "calib", "e100", "mu23", "data23", "sig"]
    assert list(fileset_from_files([files[k] for k in order]).items()) == [  # (in the order formed)
        ("mc_mixture", [files["mu"]]),
        ("data", [files["data"]]),
        ("mc_mixture_calibration", [files["calib"]]),
        ("mc_mixture_100GeV", [files["e100"]]),
        ("mc_mixture_2023", [files["mu23"]]),
        ("data_2023", [files["data23"]]),
        ("mc_signal_m0.1GeV", [files["sig"]]),
    ]
    # files that agree keep the plain name, whatever they are
    assert fileset_from_files([files["calib"]]) == {"mc_mixture": [files["calib"]]}
    assert list(fileset_from_files([files["mu23"], files["mu"]]).items()) == [
        ("mc_mixture_2023", [files["mu23"]]), ("mc_mixture", [files["mu"]])]


def test_a_physics_and_a_calibration_run_are_not_summed(files, tmp_path, monkeypatch):
    """(`run mu30k.root calib.root` reported the MOT summed over both in one `mc_mixture`)"""
    monkeypatch.chdir(tmp_path)
    assert _run("--output", "r", files["mu"], files["calib"]) == 0
    summary = json.loads((tmp_path / "r" / "cutflow.json").read_text())
    assert list(summary) == ["mc_mixture", "mc_mixture_calibration"]
    assert [e["provenance"]["n_beam"] for e in summary.values()] == [MOT, MOT]


# ---- 3. the order of the datasets --------------------------------------------------------
@pytest.mark.parametrize("executor", ["futures", "dask"])
def test_datasets_keep_their_order_on_every_executor(files, executor, tmp_path, monkeypatch):
    """(the iterative, futures and dask runs listed the datasets of cutflow.txt/json in three orders)"""
    given = ["zz_sig", "data", "aa_mc"]
    fs = tmp_path / "fs.yaml"
    fs.write_text("schema_version: 1\ndatasets:\n"
                  f"  zz_sig: [{files['sig']}]\n  data: [{files['data']}]\n  aa_mc: [{files['mu']}]\n")
    monkeypatch.chdir(tmp_path)
    assert _run("--executor", executor, "--workers", "2", "--fileset", fs, "--output", "r") == 0
    assert list(json.loads((tmp_path / "r" / "cutflow.json").read_text())) == given
    text = (tmp_path / "r" / "cutflow.txt").read_text()
    assert [line.split()[1].rstrip(":") for line in text.splitlines() if line.startswith("== ")] == given


# ---- 4. --bad-spills ---------------------------------------------------------------------
@pytest.mark.parametrize(("text", "where", "problem"), [
    ("schema_version: 1\nspills: [{run: 1, spill: 2}\n", "line 3, column 1", "did not find expected ',' or ']'"),
    ("schema_version: 1\nspills:\n - run: 1\n  spill: 2\n", "line 4, column 3", "did not find expected '-' indicator"),
    ("schema_version: 1\n\tspills: []\n", "line 2, column 1", "found a tab character that violates indentation"),
])
def test_a_malformed_bad_spill_list_is_one_line(text, where, problem, files, tmp_path, monkeypatch, capsys):
    path = tmp_path / "bad_spills.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_bad_spills(path)
    message = str(err.value)
    assert "\n" not in message and "<unicode string>" not in message
    assert message.startswith(f"{path}: malformed YAML ({where}): ") and problem in message
    assert "a bad-spill list" in message
    monkeypatch.chdir(tmp_path)
    assert _run("--bad-spills", path, "--output", "r", files["mu"]) == 1
    assert f"malformed YAML ({where})" in _one_line_error(capsys)


def test_a_binary_bad_spill_list_is_a_user_error(files, tmp_path, monkeypatch, capsys):
    """(a ROOT file given as --bad-spills was an internal error: UnicodeDecodeError)"""
    path = tmp_path / "bad_spills.yaml"
    path.write_bytes(b"root\x00\xf3\xff" * 10)
    monkeypatch.chdir(tmp_path)
    assert _run("--bad-spills", path, "--output", "r", files["mu"]) == 1
    err = _one_line_error(capsys)
    assert "bad_spills.yaml: not a UTF-8 text file" in err and "a bad-spill list" in err


def test_a_dataset_name_too_long_for_the_plots_is_refused_before_any_work(files, tmp_path, monkeypatch, capsys):
    """(a 250-character name ran the whole analysis, then failed writing its plots: "File name too long")"""
    monkeypatch.chdir(tmp_path)
    assert _run("--dataset", "a" * 129, "--output", "r", files["mu"]) == 1
    assert "1-128 characters" in _one_line_error(capsys) and not (tmp_path / "r").exists()
    assert list(fileset_from_files([files["mu"]], "a" * 128)) == ["a" * 128]


def test_a_calibration_tag_that_is_no_name_is_refused_before_any_file_is_read(tmp_path, monkeypatch, capsys):
    """(`run --calib-tag ../../x` was refused only inside the first chunk, after the file checks)"""
    monkeypatch.chdir(tmp_path)
    assert _run("--calib-tag", "../../x", "--output", "r", tmp_path / "missing.root") == 1
    err = _one_line_error(capsys)
    assert "--calib-tag '../../x': not a tag name" in err and "missing.root" not in err
