"""The ``na64reco limit`` subcommand."""

import json
import math

import pytest

from na64reco import cli
from na64reco.commands import limit
from na64reco.errors import ConfigError

PUBLISHED = ["limit", "--setup", "na64mu", "--mot", "1.98e10", "--background", "0.07",
             "--background-uncertainty", "0.03", "--observed", "0"]


def test_json_output(capsys):
    rc = cli.main(PUBLISHED + ["--efficiency", "0.1", "--masses", "0.001", "0.1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_up"] == pytest.approx(2.303, rel=0.02)
    rows = out["limits"]
    assert [r["mass_gev"] for r in rows] == [0.001, 0.1]
    assert 1e-4 < rows[0]["g90"] < 1e-3 and rows[1]["g90"] > rows[0]["g90"]
    assert rows[0]["g2_band_low"] < rows[0]["g2_band_central"] < rows[0]["g2_band_high"]


def test_table_output(capsys):
    assert cli.main(PUBLISHED + ["--efficiency", "0.5", "--masses", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "g90" in out and "0.01" in out


def test_na64e_eps(capsys):
    rc = cli.main(["limit", "--setup", "na64e", "--eot", "9e11", "--efficiency", "0.5",
                   "--masses", "0.01", "--json"])
    assert rc == 0
    row = json.loads(capsys.readouterr().out)["limits"][0]
    assert "eps90" in row and 1e-6 < row["eps90"] < 1e-3


@pytest.mark.parametrize("extra,msg", [
    (["--mot", "-1", "--efficiency", "0.1", "--masses", "0.01"], "--mot"),
    (["--mot", "1e10", "--efficiency", "1.5", "--masses", "0.01"], "--efficiency"),
    (["--mot", "1e10", "--efficiency", "0", "--masses", "0.01"], "--efficiency"),
    (["--mot", "1e10", "--efficiency", "0.1", "--masses", "0"], "--masses"),
    (["--efficiency", "0.1", "--masses", "0.01"], "--mot"),
    (["--mot", "1e10", "--efficiency", "0.1", "--masses", "0.01", "--background", "inf"], "--background"),
    (["--mot", "1e10", "--efficiency", "0.1", "--masses", "0.01", "--background", "nan"], "--background"),
    (["--mot", "inf", "--efficiency", "0.1", "--masses", "0.01"], "--mot"),
    (["--mot", "1e10", "--efficiency", "nan", "--masses", "0.01"], "--efficiency"),
    (["--mot", "1e10", "--efficiency", "0.1", "--masses", "0.01", "--background", "0.07",
      "--background-uncertainty", "1e6"], "--background-uncertainty"),
    (["--mot", "1e10", "--efficiency", "0.1", "--masses", "0.01", "--background-uncertainty", "0.03"],
     "--background-uncertainty"),
])
def test_bad_input_raises_config_error(extra, msg, capsys):
    args = cli.build_parser().parse_args(["limit", "--setup", "na64mu"] + extra)
    with pytest.raises(ConfigError, match=msg):
        limit.run(args)
    # through the CLI: one line on stderr, exit code 1
    assert cli.main(["limit", "--setup", "na64mu"] + extra) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


def test_plot(tmp_path, capsys):
    path = tmp_path / "limit.png"
    assert cli.main(PUBLISHED + ["--efficiency", "0.05", "--masses", "0.04", "--plot", str(path)]) == 0
    assert path.stat().st_size > 10_000


def test_crossing_mass():
    # log-log interpolation between 10 and 100: fraction ln1.5 / (ln1.5 - ln0.5)
    frac = math.log(1.5) / (math.log(1.5) - math.log(0.5))
    assert limit.crossing_mass([1, 10, 100], [2, 1.5, 0.5], [1, 1, 1]) == pytest.approx(10 * 10**frac)
    assert limit.crossing_mass([1, 10], [2, 3], [1, 1]) is None


def _limits(capsys, *extra):
    assert cli.main(PUBLISHED[:5] + ["--efficiency", "0.1", "--masses", "0.01", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_large_observed_count_gives_the_gaussian_limit(capsys):
    """n_obs = 1e6 over b = 0.07: s_up -> n + z_0.9 sqrt(n) (CLs ~ CLs+b for a large count)."""
    out = _limits(capsys, "--observed", "1000000", "--background", "0.07", "--background-uncertainty", "0.03")
    n = 1e6
    assert out["n_up"] == pytest.approx(n + 1.2816 * math.sqrt(n), abs=5.0)


def test_coupling_limit_scales_as_inverse_sqrt_exposure_up_to_the_float_range(capsys):
    """g90 ~ 1/sqrt(N): an enormous --mot gives a tiny but non-zero limit, not 0."""
    base = _limits(capsys)["limits"][0]["g90"]
    huge = _limits(capsys, "--mot", "1.98e300")["limits"][0]["g90"]
    assert huge > 0
    assert huge == pytest.approx(base / math.sqrt(1e290), rel=1e-9)
