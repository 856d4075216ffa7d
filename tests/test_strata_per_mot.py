"""The strata's per-MOT figures re-derived for a re-made campaign (lone_muon.per_mot_for_campaign)."""
import copy
import json
import math
from pathlib import Path

import pytest

from na64reco.background.lone_muon import per_mot_for_campaign
from na64reco.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "docs" / "data"


@pytest.fixture(scope="module")
def period():
    return json.loads((DATA / "misreco_2022.json").read_text())


def _kept(p):
    return float(p["after_cuts_but_box"]) / float(p["mot"])


def test_per_mot_figures_scale_with_the_kept_muons(period):
    again = copy.deepcopy(period)
    again["after_cuts_but_box"] = period["after_cuts_but_box"] * 3  # the campaign keeps 3x the beam muons
    ratio = _kept(again) / _kept(period)
    assert ratio == pytest.approx(3.0)
    names = ["0,0", *period["truth_strata"]]
    assert len(names) > 10
    for name in names:
        est = period["lone_muon_00"] if name == "0,0" else period["truth_strata"][name]
        new = per_mot_for_campaign(est, again, tuple(int(x) for x in name.split(",")))
        for key in ("per_mot", "per_mot_upper", "per_mot_integrated_upper_90", "per_mot_count_upper_90"):
            assert new[key] == pytest.approx(est[key] * ratio, rel=1e-9), (name, key)
        assert new["log10_per_mot_upper"] == pytest.approx(est["log10_per_mot_upper"] + math.log10(ratio))
        assert new["kept_per_mot_classified_with"] == est.get("kept_per_mot_classified_with", est["kept_per_mot"])
        assert new["kept_per_mot"] == pytest.approx(_kept(again))
        soft = (est.get("pileup_truth") or {}).get("soft")
        if soft is not None:  # the (0, 1) stratum's forced-soft terms scale too; its fake count does not
            got = new["pileup_truth"]["soft"]["per_mot"]
            assert got["soft_b_direct_upper_90"] == pytest.approx(soft["per_mot"]["soft_b_direct_upper_90"] * ratio)
            assert got["soft_b_fakes"] == soft["per_mot"]["soft_b_fakes"]
            assert soft["per_mot"] is not got  # the input is not changed
    assert "0,1" in period["truth_strata"] and period["truth_strata"]["0,1"]["pileup_truth"].get("soft")


def test_the_same_campaign_gives_the_same_figures(period):
    est = period["truth_strata"]["1,1"]
    new = per_mot_for_campaign(est, period, (1, 1))
    for key in ("per_mot", "per_mot_upper", "sample_size_upper_per_mot"):
        assert new[key] == pytest.approx(est[key], rel=1e-12)


def test_a_stratum_without_a_weight_is_refused(period):
    again = copy.deepcopy(period)
    again["forced_noise"]["strata"] = [s for s in again["forced_noise"]["strata"]
                                       if (s["count"], s["pileup"]) != (1, 1)]
    with pytest.raises(ConfigError, match=r"stratum \(1, 1\).*forced_noise.strata"):
        per_mot_for_campaign(period["truth_strata"]["1,1"], again, (1, 1))


def _script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "strata_per_mot.py"
    spec = importlib.util.spec_from_file_location("strata_per_mot", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_new_campaign_scales_every_per_mot_figure_of_the_period(period, tmp_path):
    """The campaign's keys replace the old ones; the forced-noise figures and every stratum
    follow its kept muons; the row of the background table scales likewise."""
    from na64reco.background.estimates import misreco_from_json

    mod = _script()
    campaign = {"period": "2022", "run": 1, "mot": 20_000_000, "box_count": 0,
                "after_cuts_but_box": 5 * period["after_cuts_but_box"], "written": 1,
                "per_mot": None, "per_mot_err": None, "per_mot_upper_limit": 2.3 / 2e7, "upper_limit_cl": 0.9,
                "extrapolated_per_mot": None, "extrapolated_err": None, "extrapolated_upper_90": None,
                "extrapolated_sideband": None, "box_true": {}}
    (tmp_path / "pj").mkdir()
    (tmp_path / "camp").mkdir()
    (tmp_path / "pj" / "misreco_2022.json").write_text(json.dumps(period))
    (tmp_path / "camp" / "misreco_2022.json").write_text(json.dumps(campaign))
    assert mod.main(["--campaign", str(tmp_path / "camp"), "--period-json", str(tmp_path / "pj"),
                     "--periods", "2022"]) == 0
    new = json.loads((tmp_path / "pj" / "misreco_2022.json").read_text())
    assert new["mot"] == 20_000_000 and "tail_model" not in new  # no converged fit in the new campaign
    ratio = 2.5  # 5x the muons kept in 2x the MOT
    for key in mod.FORCED_NOISE_PER_MOT:
        if isinstance(period.get(key), (int, float)):
            assert new[key] == pytest.approx(period[key] * ratio), key
    assert new["truth_strata"]["0,2"]["per_mot_upper"] == pytest.approx(period["truth_strata"]["0,2"]["per_mot_upper"]
                                                                        * ratio)
    old_row = misreco_from_json(DATA / "misreco_2022.json")
    new_row = misreco_from_json(tmp_path / "pj" / "misreco_2022.json")
    assert new_row.n == pytest.approx(old_row.n * ratio)
    # a second run with no new campaign changes nothing
    mod.main(["--period-json", str(tmp_path / "pj"), "--periods", "2022"])
    assert json.loads((tmp_path / "pj" / "misreco_2022.json").read_text()) == new
    bad = dict(campaign, period="2023")
    (tmp_path / "camp" / "misreco_2022.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="campaign of period '2023' given for period '2022'"):
        mod.main(["--campaign", str(tmp_path / "camp"), "--period-json", str(tmp_path / "pj"), "--periods", "2022"])


def test_bad_summaries_name_the_file_and_key(period, tmp_path):
    mod = _script()
    (tmp_path / "pj").mkdir()
    (tmp_path / "camp").mkdir()
    (tmp_path / "pj" / "misreco_2022.json").write_text(json.dumps(period))
    with pytest.raises(SystemExit, match=r"camp/misreco_2022.json: cannot read the summary"):
        mod.main(["--campaign", str(tmp_path / "camp"), "--period-json", str(tmp_path / "pj"), "--periods", "2022"])
    (tmp_path / "camp" / "misreco_2022.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"camp/misreco_2022.json: cannot read the summary"):
        mod.main(["--campaign", str(tmp_path / "camp"), "--period-json", str(tmp_path / "pj"), "--periods", "2022"])
    (tmp_path / "camp" / "misreco_2022.json").write_text(json.dumps({"period": "2022", "mot": 1e7}))
    with pytest.raises(SystemExit, match=r"the campaign summary: key 'after_cuts_but_box': expected a number > 0"):
        mod.main(["--campaign", str(tmp_path / "camp"), "--period-json", str(tmp_path / "pj"), "--periods", "2022"])
    # the period file is untouched by a refused campaign
    assert json.loads((tmp_path / "pj" / "misreco_2022.json").read_text()) == period
