import math

import hepunits as u
import pytest

from na64reco.config import load_yaml
from na64reco.errors import ConfigError
from na64reco.units import parse_quantity


@pytest.mark.parametrize(
    ("text", "dim", "expected"),
    [("160 GeV", "energy", 160 * u.GeV), ("38.2 mm", "length", 38.2 * u.mm), ("70 um", "length", 0.07),
     ("1.4 tesla*m", "field_integral", 1.4 * u.tesla * u.m), ("12.5 ns", "time", 12.5),
     ("0.1 mrad", "angle", 1e-4), ("0.05 mm/ns", "length_per_time", 0.05), (0.5, "dimensionless", 0.5)],
)
def test_parse_quantity(text, dim, expected):
    assert math.isclose(parse_quantity(text, dim), expected, rel_tol=1e-12)


def test_field_integral_gives_the_textbook_momentum():
    from na64reco.constants import MOMENTUM_PER_TESLA_METRE

    # p [GeV] = 0.2998 * B L [T m] / theta [rad]
    p = MOMENTUM_PER_TESLA_METRE * parse_quantity("1 T*m", "field_integral") / 1.0
    assert math.isclose(p / u.GeV, 0.299792458, rel_tol=1e-9)


@pytest.mark.parametrize(
    ("text", "dim", "message"),
    [("160", "energy", "not a energy unit"), ("160 mm", "energy", "not a energy unit"),
     ("abc GeV", "energy", "not a quantity"), ("1 furlong", "length", "not a length unit"), (None, "time", "expected")],
)
def test_parse_quantity_errors(text, dim, message):
    with pytest.raises(ValueError, match=message):
        parse_quantity(text, dim)


def test_config_errors_name_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("schema_version: 1\nbeam: {energy: 160 mm, n: -3}\n")
    node = load_yaml(p, schema_version=1)
    with pytest.raises(ConfigError, match=r"c.yaml: key 'beam.energy'.*energy unit"):
        node.quantity("beam.energy", "energy")
    with pytest.raises(ConfigError, match=r"key 'beam.n'.*below the allowed minimum 0"):
        node.integer("beam.n", minimum=0)
    with pytest.raises(ConfigError, match=r"key 'beam.missing': missing \(keys here: energy, n\)"):
        node.raw("beam.missing")


def test_malformed_yaml_and_version(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML \(line"):
        load_yaml(bad)
    old = tmp_path / "old.yaml"
    old.write_text("schema_version: 7\n")
    with pytest.raises(ConfigError, match="'schema_version' is 7; this version of na64reco reads 1"):
        load_yaml(old, schema_version=1)
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_the_fast_loader_reads_every_shipped_yaml_as_pyyamls_own_parser():
    """``load_yaml`` uses libyaml's parser where PyYAML has it: every YAML file of ``calib/``,
    ``selections/`` and the package gives the data PyYAML's pure-Python safe loader gives, and a
    key given twice is still refused."""
    from pathlib import Path

    import yaml

    from na64reco.config import _UniqueKeyLoader

    root = Path(__file__).resolve().parents[1]
    files = sorted(p for d in ("calib", "selections", "na64reco") for p in (root / d).rglob("*.yaml"))
    assert len(files) > 15
    for p in files:
        text = p.read_text()
        assert yaml.load(text, Loader=_UniqueKeyLoader) == yaml.load(text, Loader=yaml.SafeLoader), p  # noqa: S506
    if yaml.__with_libyaml__:
        assert issubclass(_UniqueKeyLoader, yaml.CSafeLoader)
    with pytest.raises(yaml.YAMLError, match="key 'a' is given twice"):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=_UniqueKeyLoader)  # noqa: S506
