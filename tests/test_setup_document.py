"""A setup file as a variant of another (``base``, ``drop``): na64reco.setup_document."""

from __future__ import annotations

import shutil

import pytest
import yaml

from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.resources import calib_dir
from na64reco.setup_document import setup_document, setup_sha256, setup_sources


def _write(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_variant_takes_the_base_drops_and_overrides(tmp_path):
    _write(tmp_path / "a.yaml", {"schema_version": 1, "x": {"p": 1, "q": [1, 2], "r": {"s": 3, "t": 4}},
                                 "y": 5, "gone": {"k": 1}})
    _write(tmp_path / "b.yaml", {"schema_version": 1, "base": "a.yaml", "drop": ["gone", "x.r.t"],
                                 "x": {"q": [9], "new": 7, "r": {"s": 30}}, "z": 6})
    doc = setup_document(tmp_path / "b.yaml").data
    assert doc == {"schema_version": 1, "x": {"q": [9], "new": 7, "r": {"s": 30}, "p": 1}, "z": 6, "y": 5}
    assert list(doc["x"]) == ["q", "new", "r", "p"]  # the variant's keys first, in its order
    assert setup_sources(tmp_path / "b.yaml") == (tmp_path / "b.yaml", tmp_path / "a.yaml")
    assert setup_document(tmp_path / "a.yaml").data["x"]["r"] == {"s": 3, "t": 4}  # the base untouched


@pytest.mark.parametrize("doc, message", [
    ({"base": "missing.yaml"}, "key 'base': .*missing.yaml does not exist"),
    ({"base": "b.yaml"}, "key 'base': b.yaml is the file itself"),
    ({"base": 3}, "key 'base': expected the file name of another setup"),
    ({"base": "../a.yaml"}, "key 'base': expected the file name of another setup in the same folder"),
    ({"base": "a.yaml", "drop": ["nope"]}, "key 'drop': 'nope' is not a key of the base"),
    ({"base": "a.yaml", "drop": ["y.deeper"]}, "key 'drop': 'y.deeper' is not a key of the base"),
    ({"base": "a.yaml", "drop": "y"}, "key 'drop': expected a list of dotted keys"),
    ({"drop": ["y"]}, "key 'drop': only a setup with a 'base' can drop keys"),
])
def test_bad_variants_name_the_file_and_key(tmp_path, doc, message):
    _write(tmp_path / "a.yaml", {"schema_version": 1, "y": 5})
    path = _write(tmp_path / "b.yaml", {"schema_version": 1, **doc})
    with pytest.raises(ConfigError, match=message):
        setup_document(path)


def test_a_chain_of_bases_that_comes_back_is_refused(tmp_path):
    _write(tmp_path / "a.yaml", {"schema_version": 1, "base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"schema_version": 1, "base": "a.yaml"})
    with pytest.raises(ConfigError, match="b.yaml -> a.yaml"):
        setup_document(tmp_path / "a.yaml")


def test_na64e_is_a_variant_of_na64mu_sharing_its_detectors():
    e_file = calib_dir() / "setups" / "na64e.yaml"
    assert [p.name for p in setup_sources(e_file)] == ["na64e.yaml", "na64mu.yaml"]
    e, mu = load_setup("na64e"), load_setup("na64mu")
    assert list(e.calorimeters) == ["SRD", "VHCAL", "ECAL", "VETO", "HCAL", "S0", "S1", "V1"]
    assert list(e.magnets) == ["MBPL"] and e.beam.particle == "e-"
    assert e.msadc == mu.msadc
    for name in ("ECAL", "HCAL", "VETO"):  # the same detector, placed elsewhere
        assert e.calorimeters[name].mip_mpv == mu.calorimeters[name].mip_mpv
        assert e.calorimeters[name].z != mu.calorimeters[name].z
    assert e.calorimeters["ECAL"].nominal_gain != mu.calorimeters["ECAL"].nominal_gain  # set again in na64e.yaml
    assert not e.readout.gas_volumes and mu.readout.gas_volumes  # dropped


def test_the_setup_sha_covers_the_base(tmp_path):
    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    e_file, mu_file = root / "setups" / "na64e.yaml", root / "setups" / "na64mu.yaml"
    before_e, before_mu = setup_sha256(e_file), setup_sha256(mu_file)
    mu_file.write_text(mu_file.read_text().replace("noise: 2.5 ", "noise: 2.6 "))
    assert setup_document(e_file).data["msadc"]["noise"] == 2.6  # the base's change reaches the variant
    assert setup_sha256(e_file) != before_e and setup_sha256(mu_file) != before_mu


def test_the_blinding_sees_an_edited_base(tmp_path):
    """The blinding's reference comparison reads the variant's setup file *and its base*: an
    edited base is another setup (its reconstruction is not the reference's)."""
    from na64reco.selection.blinding import _inputs

    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    e_file = root / "setups" / "na64e.yaml"
    before = _inputs(e_file, "na64e", "", 1, {})
    mu_file = root / "setups" / "na64mu.yaml"
    mu_file.write_text(mu_file.read_text().replace("noise: 2.5 ", "noise: 2.6 "))
    assert _inputs(e_file, "na64e", "", 1, {}) != before


def test_a_base_edited_read_and_restored_is_not_the_reference(tmp_path):
    """(the blinding checked that only the variant's own file was not edited since it was read: an NA64e
    setup loaded while its base na64mu.yaml was edited, the base then restored, compared equal to the
    reference by the files' contents and skipped the reference reconstruction; review of stop 45)"""
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.selection.blinding import uses_reference_inputs

    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    e_file, mu_file = root / "setups" / "na64e.yaml", root / "setups" / "na64mu.yaml"
    text = mu_file.read_text()
    try:
        setup = load_setup(str(e_file), run=1)
        assert uses_reference_inputs(setup, load_conditions(setup, 1, root=root))  # a copy, read once
        load_setup.cache_clear()
        mu_file.write_text(text.replace("signal_time: 125 ns", "signal_time: 150 ns"))
        setup = load_setup(str(e_file), run=1)  # read with the edited base
        mu_file.write_text(text)  # restored: the files' contents are the reference's again
        assert not uses_reference_inputs(setup, load_conditions(setup, 1, root=root))
    finally:
        load_setup.cache_clear()


def test_an_optional_simulation_section_a_process_needs_is_required_not_defaulted():
    """(the forced processes read the biasing and leading-hadron parameters with dataclass defaults
    that repeated NA64mu's values: a setup without the sections got them silently)"""
    from na64reco.sim.params import load_sim_params

    e = load_sim_params(load_setup("na64e"))
    assert e.need("bias_v_min") == 0.45 and e.need("bias_ecal_visible_max") == 2000.0  # from the base
    with pytest.raises(ConfigError, match=r"na64e\.yaml: key 'simulation\.hadron\.leading': missing; the process "
                                          r"simulated needs its v_min"):
        e.need("leading_v_min")
