"""Gas volumes on the beam path (setup ``gas_volumes``): the MS2 helium bag of na64mu."""

from __future__ import annotations

import math

import hepunits as u
import numpy as np
import pytest

from na64reco import constants as C
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup


def _setup_text(tmp_path, volumes: str):
    from na64reco.geometry import setup_path

    text = setup_path("na64mu").read_text()
    start = text.index("  gas_volumes:")
    end = text.index("\n\n", start)
    path = tmp_path / "na64mu_gas.yaml"
    path.write_text(text[:start] + volumes + text[end:])
    return path


def test_the_ms2_bag_is_helium_between_the_planes_around_the_magnet():
    s = load_setup("na64mu", run=1)
    (bag,) = s.readout.gas_volumes
    up = max(p.z for p in s.planes_of("MS2", "upstream"))
    down = min(p.z for p in s.planes_of("MS2", "downstream"))
    assert bag.material == "helium" and up < bag.z0 < s.magnets["MS2"].center_z < bag.z1 < down
    # X0 of helium gas from its mass X0 and density: 5.67 km (PDG)
    assert 1.0 / bag.x0_per_metre == pytest.approx(5672, rel=1e-3)  # metres
    assert load_setup("na64mu", run=10001).readout.gas_volumes == s.readout.gas_volumes
    assert load_setup("na64e").readout.gas_volumes == ()


def test_x0_between_is_piecewise_air_and_gas():
    r = load_setup("na64mu", run=1).readout
    (bag,) = r.gas_volumes
    air, he = r.air_x0_per_metre / 1000.0, bag.x0_per_metre / 1000.0
    # outside the bag: bit for bit the old air * dz (the bytes of every other flight are unchanged)
    assert r.x0_between(1000.0, 17000.0) == air * 16000.0
    assert r.x0_between(bag.z0 + 100, bag.z0 + 600) == pytest.approx(he * 500, rel=1e-12)
    whole = r.x0_between(bag.z0 - 20, bag.z1 + 20)
    assert whole == pytest.approx(air * 40 + he * (bag.z1 - bag.z0), rel=1e-12)
    # additive over any split
    cuts = np.sort(np.random.default_rng(3).uniform(bag.z0 - 500, bag.z1 + 500, 7))
    assert sum(r.x0_between(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)) == pytest.approx(
        r.x0_between(cuts[0], cuts[-1]), rel=1e-12)
    assert r.medium_at(24000.0) == "helium" and r.medium_at(21000.0) == "air"


@pytest.mark.parametrize("volumes, message", [
    ("  gas_volumes:\n    - {name: bag, material: neon, first: 22030 mm, last: 25980 mm}", "neon"),
    ("  gas_volumes:\n    - {name: bag, material: helium, first: 25980 mm, last: 22030 mm}", "must end after"),
    ("  gas_volumes:\n    - {name: a, material: helium, first: 22030 mm, last: 24000 mm}\n"
     "    - {name: b, material: helium, first: 23000 mm, last: 25000 mm}", "overlaps"),
    ("  gas_volumes:\n    - {name: bag, material: helium, first: 22030, last: 25980 mm}", "first"),
])
def test_bad_gas_volumes_name_the_key(tmp_path, volumes, message):
    path = _setup_text(tmp_path, volumes)
    with pytest.raises(ConfigError, match=message) as err:
        load_setup(str(path))
    assert "gas_volumes" in str(err.value)


def test_path_elements_cut_at_the_bag_and_carry_its_gas():
    from na64reco.sim.material_path import path_elements

    s = load_setup("na64mu", run=1)
    (bag,) = s.readout.gas_volumes
    slabs = path_elements(s)
    gap = [sl for sl in slabs if sl.z0 >= 22010 and sl.z1 <= 26000 and sl.z1 > sl.z0]
    he = [sl for sl in gap if sl.material == "helium"]
    assert he and all(bag.z0 <= sl.z0 and sl.z1 <= bag.z1 for sl in he)
    assert all(sl.material == "air" for sl in gap if sl.z1 <= bag.z0 or sl.z0 >= bag.z1)
    assert min(sl.z0 for sl in he) == pytest.approx(bag.z0) and max(sl.z1 for sl in he) == pytest.approx(bag.z1)
    assert sum(sl.x_over_x0 for sl in gap) == pytest.approx(s.readout.x0_between(gap[0].z0, gap[-1].z1), rel=1e-9)


def test_helium_cuts_the_single_scattering_tail_less_than_its_radiation_length():
    """Per radiation length the Rutherford tail goes as Z(Z+1)/A over the X0 normalisation
    (closed form): helium's 19x longer X0 gives a 5-10x lower probability of a 2.6 mrad scatter
    at 160 GeV in the 4 m gap, not 19x (its small nucleus keeps more of the coherent part)."""
    from na64reco.physics.single_scatter import probability_above_q

    q = [160 * u.GeV * 2.62e-3]
    length = 3.95 * u.m
    air_per_m = load_setup("na64mu", run=1).readout.air_x0_per_metre
    air = probability_above_q("air", air_per_m * length / u.m, q)[0]
    he = probability_above_q("helium", length * C.HELIUM_DENSITY / C.X0_HELIUM, q)[0]
    assert 4.0 < air / he < 12.0
    assert math.isfinite(he) and he > 0
