"""Stop 47's review of the configuration as data: each of these was accepted without a word.

* a misspelled key of a setup, a variant or a period's override (the base's value stayed in force:
  an NA64e variant with ``beem:`` simulated the 160 GeV muon beam, a 2023 override
  ``field_integal: 2.8 tesla*m`` left MS2 at 1.4 T m);
* a quantity beyond a float's range (``1e400 GeV`` is infinity), an infinite YAML number;
* a tracker payload with a NaN or infinite alignment or field integral, a dead strip beyond the
  plane, a plane the setup does not have;
* a selection's ``modules: [true]`` (a numpy mask) or a module the variable does not have (found
  only at the first chunk, after its reconstruction);
* a sideband reaching into the blinded region: on data its events are withheld, so its count fell
  short of the simulation's without a sign.
"""

from __future__ import annotations

import math
import shutil

import awkward as ak
import numpy as np
import pytest
import yaml

from na64reco.conditions import _payload, load_conditions
from na64reco.config import Node
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.resources import calib_dir
from na64reco.selection import load_selection
from na64reco.selection.cuts import failed_mask
from na64reco.selection.schema import Cut
from na64reco.units import parse_quantity
from processors.na64mu_invisible import Processor


def _setups(tmp_path):
    out = tmp_path / "setups"
    shutil.copytree(calib_dir() / "setups", out)
    return out


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("file, old, new, message", [
    ("na64e.yaml", "\nbeam:", "\nbeem:", "key 'beem': unknown key"),
    ("na64e.yaml", "  momentum_spread: 0.01", "  momentum_sprd: 0.05", "key 'beam.momentum_sprd': unknown key"),
    ("na64mu.yaml", "MS2: {field_integral: 2.8 tesla*m}", "MS2: {field_integal: 2.8 tesla*m}",
     "key 'magnets.MS2.field_integal': unknown key"),
    ("na64mu.yaml", "straw: {efficiency: 0.95}", "straw: {eficiency: 0.95}", "key 'trackers.defaults.straw.eficiency'"),
    ("na64mu.yaml", "MS2: {field_integral: 2.8 tesla*m}", "MS2: {field_integral: 1e400 tesla*m}",
     "beyond a float's range"),
    ("na64mu.yaml", "\nbeam:\n", "\nbem: 1\nbeam:\n", "key 'bem': unknown key"),
    ("na64mu.yaml", "    moliere_radius:", "    moliere_radus:", "key 'calorimeters.ECAL.moliere_radus': unknown key"),
    ("na64mu.yaml", "  gas_volumes:", "  gas_volume:", "key 'trackers.gas_volume': unknown key"),
    ("na64mu.yaml", "    MM:  {efficiency: 0.97}", "    Mm:  {efficiency: 0.97}", "key 'trackers.defaults.Mm'"),
    ("na64mu.yaml", "{name: MM7X, type: MM,    ", "{name: MM7X, efficency: 0.5, type: MM, ", "unknown key"),
])
def test_misspelled_setup_keys_are_refused(tmp_path, file, old, new, message):
    path = _edit(_setups(tmp_path) / file, old, new)
    with pytest.raises(ConfigError, match=message):
        load_setup(str(path), run=20000 if file == "na64mu.yaml" else 1)


def test_variants_and_periods_may_still_set_keys_their_base_leaves_out(tmp_path):
    """A key the base's entry does not set is not a misspelling when it is a key of its kind: an optional
    one (a counter's hole, a period's ECAL hole, NA64e's dead time) or a new named entry (a magnet)."""
    root = _setups(tmp_path)
    setup = load_setup(str(root / "na64e.yaml"), run=1)
    assert "MBPL" in setup.magnets and setup.beam.energy == pytest.approx(100e3)
    shutil.copy(root / "na64e.yaml", root / "na64e_dead.yaml")  # (a new path: the loaded setups are cached)
    _edit(root / "na64e_dead.yaml", "\ntrigger:\n", "\ntrigger:\n  dead_time_per_event: 100 ns\n")
    assert load_setup(str(root / "na64e_dead.yaml"), run=1).trigger.dead_time == pytest.approx(100.0)
    _edit(root / "na64mu.yaml", "MS2: {field_integral: 2.8 tesla*m}",
          "MS2: {field_integral: 2.8 tesla*m}\n      calorimeters:\n        S0: {offset_y: 1 mm}")
    assert load_setup(str(root / "na64mu.yaml"), run=20000).calorimeters["S0"] is not None


