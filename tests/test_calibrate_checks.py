"""``na64reco calibrate`` refuses inputs that would publish wrong constants: runs of another beam
particle or energy for the electron response, responses outside the plausible range, files
outside the ``--runs`` range, tag names that are not file names inside ``tags/``, and runs too
short to calibrate any channel (one clear line, never an internal error)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from na64reco.calibration.publish import calibrate_files
from na64reco.cli import main
from na64reco.errors import ConfigError, NA64Error
from na64reco.geometry import load_setup

sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator (na64reco.sim.generate)")

REPO_CALIB = Path(__file__).resolve().parent.parent / "calib"
RUN = 1500


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A private calib dir; short NA64mu runs (20 calibration-trigger muons; 50 muons of the physics
    trigger: no event; a one-event pedestal run) and 300 NA64e electrons of 10 GeV, all run 1500."""
    root = tmp_path_factory.mktemp("calib")
    shutil.copytree(REPO_CALIB, root, dirs_exist_ok=True)
    files = {"mu": root / "mu.root", "none": root / "none.root", "ped": root / "ped.root", "e10": root / "e10.root"}
    sim.simulate("na64mu", 20, 3, RUN, files["mu"], process="beam", trigger="calibration")
    sim.simulate("na64mu", 50, 3, RUN, files["none"], process="beam")
    sim.simulate("na64mu", 1, 4, RUN, files["ped"], process="pedestal")
    sim.simulate("na64e", 300, 5, RUN, files["e10"], process="beam", trigger="calibration", beam_energy=10_000.0)
    return root, files


def _calibrate(root, *args):
    return main(["calibrate", *args, "--calib-dir", str(root)])


