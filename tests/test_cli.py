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
