"""The command line: every subcommand has --help; errors are one line, exit 1."""

import pytest

from na64reco import cli


def _subcommands():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(sub.choices)


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "simulate" in capsys.readouterr().out


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    assert "usage: na64reco " + name in capsys.readouterr().out


def test_library_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "missing.root")]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "missing.root: file not found" in err and "Traceback" not in err


def test_truncated_file_error_is_one_line(tmp_path, capsys):
    from na64reco.io.raw import RawWriter

    path = tmp_path / "t.root"
    with RawWriter(path, setup="na64mu", run=1, has_truth=False) as w:
        w.write_spills({"run": [1], "spill": [0], "n_beam": [1], "n_triggered": [0]})
    cut = tmp_path / "cut.root"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size - 200])
    assert cli.main(["reco", str(cut), "--output", str(tmp_path / "o.parquet")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.root" in err and "Traceback" not in err


# ---- help texts ------------------------------------------------------------------------
def _parsers():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return {"na64reco": parser, **sub.choices}


@pytest.mark.parametrize("name", sorted(_parsers()))
def test_every_option_has_help_and_shows_its_default(name):
    import argparse

    parser = _parsers()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"na64reco {name} {label}: no help text"
        text = formatter._expand_help(action)
        flag = action.nargs == 0  # --json, --quiet, --version ...
        if action.option_strings and not action.required and not flag:
            assert "default" in text.lower(), f"na64reco {name} {label}: help does not show the default: {text!r}"
    assert "%%" not in parser.format_help()
    assert "(default: )" not in parser.format_help()  # an empty default says "none"


def test_subcommand_list_and_descriptions_show_percent_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["limit", "--help"])
    out = capsys.readouterr().out
    assert "90% CL" in out and "%%" not in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "%%" not in capsys.readouterr().out


# ---- unexpected exceptions -------------------------------------------------------------
def _crash(monkeypatch):
    import na64reco.commands.inspect as inspect_cmd

    def broken(path):
        raise ZeroDivisionError("division by zero in a test")

    monkeypatch.setattr(inspect_cmd, "summarise", broken)


def test_a_bug_prints_one_line_and_saves_the_traceback(tmp_path, monkeypatch, capsys):
    _crash(monkeypatch)
    monkeypatch.setenv(cli.CRASH_DIR_ENV, str(tmp_path / "crashes"))
    assert cli.main(["inspect", "some.root"]) == cli.EXIT_BUG == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "bug in na64reco" in err and "ZeroDivisionError" in err
    (report,) = (tmp_path / "crashes").glob("na64reco-crash-*.txt")
    assert str(report) in err
    text = report.read_text()
    assert "command: na64reco inspect some.root" in text
    assert "Traceback (most recent call last)" in text and "in broken" in text


def test_traceback_option_reraises_a_bug(monkeypatch, tmp_path):
    _crash(monkeypatch)
    monkeypatch.setenv(cli.CRASH_DIR_ENV, str(tmp_path))
    with pytest.raises(ZeroDivisionError):
        cli.main(["--traceback", "inspect", "some.root"])
    assert not list(tmp_path.iterdir())


def test_user_errors_stay_one_line_with_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(cli.CRASH_DIR_ENV, str(tmp_path / "crashes"))
    assert cli.main(["limit", "--efficiency", "2", "--mot", "1e10", "--masses", "0.1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("na64reco limit: error: --efficiency") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "crashes").exists()


def test_calibration_tag_defaults_name_the_default_tags_file():
    """A command without --calib-tag (--base-tag for calibrate) uses the setup's tag in
    calib/default_tags.yaml (na64reco.conditions.default_tag), not ``<setup>-default``."""
    from na64reco.conditions import default_tag

    assert default_tag("na64mu") != "na64mu-default"  # the pointer has moved: the help must not say <setup>-default
    parsers = _parsers()
    checked = []
    for name, parser in parsers.items():
        for action in parser._actions:
            if {"--calib-tag", "--base-tag"} & set(action.option_strings) and not action.required:
                text = parser._get_formatter()._expand_help(action)
                assert "calib/default_tags.yaml" in text and "<setup>-default" not in text, (name, text)
                checked.append(name)
    assert {"simulate", "calibrate", "dqm", "reco", "display", "run"} <= set(checked)


#: Heavy modules no command needs to build its options: each cost ~0.3-1 s of start-up, and
#: every ``na64reco`` command (``--help`` too) builds all the commands' options first.
HEAVY_FOR_OPTIONS = ("numba", "awkward", "uproot", "coffea", "scipy", "matplotlib", "pyhf", "dask")


def test_building_the_options_imports_no_heavy_module():
    import json
    import subprocess
    import sys

    script = ("import json, sys; from na64reco.cli import build_parser; build_parser(); "
              "print(json.dumps(sorted(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = {m.split(".")[0] for m in json.loads(res.stdout)}
    assert not loaded & set(HEAVY_FOR_OPTIONS), sorted(loaded & set(HEAVY_FOR_OPTIONS))


def _blinded_data_summary() -> dict:
    prov = {"processor": "na64mu_invisible", "selection": "na64mu_invisible", "selection_sha256": "ab" * 32,
            "calib_tag": "t1", "code_version": "0", "events_processed": 100, "events_skipped": 0,
            "events_total": 100, "n_beam": 1000, "n_spills": 1, "skipped": {}}
    row = {"sumw": 90.0, "sumw_err": 9.5, "efficiency": 1.0, "cumulative": 1.0}
    return {"data": {"provenance": prov,
                     "cutflow": [{"cut": "initial", "events": 90, **row},
                                 {"cut": "signal_box", **dict.fromkeys(row, "blinded"), "events": "blinded"}],
                     "nminusone": [{"cut": "trigger", "events": "blinded", "sumw": "blinded"}],
                     "regions": {"signal_box": {"events": "blinded", "sumw": "blinded"}}}}


def test_the_withheld_count_leaves_out_the_events_of_bad_spills():
    """(a run dropping 18792 events of bad spills printed 'withheld (blinded region ...): 18792 events')"""
    from na64reco.summary import format_summary

    summary = _blinded_data_summary()
    prov = summary["data"]["provenance"]
    prov.update(events_processed=130, events_total=130, events_excluded=30, bad_spills="bad.yaml",
                excluded_spills=[{"run": 7, "spill": 2, "n_beam": 300}])
    text = format_summary(summary)
    assert "withheld (blinded region, before the cut-flow): 10 events" in text
    assert "1 bad spills of bad.yaml (300 beam particles, 30 events dropped)" in text


def test_a_simulation_summary_gives_the_box_per_beam_particle():
    """(the cut-flow's fractions start at the written, triggered events: a signal's 54 % there was 21 % of
    the EOT, what a limit needs; a reader of the cut-flow took the 54 %)"""
    from na64reco.summary import format_summary

    summary = _blinded_data_summary()
    entry = summary["data"]
    entry["cutflow"] = [{"cut": "initial", "events": 90, "sumw": 90.0, "sumw_err": 9.5, "efficiency": 1.0,
                         "cumulative": 1.0},
                        {"cut": "signal_box", "events": 45, "sumw": 45.0, "sumw_err": 6.7, "efficiency": 0.5,
                         "cumulative": 0.5}]
    entry["nminusone"] = []
    entry["regions"] = {"signal_box": {"events": 45, "sumw": 45.0, "sumw_err": 6.7}}
    assert "box events per simulated beam particle: 45 / 1000 = 0.045 (the fractions" in format_summary(summary)
    # a forced process of weight 1.2e-6 (its probability per beam particle): the weighted rate beside the count
    entry["regions"]["signal_box"]["sumw"] = 45 * 1.2e-6
    assert ("45 / 1000 = 0.045; weighted, per beam particle on target: 5.4e-08" in format_summary(summary))
    assert "per simulated beam particle" not in format_summary(_blinded_data_summary())  # blinded data: nothing


def test_cutflow_of_a_saved_json_prints_without_the_analysis_stack(tmp_path):
    """``na64reco cutflow OUTDIR`` reads ``cutflow.json``: no coffea, numba or awkward to import
    (~2 s of start-up before), and the blinded cells and the withheld count are printed."""
    import json
    import subprocess
    import sys

    (tmp_path / "cutflow.json").write_text(json.dumps(_blinded_data_summary()))
    script = ("import json, sys; from na64reco.cli import main; code = main(['cutflow', sys.argv[1]]); "
              "print(json.dumps([code, sorted(sys.modules)]))")
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    *text, last = res.stdout.strip().splitlines()
    code, modules = json.loads(last)
    assert code == 0
    assert not {m.split(".")[0] for m in modules} & set(HEAVY_FOR_OPTIONS)
    text = "\n".join(text)
    assert "withheld (blinded region, before the cut-flow): 10 events" in text
    assert [line.split() for line in text.splitlines() if line.startswith("signal_box")] == [
        ["signal_box", "blinded", "blinded"]]
