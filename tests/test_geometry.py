import dataclasses

import hepunits
import numpy as np
import pytest
import yaml

from na64reco import units
from na64reco.errors import ConfigError
from na64reco.geometry import SETUPS, deflection_offset, list_periods, load_setup
from na64reco.resources import calib_dir


@pytest.mark.parametrize("name", SETUPS)
def test_setups_load_and_are_consistent(name):
    s = load_setup(name)
    assert s.name == name
    # every tracker plane and detector sits on the reference trajectory
    for p in s.planes:
        x, y = s.reference_position(p.z)
        assert p.center == pytest.approx(float(x if p.measures == "x" else y))
    zs = [p.z for p in s.planes]
    assert all(p.station in s.magnets for p in s.planes)
    # upstream planes lie before the magnet centre, downstream after it
    for p in s.planes:
        m = s.magnets[p.station]
        assert (p.z < m.center_z - m.length / 2) == (p.side == "upstream")
    assert len(set(zs)) == len(zs)
    ids = [d.id for d in s.calorimeters.values()]
    assert len(set(ids)) == len(ids)
    assert s.calorimeters["ECAL"].n_channels == 60  # preshower + main, 5 x 6 each


def test_reference_trajectory_bends_by_the_kick():
    s = load_setup("na64mu")
    m = s.magnets["MS1"]
    kick = m.kick(m.reference_momentum)
    assert kick == pytest.approx(0.29979 * 4.0 / 160, rel=1e-4)  # theta = 0.3 B L / p
    _, y1 = s.reference_position(m.center_z + 1000.0)
    assert y1 == pytest.approx(-kick * 1000.0)


def test_mm_multiplexing_map_is_a_5_to_1_partition_resolvable_by_pairs():
    r = load_setup("na64mu").readout
    table = r.mm_strips_of_channel
    assert table.shape == (64, 5)
    assert sorted(table.ravel()) == list(range(320))
    assert np.all(r.mm_channel_of_strip(table) == np.arange(64)[:, None])
    # a pair of adjacent strips identifies its position uniquely
    strips = np.arange(319)
    pairs = {
        (int(a), int(b)) for a, b in zip(r.mm_channel_of_strip(strips), r.mm_channel_of_strip(strips + 1), strict=True)
    }
    same_group = (strips // 64) == ((strips + 1) // 64)
    assert len(pairs) >= same_group.sum()


def test_calorimeter_channel_numbering_round_trips():
    ecal = load_setup("na64mu").calorimeters["ECAL"]
    ch = np.arange(ecal.n_channels)
    sec, ix, iy = ecal.cell_of_channel(ch)
    assert np.all(ecal.channel(sec, ix, iy) == ch)
    x, y = ecal.cell_center(ix, iy)
    jx, jy, inside = ecal.cell_index(x, y)
    assert inside.all() and np.all(jx == ix) and np.all(jy == iy)


def _broken_setup(tmp_path, edit):
    data = yaml.safe_load((calib_dir() / "setups" / "na64mu.yaml").read_text())
    edit(data)
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(data))
    load_setup.cache_clear()
    return str(p)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["beam"].update(energy="160"), r"key 'beam.energy'.*no|unit"),
        (lambda d: d["magnets"]["MS1"].update(bend_plane="z"), r"'magnets.MS1.bend_plane': 'z' is not one of: x, y"),
        (lambda d: d["trackers"]["planes"][0].update(type="RPC"), r"planes.0.type': 'RPC' is not one of"),
        (lambda d: d["trigger"].update(logic=["S0", "NOPE"]), r"unknown detector 'NOPE'"),
        (lambda d: d["calorimeters"]["HCAL"].update(id=1), r"detector ids must be unique"),
        (lambda d: d.update(schema_version=2), r"schema_version' is 2"),
    ],
)
def test_malformed_setup_errors(tmp_path, edit, message):
    path = _broken_setup(tmp_path, edit)
    with pytest.raises(ConfigError, match=message):
        load_setup(path)


def test_unknown_setup():
    with pytest.raises(ConfigError, match="unknown setup 'na64x'; known setups: na64mu, na64e"):
        load_setup("na64x")


# ---- deflected-muon counters and run periods ------------------------------------------
def test_deflected_counters_sit_at_the_edge_momentum_deflection():
    """S4/Smu inner edges: where a muon of edge_momentum bent by MS2 crosses the counter z,
    by hand from the field integral (p [GeV] = 0.299792458 B L [T m] / kick)."""
    s = load_setup("na64mu")
    ms2 = s.magnets["MS2"]
    bl = ms2.field_integral / (hepunits.tesla * hepunits.m)
    for name in ("S4", "Smu"):
        c = s.calorimeters[name]
        p_edge = c.edge_momentum / units.GeV
        lever = (c.z - ms2.center_z) / 1000.0  # m
        ref_x = s.reference_position(c.z)[0]
        by_hand = ref_x - 0.299792458 * bl * (1 / p_edge - 1 / 160.0) * lever * 1000.0  # mm
        inner = c.center[0] + c.size[0] / 2  # the counter extends to negative x from its edge
        assert inner == pytest.approx(by_hand, abs=1e-6), name
        # an unscattered reference muon misses it, a muon below the edge momentum hits it
        assert not c.cell_index(ref_x, s.reference_position(c.z)[1])[2]
        x_soft = ref_x + deflection_offset(ms2, 0.8 * c.edge_momentum, c.z)
        assert c.cell_index(x_soft, s.reference_position(c.z)[1])[2]