def _one_line(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.startswith("na64reco calibrate: error: ") and err.count("\n") == 1, err
    assert "internal error" not in err and all(w in err for w in words), err
    return err


def _files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---- 1. the electron calibration: beam particle, beam energy, plausible response ---------------
def test_electron_calibration_refuses_a_muon_run(inputs, capsys):
    """(it published ECAL section scales of ~30 and ~400: a muon's ECAL deposit read as 174 GeV)"""
    root, files = inputs
    before = _files(root)
    assert _calibrate(root, "--setup", "na64mu", "--kind", "electron", "--runs", "1000", "1999", "--tag", "e-mu",
                      "--min-entries", "10", str(files["mu"])) == 1
    _one_line(capsys, "mu.root", "mu-", "electron-beam runs (e-, e+)")
    assert _files(root) == before


def test_beam_energy_must_agree_with_the_recorded_one(inputs, capsys):
    """(--beam-energy 50 on a 10 GeV file gave a response of 0.18 and scales of 6.4, published)"""
    root, files = inputs
    before = _files(root)
    assert _calibrate(root, "--setup", "na64e", "--kind", "electron", "--runs", "1000", "1999", "--tag", "e-50",
                      "--min-entries", "100", "--beam-energy", "50", str(files["e10"])) == 1
    _one_line(capsys, "--beam-energy 50", "e10.root", "10 GeV", "9.8-10.2 GeV")
    assert _files(root) == before
    # the same for the tracker kinds that use the beam energy
    with pytest.raises(ConfigError, match=r"--beam-energy 100: .*mu\.root records a beam energy of 160 GeV"):
        calibrate_files("momentum-scale", load_setup("na64mu"), [files["mu"]], RUN, root=root, beam_energy_gev=100.0)
    # within the tolerance (the beam's momentum spread) it is the file's energy, rounded
    assert _calibrate(root, "--setup", "na64e", "--kind", "electron", "--runs", "1000", "1999", "--tag", "e-10",
                      "--min-entries", "100", "--beam-energy", "10.1", str(files["e10"])) == 0
    assert "10.1 GeV: uncorrected peak" in capsys.readouterr().out
    for bad in ("0", "-5", "nan", "1000"):
        assert _calibrate(root, "--setup", "na64e", "--kind", "electron", "--runs", "1000", "1999", "--tag", "e-x",
                          "--beam-energy", bad, str(files["e10"])) == 1
        _one_line(capsys, "--beam-energy", "above 0 and at most 400")


def test_a_response_outside_the_plausible_range_is_refused():
    from na64reco.calibration.electron import ResponsePoint, check_response_point, fit_response_point

    rng = np.random.default_rng(1)
    n = 500
    # 10 GeV showers: 10 % in the preshower, ~89 % of the energy seen (the zero suppression)
    total = rng.normal(8.9, 0.3, n)
    frac = rng.normal(0.10, 0.02, n)
    sums = np.stack([frac * total, (1 - frac) * total], axis=1)
    good = fit_response_point(sums, 10.0)
    check_response_point(good, ["e10.root"])  # a real electron run at its energy
    wrong = fit_response_point(sums, 50.0)  # the same run declared 50 GeV
    with pytest.raises(NA64Error, match=r"e10\.root at 50 GeV: .* a response of 0\.17.*; expected 0\.5-1\.2"):
        check_response_point(wrong, ["e10.root"])
    odd = ResponsePoint(10.0, 8.9, np.array([3.0, 0.9]), np.zeros(2), 0.03, n, n)
    with pytest.raises(NA64Error, match=r"ECAL section 0 scale 3; expected 0\.5-2"):
        check_response_point(odd, ["e10.root"])


# ---- 2. the run range ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mip", "alignment"])
def test_files_outside_the_runs_range_are_refused(inputs, capsys, kind):
    """(--runs 1 10 on run 1500 published constants valid for runs 1-10)"""
    root, files = inputs
    before = _files(root)
    assert _calibrate(root, "--setup", "na64mu", "--kind", kind, "--runs", "1", "10", "--tag", f"r-{kind}",
                      "--min-entries", "5", str(files["mu"])) == 1
    _one_line(capsys, "--runs 1 10", "mu.root is run 1500")
    assert _files(root) == before


def test_a_run_range_across_two_periods_is_refused(inputs, capsys):
    """(--runs 1 99999 published a 2022 tracker payload valid for 2023 runs too, whose planes it lacks:
    `na64reco run` of a 2023 file then failed on 'no entry for plane MM7X')"""
    root, files = inputs
    before = _files(root)
    assert _calibrate(root, "--setup", "na64mu", "--kind", "alignment", "--runs", "1", "99999", "--tag", "span",
                      str(files["mu"])) == 1
    _one_line(capsys, "--runs 1 99999 spans the run periods 2022 (runs 1-9999), 2023 (runs 10000-999999)")
    assert _files(root) == before


def test_a_run_of_the_2023_period_is_calibrated_with_its_layout(inputs, tmp_path, capsys):
    """(calibrate loaded the setup without a run, the 2022 layout: a 2023 run's planes 17-20 were 'not a
    plane index of the setup', whatever the kind)"""
    root, _ = inputs
    run23 = tmp_path / "b23.root"
    sim.simulate("na64mu", 600, 3, 10900, run23, process="beam", trigger="calibration")
    assert _calibrate(root, "--setup", "na64mu", "--kind", "alignment", "--runs", "10000", "19999", "--tag", "y23",
                      "--min-entries", "5", str(run23)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "MM7X" in out and "published tag 'y23'" in out  # a plane of the 2023 layout only


@pytest.mark.parametrize("kind, words", [("alignment", "view MS1 y has 0 usable tracks"),
                                         ("momentum-scale", "magnet MS1 has 0 beam tracks"),
                                         ("efficiency", "has 0 probe tracks")])
def test_a_tracker_calibration_of_a_run_without_beam_tracks_names_the_file(inputs, capsys, kind, words):
    """(alignment on a pedestal run said "view MS1 y has 0 usable tracks", naming no file; momentum-scale
    and efficiency printed numpy's "Mean of empty slice" warnings before their line: a warning here fails)"""
    root, files = inputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _calibrate(root, "--setup", "na64mu", "--kind", kind, "--runs", "1000", "1999", "--tag", "pa",
                          str(files["ped"])) == 1
    _one_line(capsys, f"{files['ped']} (1 events): {kind}: ", words)


# ---- 3. tag names -------------------------------------------------------------------------------
@pytest.mark.parametrize("option, tag", [("--tag", "../evil"), ("--tag", ""), ("--tag", "a b/c"),
                                         ("--tag", ".hidden"), ("--base-tag", "../tags/na64mu-default")])
def test_tag_names_are_checked(inputs, capsys, option, tag):
    """(--tag ../evil wrote cal/evil.yaml beside tags/, --tag '' tags/.yaml, 'a b/c' a subdirectory)"""
    root, files = inputs
    before = _files(root)
    names = {"--tag": "t-ok", "--base-tag": "na64mu-default"} | {option: tag}
    assert _calibrate(root, "--setup", "na64mu", "--kind", "mip", "--runs", "1000", "1999", "--tag", names["--tag"],
                      "--base-tag", names["--base-tag"], "--min-entries", "5", str(files["mu"])) == 1
    _one_line(capsys, f"{option} {tag!r}: not a tag name", "letters, digits and '_ . + -'")
    assert _files(root) == before


def test_tag_name_rule():
    from na64reco.conditions import check_tag_name

    for good in ("na64mu-default", "mu_align.2+x", "A1", "-x"):
        assert check_tag_name(good) == good
    for bad in ("", ".x", "..", "a/b", "a\\b", "a b", "../x", "t\n", "é", "x" * 129, None):
        with pytest.raises(ConfigError, match="not a tag name"):
            check_tag_name(bad)


# ---- 4. too short a run -------------------------------------------------------------------------
def test_too_few_events_is_a_clear_error(inputs, capsys):
    """(no event: "internal error ... IndexError: boolean index did not match"; 20 events: a tag
    with no channel calibrated was published)"""
    root, files = inputs
    before = _files(root)
    args = ["--setup", "na64mu", "--runs", "1000", "1999", "--tag", "few"]
    assert _calibrate(root, *args, "--kind", "mip", str(files["none"])) == 1
    _one_line(capsys, "mip calibration: too few MIP hits in 0 events of", "none.root", "none in any channel",
              "200 needed per channel (--min-entries)")
    assert _calibrate(root, *args, "--kind", "mip", str(files["mu"])) == 1
    _one_line(capsys, "too few MIP hits in 20 events of", "mu.root", "at most 20 in a channel (", "200 needed")
    assert _calibrate(root, *args, "--kind", "pedestals", str(files["ped"])) == 1
    _one_line(capsys, "pedestals calibration: too few digits in 1 events of", "ped.root", "at most 1 in a channel",
              "50 needed")
    assert _calibrate(root, *args, "--kind", "mip", "--min-entries", "0", str(files["mu"])) == 1
    _one_line(capsys, "--min-entries 0: expected at least 1")
    assert _files(root) == before


def test_a_tag_made_without_base_tag_keeps_the_default_tags_payload_files(inputs, tmp_path):
    """Without ``--base-tag`` the constants are derived against the setup's tag in default_tags.yaml and
    must be published over its payload lists (before stop 49 over ``<setup>-default``'s: a NA64mu tag
    lost tracker v002, whose 2023 planes, and 2023 runs failed with it; a NA64e tag lost the ECAL
    response, -1.9 % energy scale outside its runs)."""
    import yaml

    from na64reco.conditions import default_tag, tag_path

    root, _ = inputs
    for setup in ("na64mu", "na64e"):
        ped = tmp_path / f"ped_{setup}.root"
        sim.simulate(setup, 60, 4, RUN, ped, process="pedestal")
        tag = f"nobase-{setup}"
        assert _calibrate(root, "--setup", setup, "--kind", "pedestals", "--runs", "1500", "1500", "--tag", tag,
                          "--min-entries", "10", str(ped)) == 0
        base = yaml.safe_load(tag_path(default_tag(setup, root), root).read_text())["payloads"]
        new = yaml.safe_load(tag_path(tag, root).read_text())["payloads"]
        assert base["tracker"] == new["tracker"]
        assert new["calorimeter"][:-1] == base["calorimeter"]  # the default tag's files, then the new one
        assert len(new["calorimeter"]) == len(base["calorimeter"]) + 1
