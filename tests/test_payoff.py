"""benchmarks/payoff_2022.py: the simulated 2022-like data set frozen, unblinded and turned into a limit.

The end-to-end test runs the script at tiny scale (2000 MOT plus 300 injected Z'
interactions, so that the box is not empty) through the real ``na64reco`` commands and
checks that the count it reports is the one the unblind command reports (asked again:
the recorded result is printed) and the one in ``unblinded_counts.json``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "payoff_2022.py"


def _module():
    spec = importlib.util.spec_from_file_location("payoff_2022", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("MPLBACKEND", None)
    return env


def test_background_counts_limits_as_u_plus_minus_u():
    mod = _module()
    comps = [{"source": "a", "rate_per_mot": 1e-6, "error_per_mot": 2e-7},
             {"source": "b", "rate_per_mot": 3e-7, "upper_limit": True}]
    b, db, rows = mod.background_at(comps, 1e6)
    assert b == pytest.approx(1.3)
    assert db == pytest.approx(math.hypot(0.2, 0.3))
    assert rows[1]["upper_limit"] and rows[1]["error"] == pytest.approx(0.3)


def test_poisson_p_values_closed_forms():
    """Without an error on b: P(n >= k) and P(n <= k) of a Poisson; an error widens both tails."""
    mod = _module()
    hi, lo = mod.poisson_p_values(0, 0.5, 0.0)
    assert hi == 1.0 and lo == pytest.approx(math.exp(-0.5))
    hi, lo = mod.poisson_p_values(3, 0.1, 0.0)
    assert hi == pytest.approx(1 - math.exp(-0.1) * (1 + 0.1 + 0.005))
    assert hi < mod.CONSISTENCY_P                      # 3 events on 0.1: not consistent
    hi_wide, _ = mod.poisson_p_values(3, 0.1, 0.1)
    assert hi_wide > hi


def test_published_curve_crosses_the_band_edge_at_40_mev():
    """The reconstructed published limit is anchored on the lower (g-2) band edge at 40 MeV and is
    ~4.6e-4, nearly flat, below it (the seeds' statements)."""
    import numpy as np
    from hepunits import MeV

    from na64reco.physics.gminus2 import g_band

    mod = _module()
    g = mod.published_curve(np.array([1.0, 10.0, 40.0]) * MeV)
    assert g[2] == pytest.approx(float(g_band(40 * MeV, 2.0)[0]), rel=1e-6)
    assert 4.3e-4 < g[0] < 4.9e-4 and g[0] < g[1] < g[2]


@pytest.mark.e2e
def test_payoff_end_to_end_at_tiny_scale(tmp_path):
    entry = shutil.which("na64reco", path=str(Path(sys.executable).parent)) or shutil.which("na64reco")
    if entry is None:
        pytest.skip("the na64reco entry point is not installed (pip install -e .)")
    work, plot, summary = tmp_path / "payoff", tmp_path / "exclusion.png", tmp_path / "payoff.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--mot", "2000", "--seed", "7", "--workdir", str(work),
                           "--inject-signal", "0.1:300", "--plot", str(plot), "--summary", str(summary)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    res = json.loads(summary.read_text())

    # the count the unblind command reports, asked again (the recorded result, nothing re-run)
    again = subprocess.run([entry, "unblind", "--ledger", str(work / "frozen" / "na64mu_2022_payoff.json"),
                            "--i-understand-this-opens-the-box", "--registry", str(work / "registry")],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    reported = int(re.search(r"signal box: (\d+) observed events", again.stdout).group(1))
    counts = json.loads((work / "unblinded" / "unblinded_counts.json").read_text())
    assert res["observed"] == reported == counts["result"]["signal_box"]["events"]
    assert res["observed"] > 0                            # the injected signal is in the box
    assert res["data"]["mot"] == 2300 == counts["result"]["n_beam"]
    assert res["blinded_box"] == "blinded"
    assert res["consistent"], res                         # background + injected x efficiency, within Poisson
    assert f"unblinded: {res['observed']} observed" in proc.stdout
    lim = res["limits"]
    assert len(lim["mass_mev"]) == len(lim["published_bkg"]) >= 4
    assert all(a < b for a, b in zip(lim["published_bkg"], lim["data"], strict=True))  # 1.98e10 MOT beats 2060