def test_periods_select_by_run_and_override_only_their_keys():
    base = load_setup("na64mu")
    p22, p23 = load_setup("na64mu", run=1), load_setup("na64mu", run=10000)
    assert (base.period, p22.period, p23.period) == ("", "2022", "2023")
    assert [p.name for p in p22.planes] == [p.name for p in base.planes]
    added = [p.name for p in p23.planes if p.name not in {q.name for q in base.planes}]
    assert added == ["MM7X", "MM7Y", "ST2X", "ST2Y"]
    # MS2 bend view: 2 upstream measurements in 2022, 3 in 2023
    ups = [len([p for p in s.planes_of("MS2", "upstream") if p.measures == "x"]) for s in (p22, p23)]
    assert ups == [2, 3]
    assert {p.efficiency for p in base.planes if p.type == "MM"} == {0.90}
    assert {p.efficiency for p in p22.planes if p.type == "MM"} == {0.85}
    assert {p.efficiency for p in p23.planes if p.type == "MM"} == {0.97}
    # everything not overridden is the base description; the 2023 MS2 has twice the field
    # integral, and what is placed on (or beside) its bent beam moves in x with it, nothing else
    ms2 = base.magnets["MS2"]
    assert p23.magnets == {**base.magnets, "MS2": dataclasses.replace(ms2, field_integral=2 * ms2.field_integral)}
    assert p22.magnets == base.magnets and p23.beam == base.beam
    moved = {k for k in base.calorimeters if p23.calorimeters[k] != base.calorimeters[k]}
    assert moved == {"HCAL", "S4", "Smu"}
    for k in moved:
        c0, c1 = base.calorimeters[k], p23.calorimeters[k]
        assert dataclasses.replace(c0, center=c1.center) == c1 and c1.center[1:] == c0.center[1:]
    # the 160 GeV beam at the HCAL is bent twice as far
    assert p23.calorimeters["HCAL"].center[0] == pytest.approx(2 * base.calorimeters["HCAL"].center[0])
    assert [p.name for p in list_periods("na64mu")] == ["2022", "2023"]
    with pytest.raises(ConfigError, match=r"run 1000000 is in no period \(periods: 2022: 1-9999"):
        load_setup("na64mu", run=1_000_000)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["periods"][1]["override"].update(simulation={}), r"periods.1.override.simulation': cannot be"),
        (lambda d: d["periods"][1]["override"].update(nope=1), r"periods.1.override.nope': not a key of the base"),
        (lambda d: d["periods"][1]["override"]["trackers"]["planes"].append({"name": "XX", "remove": True}),
         r"periods.1.override.trackers.planes.4': no plane 'XX' to remove"),
        (lambda d: d["periods"][1]["runs"].update(first=9000), r"'periods': run ranges of periods '2022' and '2023'"),
        (lambda d: d["periods"][1].update(extra=1), r"periods.1.extra': unknown key"),
        (lambda d: d["calorimeters"]["S4"]["deflected"].update(magnet="MS9"), r"S4.deflected.magnet': 'MS9'"),
        (lambda d: d["calorimeters"]["S4"]["deflected"].update(edge_momentum="200 GeV"),
         r"S4.deflected.edge_momentum': must be between 0 and MS2"),
    ],
)
def test_malformed_periods_errors(tmp_path, edit, message):
    path = _broken_setup(tmp_path, edit)
    with pytest.raises(ConfigError, match=message):
        load_setup(path, run=10000)
        load_setup(path)


def test_period_removes_and_updates_planes_by_name(tmp_path):
    def edit(d):
        d["periods"][1]["override"]["trackers"]["planes"] += [{"name": "MM1X", "remove": True},
                                                               {"name": "MM2X", "efficiency": 0.5}]
    path = _broken_setup(tmp_path, edit)
    s = load_setup(path, run=10000)
    names = [p.name for p in s.planes]
    assert "MM1X" not in names and next(p for p in s.planes if p.name == "MM2X").efficiency == 0.5
    assert [p.index for p in s.planes] == list(range(len(s.planes)))


def test_a_detector_number_the_simulation_needs_is_required_not_defaulted():
    """(the simulator read the HCAL's resolution and module depth with defaults that repeated the
    setup file's values: a setup without them got the copies silently)"""
    from na64reco.errors import ConfigError

    hcal = load_setup("na64mu").calorimeters["HCAL"]
    assert hcal.number("interaction_lengths_per_module") == 7.5 and hcal.number("resolution_stochastic") == 0.65
    with pytest.raises(ConfigError, match=r"setup detector HCAL: key 'calorimeters\.HCAL\.nope': expected a number, "
                                          r"found None"):
        hcal.number("nope")
