"""What a second user-flow audit found: ``cutflow`` on a file that is not a run's cut-flow answered
with an internal error; ``dqm`` on fewer spills than it judges with said "0 out of tolerance" as if
it had judged; ``run --bad-spills`` with a list of another run dropped nothing, silently."""

from __future__ import annotations

import json

import pytest
from test_cli_output_safety import one_line_error as _one_line

from na64reco import cli


@pytest.mark.parametrize("content", ["[]", '{"a": "b"}', '{"mc": {"x": 1}}', '{"mc": {"provenance": {}}}', "{}"])
def test_cutflow_of_a_json_that_is_no_cut_flow_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "other.json"
    path.write_text(content)
    err = _one_line(capsys, ["cutflow", str(path)])
    assert "not the cut-flow of a `na64reco run` output of this version" in err and str(path) in err


def test_cutflow_of_a_coffea_file_of_something_else_is_one_line(tmp_path, capsys):
    from coffea.util import save

    path = tmp_path / "other.coffea"
    save({"foo": 1}, path)
    assert "not the cut-flow of a `na64reco run` output" in _one_line(capsys, ["cutflow", str(path)])


def test_dqm_of_too_few_spills_says_nothing_was_judged(tmp_path, capsys):
    raw = tmp_path / "two.root"
    assert cli.main(["simulate", "--setup", "na64mu", "--events", "400", "--spill-particles", "200",
                     "--trigger", "calibration", "--output", str(raw), "--quiet"]) == 0
    assert cli.main(["dqm", str(raw), "--output", str(tmp_path / "dqm"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "2 spill(s)" in err and "nothing was judged" in err
    assert json.loads((tmp_path / "dqm" / "dqm.json").read_text())["judged"] is False


def test_run_warns_of_a_bad_spill_list_that_matches_no_input(small_na64mu_files, tmp_path, capsys):
    listed = tmp_path / "other_run.yaml"
    listed.write_text("schema_version: 1\nspills:\n  - {run: 999999, spill: 1, reasons: [pedestal]}\n")
    argv = ["run", "--processor", "na64mu_invisible", "--no-progress", "--no-plots", "--bad-spills", str(listed),
            "--output", str(tmp_path / "r"), str(small_na64mu_files["mc"])]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "none of the 1 spills of --bad-spills" in err and "nothing was dropped" in err
    empty = tmp_path / "good_run.yaml"  # a good run's list: no warning
    empty.write_text("schema_version: 1\nspills: []\n")
    argv[argv.index(str(listed))], argv[argv.index(str(tmp_path / "r"))] = str(empty), str(tmp_path / "r2")
    assert cli.main(argv) == 0 and "warning" not in capsys.readouterr().err
