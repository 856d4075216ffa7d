"""Signal efficiency vs mass (na64reco.efficiency): normalisation, cut-flow consistency,
closed-form checks against the analytic x spectrum.  Small samples (< 30 s)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hepunits import MeV

from na64reco import constants
from na64reco.efficiency import efficiency_from_output, signal_efficiency, x_acceptance
from na64reco.errors import ConfigError, NA64Error
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.physics.darkbrem import sigma_total
from na64reco.physics.yields import expected_signal

N_EVENTS = 4000
MASSES = (10 * MeV, 100 * MeV)
E0 = constants.NA64MU_BEAM_ENERGY


@pytest.fixture(scope="module")
def mu(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eff")
    table = signal_efficiency("na64mu", MASSES, N_EVENTS, seed=11, workdir=workdir)
    truths = {}
    for mass in MASSES:
        with open_raw(workdir / f"na64mu_signal_m{mass:g}MeV.root") as raw:
            truths[mass] = raw.truth()
    return table, truths


def _sigma(mass, lo=None, hi=None):
    return sigma_total(E0, mass, constants.MUON_MASS, x_min=lo, x_max=hi)


def test_efficiency_in_range_with_binomial_error(mu):
    table, _ = mu
    assert np.allclose(table.masses, MASSES)
    for p in table.points:
        assert p.n_simulated == N_EVENTS
        assert 0 < p.efficiency < 1
        assert p.n_selected > 20  # 2022 period: its tracking keeps ~1/4 of the muons (docs/periods.md)
        assert p.error == pytest.approx(math.sqrt(p.efficiency * (1 - p.efficiency) / N_EVENTS))
        assert 0 < p.trigger_efficiency <= 1
    text = table.format()
    assert "eff/acc" in text and len(text.splitlines()) == 2 + len(MASSES)


def test_efficiency_agrees_with_the_cutflow(mu):
    """eff = (weighted last cut-flow row) / (weight x MOT) = cumulative x n_triggered / MOT."""
    table, _ = mu
    for p in table.points:
        last = p.cutflow[-1]
        assert last["cut"] == "signal_box"
        assert last["events"] == p.n_selected
        assert last["sumw"] == pytest.approx(p.sumw_selected, rel=1e-12)
        assert p.efficiency == pytest.approx(last["sumw"] / (p.weight * p.n_simulated), rel=1e-9)
        assert p.efficiency == pytest.approx(last["cumulative"] * p.n_triggered / p.n_simulated, rel=1e-9)
        assert p.efficiency == pytest.approx(p.n_selected / p.n_simulated, rel=1e-9)  # one weight
        assert p.cutflow[0]["events"] == p.n_triggered  # initial row: every written event


def test_denominator_is_the_expected_signal_of_the_sample(mu):
    """The truth weight x MOT is the expected number of signal interactions of the sample:
    expected_signal(MOT, m, g) over the whole x range, efficiency 1."""
    from na64reco.geometry import load_setup
    from na64reco.sim.params import load_sim_params

    g = load_sim_params(load_setup("na64mu")).default_coupling
    table, truths = mu
    for p in table.points:
        w = truths[p.mass]["weight"][truths[p.mass]["process"] == PROCESSES["signal"]]
        assert np.all(w == p.weight)
        assert p.weight * p.n_simulated == pytest.approx(expected_signal(p.n_simulated, p.mass, g), rel=1e-9)


def test_written_events_follow_the_analytic_spectrum_times_the_deflected_muon_trigger(mu):
    """Closure of the normalisation (every simulated interaction counts, written or not):
    the trigger (S4/Smu beside the beam, edge at p_out ~ 70 GeV, x ~ 0.56) writes few
    low-x events (x < 0.2, p_out > 128 GeV: the scattering tail only) and most high-x ones
    (0.7 < x < 0.9, p_out 16-48 GeV, well past the edge: soft muons scattered back across
    the edge by the ECAL/HCAL are lost, measured ~0.8-0.9); it can only remove events."""
    table, truths = mu
    for p in table.points:
        x = truths[p.mass]["x"]
        lo = p.mass / E0 * 1.0001
        expected_low = N_EVENTS * _sigma(p.mass, lo, 0.2) / _sigma(p.mass)
        seen_low = np.count_nonzero(x < 0.2)
        assert seen_low <= 0.1 * expected_low + 3 * math.sqrt(0.1 * expected_low)
        expected = N_EVENTS * _sigma(p.mass, 0.7, 0.9) / _sigma(p.mass)
        seen = np.count_nonzero((x > 0.7) & (x < 0.9))
        assert seen <= expected + 3 * math.sqrt(expected)
        assert seen >= 0.7 * expected - 3 * math.sqrt(expected)


def test_efficiency_factorises_into_x_acceptance_and_selection(mu):
    """eff = A(x > 0.5) x eps_sel(x > 0.5) + migration, with A the analytic IWW fraction.

    eps_sel(x > 0.5) = n(selected, true x > 0.5) / (MOT x A) uses the closed-form count of
    x > 0.5 interactions.  The migration from true x < 0.5 (p_out resolution) is small, so
    eff is bounded by the analytic acceptance of x > 0.45 (p_out < 88 GeV).
    """
    table, truths = mu
    for p in table.points:
        a = x_acceptance("na64mu", p.mass)
        assert a == pytest.approx(_sigma(p.mass, 0.5) / _sigma(p.mass), rel=1e-12)
        assert 0 < a < 1
        x = truths[p.mass]["x"]
        # selected events: those the processor put in the box; recompute from its count
        n_true_box = np.count_nonzero(x > 0.5)
        assert n_true_box <= N_EVENTS * a + 3 * math.sqrt(N_EVENTS * a)  # trigger only removes
        eps_sel = p.n_selected / (N_EVENTS * a)
        assert p.efficiency == pytest.approx(a * eps_sel, rel=1e-12)
        assert 0 < eps_sel < 1
        a45 = _sigma(p.mass, 0.45) / _sigma(p.mass)
        assert p.efficiency <= a45 + 3 * p.error
        assert p.efficiency_excluding_acceptance == pytest.approx(eps_sel, rel=1e-12)


def test_na64e_signal_efficiency_runs():
    table = signal_efficiency("na64e", [100 * MeV], 1500, seed=5)
    p = table.points[0]
    assert table.processor == "na64e_invisible" and p.n_simulated == 1500
    assert 0 <= p.efficiency < 1
    assert p.efficiency <= x_acceptance("na64e", 100 * MeV) + 3 * p.error


def test_errors():
    with pytest.raises(ConfigError, match="setup"):
        signal_efficiency("na64x", [10 * MeV], 10)
    with pytest.raises(ConfigError, match="n_events"):
        signal_efficiency("na64mu", [10 * MeV], 0)
    with pytest.raises(ConfigError, match="no masses"):
        signal_efficiency("na64mu", [], 10)

    class Prov:
        n_beam, n_triggered = 0, 0

    with pytest.raises(NA64Error, match="beam count"):
        efficiency_from_output({"provenance": Prov()}, 1.0, mass=1.0, acceptance=0.5)

    class Partial:  # (a skipped chunk: its spills' beam left out of n_beam, their selected events kept: 2.4x)
        n_beam, n_triggered, partial_spills = 2000, 900, [{"run": 1001, "spill": 2, "n_beam": 2000}]

    with pytest.raises(NA64Error, match="1 spill.* with skipped events: .*raise the efficiency"):
        efficiency_from_output({"provenance": Partial()}, 1.0, mass=1.0, acceptance=0.5)


@pytest.mark.parametrize("kw, name", [({"mass": -10.0}, "mass"), ({"mass": 200e3}, "mass"), ({"n_mot": -1e10}, "n_mot"),
                                      ({"coupling": float("nan")}, "coupling"), ({"efficiency": 2.0}, "efficiency"),
                                      ({"x_min": -1.0}, "x_min"), ({"x_min": float("nan")}, "x_min")])
def test_expected_signal_refuses_what_a_yield_cannot_have(kw, name):
    """(a mass of -10 MeV gave 1.05 events; x_min = nan or -1 silently meant no cut)"""
    from na64reco.physics.yields import expected_signal

    args = {"n_mot": 1e10, "mass": 100.0, "coupling": 1e-4, "efficiency": 0.05} | kw
    with pytest.raises(ValueError, match=f"expected_signal: {name} = "):
        expected_signal(args["n_mot"], args["mass"], args["coupling"], args["efficiency"],
                        **({"x_min": kw["x_min"]} if "x_min" in kw else {}))


def test_daq_live_fraction_is_non_paralysable_dead_time():
    """1 / (1 + R tau): R from triggers per muon x muons per spill / spill length."""
    from na64reco.efficiency import daq_live_fraction
    from na64reco.geometry import load_setup

    setup = load_setup("na64mu", run=1001)
    rate = 9e-3 * setup.beam.particles_per_spill / setup.beam.spill_duration
    assert daq_live_fraction(setup, 9e-3) == pytest.approx(1 / (1 + rate * setup.trigger.dead_time))
    assert 0.85 < daq_live_fraction(setup, 9e-3) < 0.95   # 10 us at ~9.4 kHz
    assert daq_live_fraction(setup, 0.0) == 1.0
    assert daq_live_fraction(load_setup("na64e"), 1e-2) == 1.0  # no dead time given: always live


def test_efficiency_breakdown_multiplies_to_the_efficiency():
    from na64reco.efficiency import EfficiencyPoint, efficiency_breakdown

    flow = [{"cut": "initial", "events": 400}, {"cut": "a", "events": 300}, {"cut": "b", "events": 150},
            {"cut": "signal_box", "events": 120}]
    point = EfficiencyPoint(100.0, 1000, 400, 120, 1e-3, 0.12, 0.12, 0.01, 0.6, flow)
    rows = efficiency_breakdown(point, 0.9, 0.95)
    assert [name for name, _ in rows] == ["trigger (events written)", "a", "b", "signal_box",
                                          "pile-up rejection", "DAQ live time"]
    assert math.prod(f for _, f in rows) == pytest.approx(0.12 * 0.95 * 0.9)
    with pytest.raises(NA64Error, match="pileup_free"):
        efficiency_breakdown(point, 0.9, 1.5)


def test_pileup_free_fraction_is_poisson_in_the_pileup_window():
    """exp(-R w): 5e6 muons in 4.8 s and a 30 ns window give 3.1 % pile-up (the simulation's
    ``pileup`` admixture, 0.031 per MOT); no window, no loss."""
    import dataclasses

    from na64reco.efficiency import pileup_free_fraction
    from na64reco.geometry import load_setup

    setup = load_setup("na64mu", run=1001)
    mu = setup.beam.particles_per_spill / setup.beam.spill_duration * setup.beam.pileup_window
    assert pileup_free_fraction(setup) == pytest.approx(math.exp(-mu))
    assert 1 - pileup_free_fraction(setup) == pytest.approx(0.031, rel=0.05)
    no_window = dataclasses.replace(setup, beam=dataclasses.replace(setup.beam, pileup_window=0.0))
    assert pileup_free_fraction(no_window) == 1.0


def test_published_implied_efficiency_closes_on_the_yield():
    """The implied efficiency puts exactly n_up events at the crossing coupling, scales as 1/g^2 and
    1/MOT, and is larger for the smaller WW cross section."""
    from hepunits import MeV

    from na64reco.efficiency import published_implied_efficiency
    from na64reco.physics.yields import expected_signal

    kw = dict(mot=1.98e10, n_up=2.3, crossing_mass=40 * MeV, g_at_crossing=4.8e-4)
    eff = published_implied_efficiency(**kw)
    assert expected_signal(1.98e10, 40 * MeV, 4.8e-4, eff, x_min=0.5, n_steps=8) == pytest.approx(2.3)
    assert 0.03 < eff < 0.06    # the "~0.04" of issue 9
    assert published_implied_efficiency(**{**kw, "g_at_crossing": 9.6e-4}) == pytest.approx(eff / 4)
    assert published_implied_efficiency(**{**kw, "mot": 3.96e10}) == pytest.approx(eff / 2)
    assert published_implied_efficiency(**kw, method="ww") > 1.3 * eff
    with pytest.raises(NA64Error, match="must be > 0"):
        published_implied_efficiency(**{**kw, "n_up": 0.0})


def test_breakdown_benchmark_replaces_only_its_generated_block(tmp_path):
    """docs/efficiency.md keeps its prose: the benchmark rewrites the marked block only (and appends
    one to a page that has none)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "efficiency_breakdown.py"
    spec = importlib.util.spec_from_file_location("efficiency_breakdown", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    page = tmp_path / "page.md"
    page.write_text(f"intro\n\n{mod.BEGIN}\nold table\n{mod.END}\n\nprose after\n")
    mod.replace_generated(page, f"{mod.BEGIN}\nnew table\n{mod.END}")
    text = page.read_text()
    assert text == f"intro\n\n{mod.BEGIN}\nnew table\n{mod.END}\n\nprose after\n"
    bare = tmp_path / "bare.md"
    bare.write_text("only prose\n")
    mod.replace_generated(bare, f"{mod.BEGIN}\nt\n{mod.END}")
    assert bare.read_text() == f"only prose\n\n{mod.BEGIN}\nt\n{mod.END}\n"
