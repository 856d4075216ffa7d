"""Totals with limits, the factorised estimate and the dimuon campaign summary (docs/backgrounds.md)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from na64reco import background as bg
from na64reco.errors import NA64Error

UL90 = -math.log(0.1)  # 90 % CL Poisson upper limit for 0 observed


# ---- totals: a limit is listed beside the total, never added as u +- u ---------------------
def test_total_of_estimated_rows_leaves_the_limits_out():
    t = bg.BackgroundTable((bg.BackgroundComponent("a", 0.16, 0.16), bg.BackgroundComponent("b", 0.008, 0.0005),
                            bg.BackgroundComponent("dimuon", 1.9, upper_limit=True)))
    n, err = t.estimated_total()
    assert n == pytest.approx(0.168) and err == pytest.approx(math.hypot(0.16, 0.0005))
    assert [c.source for c in t.limits()] == ["dimuon"]
    # conservatively the limit adds its value, but never its value as an error (the old total gave 2.07 +- 1.9)
    n_c, err_c = t.total()
    assert n_c == pytest.approx(2.068) and err_c == pytest.approx(err)
    rows = t.rows()
    assert [r["source"] for r in rows[-2:]] == ["total of the estimated rows", "total"]
    assert "limits beside: dimuon < 1.9" in t.format()


def test_published_total_is_the_estimated_rows_plus_the_limit_at_its_value():
    """Seed 001: 0.05 +- 0.03, 0.010 +- 0.001, < 0.01 -> 0.07 +- 0.03 'conservatively'."""
    t = bg.published_na64mu_2022()
    n, err = t.estimated_total()
    assert round(n, 3) == 0.06 and round(err, 2) == 0.03
    n, err = t.total()
    assert round(n, 2) == 0.07 and err == pytest.approx(math.hypot(0.03, 0.001))


def test_sum_components_adds_a_limit_without_its_error():
    s = bg.sum_components("K + pi", [bg.BackgroundComponent("k", 0.0076, 0.0005),
                                     bg.BackgroundComponent("pi", 0.0006, upper_limit=True)])
    assert not s.upper_limit and s.n == pytest.approx(0.0082) and s.error == pytest.approx(0.0005)


# ---- factorisation -----------------------------------------------------------------------
def test_factorised_rate_closed_form_and_errors():
    f = bg.factorised_rate([(10, 100), (4, 1000)], scale=2.0)
    assert f["rate"] == pytest.approx(2.0 * 0.1 * 0.004)
    assert f["error"] == pytest.approx(f["rate"] * math.sqrt(0.9 / 10 + 0.996 / 4))
    # Bonferroni: each of the two factors at 95 %; for 0 of n the limit is -ln(0.05) / n
    g = bg.factorised_rate([(0, 1000), (5, 50)], scale=1.0)
    assert g["rate"] is None and g["cl_each"] == pytest.approx(0.95)
    assert g["factors"][0]["upper"] == pytest.approx(-math.log(0.05) / 1000)
    assert g["upper"] == pytest.approx(g["factors"][0]["upper"] * g["factors"][1]["upper"])
    with pytest.raises(NA64Error, match=r"factor \(5, 4\)"):
        bg.factorised_rate([(5, 4)])


def test_factorisation_reproduces_independent_efficiencies_and_the_direct_count():
    """A synthetic sample with three independent cuts of known efficiency: the factorised
    product agrees with the truth and with the direct count of events passing all three."""
    rng = np.random.default_rng(5)
    n = 400_000
    p = (0.3, 0.05, 0.1)
    passes = [rng.random(n) < q for q in p]
    f = bg.factorised_rate([(int(m.sum()), n) for m in passes])
    truth = math.prod(p)
    assert abs(f["rate"] - truth) < 3 * f["error"]
    k_all = int(np.all(passes, axis=0).sum())
    assert abs(k_all / n - f["rate"]) < 3 * math.sqrt(k_all) / n
    assert f["upper"] > truth
    # the independence test sees none; a correlated cut is flagged
    r = bg.independence_ratio(int((passes[1] & passes[0]).sum()), int(passes[0].sum()),
                              int((passes[1] & ~passes[0]).sum()), int((~passes[0]).sum()))
    assert abs(r["pull"]) < 3 and abs(r["ratio"] - 1) < 3 * r["ratio_error"]
    corr = passes[1] | (rng.random(n) < 0.05) & passes[0]  # b more likely when a passes
    r = bg.independence_ratio(int((corr & passes[0]).sum()), int(passes[0].sum()),
                              int((corr & ~passes[0]).sum()), int((~passes[0]).sum()))
    assert r["pull"] > 10 and r["ratio"] > 1.5


def test_factorised_upper_limit_covers_at_least_90_percent():
    """Toys with small counts (0-3 expected per factor): the product of the Bonferroni
    limits lies above the true product in >= 90 % of them."""
    rng = np.random.default_rng(11)
    p, n = (2e-4, 1e-3), (5000, 2000)
    covered = sum(bg.factorised_rate([(rng.binomial(n[i], p[i]), n[i]) for i in range(2)])["upper"] >= p[0] * p[1]
                  for _ in range(300))
    assert covered / 300 >= 0.9


def test_independence_ratio_closed_form():
    r = bg.independence_ratio(10, 100, 20, 200)
    assert r["ratio"] == pytest.approx(1.0) and r["pull"] == pytest.approx(0.0)
    assert r["ratio_error"] == pytest.approx(math.sqrt(0.9 / 10 + 0.9 / 20))
    with pytest.raises(NA64Error, match="bad 2x2 counts"):
        bg.independence_ratio(3, 2, 1, 10)


# ---- the campaign summary ------------------------------------------------------------------
def _summary(**over) -> dict:
    s = {"period": "2022", "n_beam": 3_000_000, "mean_weight": 8.5e-7, "species_per_mot": 1.0,
         "calo_rest": 2_400_000, "single": {"no_veto": 0, "hcal_mip": 60}, "both": 0,
         "direct": {"events": 0, "sumw": 0.0, "sumw2": 0.0, "after_calo_cuts": 0},
         "loose": {"veto<28MeV": 36_000, "hcal<7GeV": 12_000}, "loose_pairs": {"veto<28MeV&hcal<7GeV": 180},
         "full": {"n_beam": 300_000, "all_but_calo_group": 15, "checks": {"veto<28MeV | no_pileup_out":
                                                                          [30, 2000, 210, 14000]}}}
    s.update(over)
    return s


def test_dimuon_estimate_direct_limit_and_factorisation():
    est = bg.dimuon_estimate(_summary())
    d = est["direct"]
    assert d["upper_limit"] and d["rate"] == pytest.approx(UL90 * 8.5e-7 / 3e6)
    # factorised with a factor of 0 events: no central value, the Bonferroni limit over 3 factors
    f = est["factorised"]
    assert f["rate"] is None and f["cl_each"] == pytest.approx(1 - 0.1 / 3)
    assert f["upper"] == pytest.approx(8.5e-7 * math.prod(x["upper"] for x in f["factors"]))
    assert f["factors"][0]["value"] == pytest.approx(15 / 3e5)
    j = est["factorised_joint"]
    assert j["factors"][1]["upper"] == pytest.approx(-math.log(0.05) / 2.4e6)
    assert est["checks"]["veto<28MeV | no_pileup_out"]["ratio"] == pytest.approx(1.0)
    h = est["checks"]["hcal<7GeV | veto<28MeV"]  # 180 / 36000 vs (12000 - 180) / (2.4e6 - 36000)
    assert h["p_pass"] == pytest.approx(0.005) and h["p_fail"] == pytest.approx(11820 / 2_364_000)
    # with a passing event the direct count is a measurement
    est = bg.dimuon_estimate(_summary(direct={"events": 2, "sumw": 1.7e-6, "sumw2": 2 * 8.5e-7**2}))
    assert not est["direct"]["upper_limit"] and est["direct"]["rate"] == pytest.approx(1.7e-6 / 3e6)
    # every count > 0: the product with its error
    est = bg.dimuon_estimate(_summary(single={"no_veto": 40, "hcal_mip": 60}))
    assert est["factorised"]["rate"] == pytest.approx(8.5e-7 * 15 / 3e5 * 40 / 2.4e6 * 60 / 2.4e6)


def test_dimuon_from_json_names_file_and_key(tmp_path):
    path = tmp_path / "dimuon_2022.json"
    path.write_text(json.dumps(_summary()))
    comp, est = bg.dimuon_from_json(path)
    assert comp.upper_limit and comp.n == pytest.approx(est["direct"]["rate"])
    assert comp.scaled(1.98e10).n == pytest.approx(UL90 * 8.5e-7 / 3e6 * 1.98e10)
    bad = {k: v for k, v in _summary().items() if k != "calo_rest"}
    path.write_text(json.dumps(bad))
    with pytest.raises(NA64Error, match="dimuon_2022.json: dimuon summary: key 'calo_rest': missing"):
        bg.dimuon_from_json(path)


def test_campaign_calorimeter_cuts_match_the_full_reconstruction(tmp_path):
    """The campaign's direct count reconstructs in full only the events passing every
    calorimeter cut: exact only if the calorimeter-only cuts equal the full reconstruction's
    on every event (a small forced-trident run)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dimuon_campaign.py"
    spec = importlib.util.spec_from_file_location("dimuon_campaign", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from na64reco.campaign import plan_campaign

    job = plan_campaign(600, 300, 2).jobs[0]
    out = mod.run_job(job, 3, 1001, str(tmp_path / "d.root"), 300, True, False)
    assert out["n_beam"] == 600 and out["written"] > 0 and not (tmp_path / "d.root").exists()
    assert out["calo_mismatch"] == 0
    assert out["calo_cuts"] == ["trigger", "s4_fired", "smu_fired", "ecal_mip", "no_veto", "no_vhcal", "hcal_mip"]
    assert len(out["full"]["bits"]) == out["written"]
    tot = mod.merge([out])
    assert tot["full"]["written"] == out["written"] and tot["direct"]["events"] == 0
    # the spacelike (9.03e-7) and timelike (2.55e-7) tridents per muon above the forced v >= 0.45
    assert tot["sumw_written"] / tot["written"] == pytest.approx(1.158e-6, rel=0.01)


def test_background_tables_total_lines_and_goal():
    """benchmarks/background_tables.py: the dimuon limit is listed beside the total of the
    estimated rows, added only to the conservative total, and the goal line says which."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "background_tables.py"
    spec = importlib.util.spec_from_file_location("background_tables", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = {"momentum mis-reconstruction": bg.BackgroundComponent("m", 8.2e-12, 7.9e-12),
            "hadron decays in flight": bg.BackgroundComponent("k", 4.1e-13, 3e-14),
            "dimuon production": bg.BackgroundComponent("dimuon production", 6.5e-13, upper_limit=True),
            "_k": bg.BackgroundComponent("ignored", 1.0, 1.0)}
    tot = mod.totals({"2022": rows}, ["2022"], 1.98e10)["2022"]
    assert tot["n"] == pytest.approx(8.61e-12 * 1.98e10) and tot["limits"] == "dimuon production < 0.013"
    assert tot["n_conservative"] == pytest.approx(9.26e-12 * 1.98e10)
    assert "**reached**" in mod.goal_text(tot)
    rows["dimuon production"] = bg.BackgroundComponent("dimuon production", 9.7e-11, upper_limit=True)
    tot = mod.totals({"2022": rows}, ["2022"], 1.98e10)["2022"]  # the 20000-trident limit of the previous pass
    assert tot["estimated"] == "0.17 +- 0.2" and "not with the limits added" in mod.goal_text(tot)
    assert "**not shown**" in mod.goal_text(tot) and "**reached**" not in mod.goal_text(tot)
