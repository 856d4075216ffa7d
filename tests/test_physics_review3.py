"""Third physics review: printed and documented numbers against what the code computes.

* ``na64reco limit --plot`` said "g-2 band excluded above 39.8 MeV" for the published 2022
  inputs (efficiency 0.042), while the same command's table read "no" at 0.5 and 1 GeV: the
  limit rises above the band's lower edge again once Z' -> mu mu opens (Br(invisible) -> 1/2
  above 2 m_mu) and the yield falls as 1/m^2.  The message now gives the excluded interval.
* docs/cutflows.md quoted 0.85 signal events (m = 0.1 GeV, default coupling, 1.98e10 MOT) under
  its own table's 0.0876: the figure of an older efficiency.
"""

import math
import re
from pathlib import Path

import hepunits as u
import numpy as np
import pytest

from na64reco import cli, constants
from na64reco.commands import limit
from na64reco.physics.yields import expected_signal

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_excluded_range_closed_interval():
    masses = [1.0, 10.0, 100.0, 1000.0]
    g_low = [1.0, 1.0, 1.0, 1.0]
    first, last = limit.excluded_range(masses, [2.0, 0.5, 0.5, 2.0], g_low)
    assert first == pytest.approx(limit.crossing_mass(masses, [2.0, 0.5, 0.5, 2.0], g_low))
    # log-log interpolation between 100 and 1000: ln(0.5) -> ln(2) crosses 0 half-way
    assert last == pytest.approx(100 * 10**0.5)
    assert limit.excluded_range(masses, [2.0, 0.5, 0.5, 0.5], g_low) == (pytest.approx(first), None)
    assert limit.excluded_range(masses, [2.0, 3.0, 3.0, 3.0], g_low) is None


def test_limit_message_agrees_with_its_table(tmp_path, capsys):
    """Published 2022 inputs: excluded from ~40 MeV, and no longer at 0.5 and 1 GeV."""
    plot = tmp_path / "limit.png"
    rc = cli.main(["limit", "--setup", "na64mu", "--mot", "1.98e10", "--efficiency", "0.042",
                   "--background", "0.07", "--background-uncertainty", "0.03", "--observed", "0",
                   "--masses", "0.04", "0.1", "0.5", "1.0", "--plot", str(plot)])
    assert rc == 0
    out = capsys.readouterr().out
    rows = {float(line.split()[0]): line.split()[-1] for line in out.splitlines()
            if line.strip() and not line.startswith("#") and not line.lstrip().startswith("mass")}
    assert rows == {0.04: "yes", 0.1: "yes", 0.5: "no", 1.0: "no"}
    m = re.search(r"g-2 band excluded from ([0-9.]+) to ([0-9.]+) MeV", out)
    assert m, out
    first, last = float(m.group(1)), float(m.group(2))
    assert 35 < first < 45  # the published ~40 MeV, by construction of the 0.042
    assert 2 * constants.MUON_MASS < last < 500  # closes where Z' -> mu mu opens


def test_cutflows_doc_signal_count_matches_yield():
    """docs/cutflows.md: the m = 0.1 GeV signal bullet equals its table (yield x box efficiency)."""
    text = (DOCS / "cutflows.md").read_text()
    table = re.search(r"\| signal_box \| [^|]+ \| ([0-9.]+) \|", text)
    bullet = re.search(r"\*\*signal \(m = 0\.1 GeV\)\*\*: ([0-9.]+) events", text)
    assert table and bullet
    efficiency_in_box = float(table.group(1))
    emitted = expected_signal(constants.NA64MU_2022_MOT, 100 * u.MeV, 1e-4)
    assert emitted == pytest.approx(2.52, rel=0.01)
    assert float(bullet.group(1)) == pytest.approx(emitted * efficiency_in_box, rel=0.05)
    expected_row = re.search(r"\| expected in box for 1\.98e\+10 MOT \| [^|]+ \| ([0-9.]+) \+-", text)
    assert expected_row
    assert math.isclose(emitted * efficiency_in_box, float(expected_row.group(1)), rel_tol=0.02)


def test_excluded_range_and_its_words():
    """One wording for the plot, the command and notebook 06; a band excluded from the first mass on
    is reported from there (not from a later crossing)."""
    from na64reco.commands.limit import excluded_range, excluded_text

    m = np.array([1.0, 10.0, 100.0, 1000.0])
    low = np.ones(4)
    assert excluded_text(excluded_range(m, np.array([2.0, 0.5, 0.5, 2.0]), low), 1.0).startswith("from ")
    assert " to " in excluded_text(excluded_range(m, np.array([2.0, 0.5, 0.5, 2.0]), low), 1.0)
    assert excluded_range(m, np.array([0.5, 2.0, 0.5, 0.5]), low)[0] == 1.0  # excluded at the first mass
    assert excluded_text(excluded_range(m, np.array([0.5, 0.5, 0.5, 0.5]), low), 1.0) == "over the whole range shown"
    assert excluded_text(excluded_range(m, np.array([2.0, 0.5, 0.5, 0.5]), low), 1.0).startswith("above ")
    assert excluded_text(None, 1.0) == "nowhere in the range shown"
