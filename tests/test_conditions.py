import shutil

import numpy as np
import pytest
import yaml

from na64reco.conditions import (
    default_tag,
    load_conditions,
    nominal_content,
    publish,
    resolve,
    write_payload,
)
from na64reco.errors import CalibrationMissing, ConfigError
from na64reco.geometry import SETUPS, load_setup
from na64reco.resources import calib_dir


@pytest.fixture
def calib(tmp_path):
    """A private copy of calib/ so tests can publish new versions."""
    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    return root


@pytest.mark.parametrize("setup", SETUPS)
def test_default_tag_gives_arrays_for_every_channel(setup):
    s = load_setup(setup)
    c = load_conditions(setup, run=1000)
    assert c.tag == default_tag(setup)
    for name, det in s.calorimeters.items():
        cc = c.calo[name]
        assert cc.gain.shape == (det.n_channels,)
        assert np.all(cc.gain > 0)
        # parity pedestals differ (interleaved ADCs) but stay close
        assert 0 < np.mean(cc.pedestal_odd - cc.pedestal_even) < 10
    table = c.calo_table(s, "gain")
    ecal = s.calorimeters["ECAL"]
    assert table[ecal.id, 5] == c.calo["ECAL"].gain[5]
    assert np.isnan(table[200, 0])
    assert set(c.planes) == {p.name for p in s.planes}


def test_run_outside_every_interval_names_run_and_ranges():
    with pytest.raises(CalibrationMissing, match=r"run 0 has no calorimeter conditions in tag "
                                                 r"'na64mu-periods-v1': covered run ranges are 1-999999"):
        load_conditions(load_setup("na64mu"), run=0)  # (the setup alone: run 0 is in no period either)


def test_new_version_wins_inside_its_range_and_never_overwrites(calib):
    s = load_setup("na64mu")
    old = load_conditions(s, 50, root=calib)
    content = nominal_content(s, seed=99)
    publish("na64mu", "na64mu-test", (100, 200), {"calorimeter": content["calorimeter"]},
            base_tag="na64mu-default", root=calib)
    v1 = (calib / "conditions/na64mu/calorimeter/v001.yaml").read_text()
    inside = load_conditions(s, 150, tag="na64mu-test", root=calib)
    outside = load_conditions(s, 50, tag="na64mu-test", root=calib)
    assert inside.files["calorimeter"].endswith("v002.yaml")
    assert outside.files["calorimeter"].endswith("v001.yaml")
    assert np.array_equal(outside.calo["ECAL"].gain, old.calo["ECAL"].gain)
    assert np.allclose(inside.calo["ECAL"].gain, content["calorimeter"]["detectors"]["ECAL"]["gain_mev_per_adc"])
    # the old file is untouched, and tags are immutable
    assert (calib / "conditions/na64mu/calorimeter/v001.yaml").read_text() == v1
    with pytest.raises(ConfigError, match="tags are immutable"):
        publish("na64mu", "na64mu-test", (100, 200), {"calorimeter": content["calorimeter"]},
                base_tag="na64mu-default", root=calib)
    assert not (calib / "conditions/na64mu/calorimeter/v003.yaml").exists()  # refused before writing
    assert not list(calib.rglob(".*.tmp-*"))  # written whole: no temporary file left
    assert resolve("na64mu-test", 150, calib)["tracker"].name == "v001.yaml"


def _corrupt(calib, edit):
    path = calib / "conditions/na64mu/calorimeter/v001.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["detectors"]["ECAL"]["gain_mev_per_adc"].pop(),
            r"detectors.ECAL.gain_mev_per_adc': expected 60 values, found 59",
        ),
        (lambda d: d["detectors"]["ECAL"]["gain_mev_per_adc"].__setitem__(0, -1.0), "gains must be positive"),
        (
            lambda d: d["detectors"]["ECAL"].pop("pedestal_odd"),
            r"key 'detectors.ECAL': 'pedestal_odd' is a required property",
        ),
        (lambda d: d["detectors"].pop("HCAL"), r"no entry for detector 'HCAL'"),
        (lambda d: d.update(runs={"first": 10, "last": 5}), r"first=10 is after last=5"),
        (lambda d: d.update(schema_version=4), r"'schema_version' is 4"),  # 1-3 are known
        (lambda d: d.update(colour="blue"), r"Additional properties are not allowed \('colour'"),
    ],
)
def test_malformed_conditions_are_reported_with_file_and_key(calib, edit, message):
    from na64reco import conditions

    conditions._payload.cache_clear()
    _corrupt(calib, edit)
    try:
        with pytest.raises(ConfigError, match=message):
            load_conditions("na64mu", 10, root=calib)
    finally:
        conditions._payload.cache_clear()


def test_nan_in_conditions(calib):
    from na64reco import conditions

    conditions._payload.cache_clear()
    _corrupt(calib, lambda d: d["detectors"]["ECAL"]["pedestal_even"].__setitem__(0, float("nan")))
    try:
        with pytest.raises(ConfigError, match=r"detectors.ECAL.pedestal_even': contains NaN"):
            load_conditions("na64mu", 10, root=calib)
    finally:
        conditions._payload.cache_clear()


def test_unknown_tag_lists_known(calib):
    with pytest.raises(
        ConfigError, match=r"unknown calibration tag 'nope'.*known tags: na64e-default, .*na64mu-default"
    ):
        load_conditions("na64mu", 10, tag="nope", root=calib)
    with pytest.raises(ConfigError, match="is for setup 'na64e', not 'na64mu'"):
        load_conditions("na64mu", 10, tag="na64e-default", root=calib)


def test_write_payload_validates_before_writing(calib):
    with pytest.raises(ConfigError, match="detectors.ECAL"):
        write_payload("na64mu", "calorimeter", (1, 2), {"detectors": {"ECAL": {"gain_mev_per_adc": [1.0]}}}, root=calib)
    assert not (calib / "conditions/na64mu/calorimeter/v002.yaml").exists()


def test_default_tag_pointer(calib):
    from na64reco.conditions import DEFAULT_TAGS_FILE

    (calib / DEFAULT_TAGS_FILE).write_text("schema_version: 1\ndefaults: {na64mu: na64mu-test}\n")
    assert default_tag("na64mu", calib) == "na64mu-test"
    assert default_tag("na64e", calib) == "na64e-default"  # no entry: <setup>-default
    with pytest.raises(ConfigError, match="unknown calibration tag 'na64mu-test'"):
        load_conditions("na64mu", 10, root=calib)
    (calib / DEFAULT_TAGS_FILE).unlink()
    assert default_tag("na64mu", calib) == "na64mu-default"


def test_run_periods_get_their_setup_and_tracker_payload():
    """2023 runs (na64mu periods) resolve tracker v002, which has the 2023 MS2 planes; the
    older tag without it fails naming the missing plane."""
    c23 = load_conditions("na64mu", 10000)
    assert c23.files["tracker"].endswith("na64mu/tracker/v002.yaml") and "MM7X" in c23.planes
    c22 = load_conditions("na64mu", 9999)
    assert c22.files["tracker"].endswith("na64mu/tracker/v001.yaml") and "MM7X" not in c22.planes
    with pytest.raises(ConfigError, match="no entry for plane 'MM7X'"):
        load_conditions("na64mu", 10000, "na64mu-default")