@pytest.mark.parametrize("section, message", [
    ("simulation:\n  signal:\n    default_couplng: 2.0e-4\n", "key 'simulation.signal.default_couplng': not a key"),
    ("calibration:\n  electorn:\n    core_sigmas: 4.0\n", "key 'calibration.electorn': not a key"),
])
def test_a_variants_unlisted_sections_take_only_keys_of_the_first_base(tmp_path, section, message):
    root = _setups(tmp_path)
    (root / "v.yaml").write_text(f"schema_version: 1\nbase: na64e.yaml\nsetup: na64e\n{section}")
    with pytest.raises(ConfigError, match=message):
        load_setup(str(root / "v.yaml"), run=1)


def test_a_variant_may_set_again_what_its_base_drops(tmp_path):
    """(na64e drops simulation.muon.single_scatter; a variant of it that sets it again is no misspelling)"""
    root = _setups(tmp_path)
    (root / "v.yaml").write_text("schema_version: 1\nbase: na64e.yaml\nsetup: na64e\nsimulation:\n  muon:\n"
                                 "    single_scatter: {q_floor: 20 MeV, core_sigmas: 4}\n")
    assert load_setup(str(root / "v.yaml"), run=1).name == "na64e"


def test_an_error_of_the_base_is_not_put_on_a_period(tmp_path):
    root = _setups(tmp_path)
    path = _edit(root / "na64mu.yaml", "deflected: {magnet: MS2, edge_momentum: 70 GeV}",
                 "deflected: {magnet: MS2, edge_momentun: 70 GeV}")
    with pytest.raises(ConfigError, match="deflected.edge_momentun': unknown key") as err:
        load_setup(str(path), run=1)
    assert "overrides it" not in str(err.value)
    root2 = tmp_path / "two"
    shutil.copytree(calib_dir() / "setups", root2)
    path = _edit(root2 / "na64mu.yaml", "MS2: {field_integral: 2.8 tesla*m}", "MS2: {field_integal: 2.8 tesla*m}")
    with pytest.raises(ConfigError, match=r"in the setup as period '2023' overrides it: periods.1.override"):
        load_setup(str(path), run=20000)


def test_quantities_and_numbers_must_be_finite():
    with pytest.raises(ValueError, match="1e400 is beyond a float's range"):
        parse_quantity("1e400 GeV", "energy")
    with pytest.raises(ValueError, match="beyond a float's range in internal units"):
        parse_quantity("1e306 GeV", "energy")  # finite, but not in MeV
    node = Node({"x": math.inf, "y": -math.inf, "z": 10**400, "w": [1, 10**400]}, "f.yaml")
    for key in ("x", "y"):
        with pytest.raises(ConfigError, match=f"f.yaml: key '{key}': .* is infinite"):
            node.number(key)
    with pytest.raises(ConfigError, match="f.yaml: key 'z': 1000.* is beyond a float's range"):
        node.number("z")  # (an OverflowError before)
    with pytest.raises(ConfigError, match="f.yaml: key 'w.1': 1000.* is beyond a float's range"):
        node.numbers("w")


@pytest.fixture
def calib(tmp_path):
    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    yield root
    _payload.cache_clear()


