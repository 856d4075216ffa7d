import numpy as np
import pytest
import yaml

from na64reco.errors import ConfigError
from na64reco.geometry import SETUPS, load_setup
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