@pytest.mark.parametrize("old, new, message", [
    ("alignment_mm: 0.0444", "alignment_mm: .nan", "planes.MM1X.alignment_mm': is nan; expected a finite"),
    ("alignment_mm: 0.0444", "alignment_mm: .inf", "planes.MM1X.alignment_mm': is inf"),
    ("alignment_mm: 0.0444", "alignment_mm: 0.0444\n    time_offset_ns: .nan", "time_offset_ns': is nan"),
    ("schema_version: 1", "schema_version: 3\nmagnets: {MS2: {field_integral_tm: .nan}}",
     "magnets.MS2.field_integral_tm': is nan"),
    ("schema_version: 1", "schema_version: 3\nmagnets: {MS2: {field_integral_tm: .inf}}",
     "magnets.MS2.field_integral_tm': is inf"),
    ("dead_strips: []", "dead_strips: [5000]", r"planes.MM1X.dead_strips': strips outside 0..\d+: \[5000\]"),
    ("planes:\n", "planes:\n  MM99X: {alignment_mm: 0.0, dead_strips: []}\n", "planes.MM99X': not a plane of setup"),
])
def test_tracker_payloads_with_impossible_values_are_refused(calib, old, new, message):
    path = _edit(calib / "conditions/na64mu/tracker/v002.yaml", old, new)
    if "time_offset_ns" in new:  # (an optional field needs schema_version 3)
        _edit(path, "schema_version: 1\n", "schema_version: 3\n")
    _payload.cache_clear()
    with pytest.raises(ConfigError, match=message):
        load_conditions(load_setup("na64mu", run=20000), 20000, "na64mu-periods-v1", root=calib)


def _selection(tmp_path, edit):
    data = yaml.safe_load(open(load_selection("na64mu_invisible").source))
    edit(data)
    path = tmp_path / "sel.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _cut(data, name):
    return next(c for c in data["cuts"] if c["name"] == name)


def test_modules_must_be_module_indices_of_the_setup(tmp_path):
    with pytest.raises(ConfigError, match=r"modules': \[True\]: expected a list of module indices"):
        load_selection(_selection(tmp_path, lambda d: _cut(d, "hcal_mip").update(modules=[True])))
    path = _selection(tmp_path, lambda d: _cut(d, "hcal_mip").update(modules=[0, 7]))
    with pytest.raises(ConfigError, match=r"sel.yaml: cut 'hcal_mip': modules \[0, 7\]: hcal_module_energy has 4 "
                                          r"modules in setup na64mu \(0..3\)"):
        Processor(path)
    Processor(_selection(tmp_path, lambda d: _cut(d, "hcal_mip").update(modules=[0, 3])))


def test_a_sideband_reaching_into_the_blinded_region_is_refused(tmp_path):
    # the VETO cut at 10 MeV: events failing it with 10-25 MeV are in the blinded region (visible from 25 MeV)
    path = _selection(tmp_path, lambda d: _cut(d, "no_veto").update(max="10 MeV"))
    with pytest.raises(ConfigError, match="sideband 'veto_failed_box' .* can hold events of the blinded region"):
        Processor(path)
    # a sideband overlapping the signal box (not only the protected region)
    path = _selection(tmp_path, lambda d: d["sidebands"][0].update(min="60 GeV"))
    with pytest.raises(ConfigError, match="sideband 'p_out_80_120'"):
        Processor(path)
    # the VETO cut above the protection's 25 MeV: its failures are all visible
    Processor(_selection(tmp_path, lambda d: _cut(d, "no_veto").update(max="30 MeV")))


def test_a_failed_cut_of_a_sideband_needs_a_measured_value():
    """A NaN fails every cut, but an event without a VETO measurement is no "VETO failed" event (on data
    it is in the blinded region: counting it made the sideband short of the simulation)."""
    cut = Cut("no_veto", "range", "veto_energy", max=0.025)
    reco = ak.Array({"veto_energy": np.array([0.01, 0.03, np.nan])})
    assert failed_mask(reco, cut).tolist() == [False, True, False]
    modules = Cut("hcal_mip", "each_in_range", "hcal_module_energy", min=0.5, max=5.0, modules=(0, 1))
    reco = ak.Array({"hcal_module_energy": np.array([[1.0, 9.0, np.nan], [np.nan, 9.0, 1.0], [1.0, 2.0, 9.0]])})
    assert failed_mask(reco, modules).tolist() == [True, False, False]  # (module 2 is not the cut's)
