"""The protected region of data reaches no exporter or viewer before the unblinding.

The attacks of the issue, each reproduced: ``na64reco reco`` of a data file then the
shipped selection applied by hand; the public reconstruction functions on data events;
the event display of a data event in the box, also with its ``data`` flag left out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from na64reco.conditions import load_conditions
from na64reco.errors import BlindingError
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw, release_data_events
from na64reco.reco.event import reconstruct
from na64reco.selection.blinding import protected_mask


@pytest.fixture(scope="module")
def truth_of_data(small_na64mu_files):
    """The reconstruction of the data file with nothing withheld (what must not leak)."""
    with open_raw(small_na64mu_files["data"]) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        reco = reconstruct(release_data_events(raw.events()), setup, load_conditions(setup, raw.run))
    hidden = protected_mask(reco, "na64mu")
    assert hidden.sum() > 0  # the file has protected events, or the tests below prove nothing
    return reco, hidden


def test_reco_output_of_data_withholds_the_protected_region(small_na64mu_files, truth_of_data, tmp_path):
    reco, hidden = truth_of_data
    out = tmp_path / "d.parquet"
    exe = Path(sys.executable).with_name("na64reco")
    proc = subprocess.run([str(exe), "reco", str(small_na64mu_files["data"]), "--output", str(out), "--quiet"],
                          capture_output=True, text=True, env=os.environ, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{hidden.sum()} events withheld" in proc.stdout
    table = pd.read_parquet(out)
    assert len(table) == len(reco) - hidden.sum()
    assert not (table["p_out"] < 80).any() or (table.loc[table["p_out"] < 80, "veto_energy"] >= 0.025).all()
    # no measured p_out: not provably outside, withheld unless in the visible control (the
    # 2022 tracking requires every plane, so many events have no p_out)
    assert (table["p_out"].notna() | (table["veto_energy"] >= 0.025)).all()
    shown = set(zip(table["run"], table["event"], strict=True))
    assert not shown & set(zip(np.asarray(reco.run)[hidden], np.asarray(reco.event)[hidden], strict=True))
    from na64reco.export import read_reco

    _, meta = read_reco(out)
    assert meta["blinding"]["withheld_events"] == hidden.sum()
    assert "p_out < 80 GeV" in meta["blinding"]["withheld_region"]


def test_mc_reco_output_keeps_every_event(small_na64mu_files, tmp_path):
    from na64reco.export import reconstruct_file

    summary = reconstruct_file(small_na64mu_files["mc"], tmp_path / "mc.parquet")
    assert summary["events"] == open_raw(small_na64mu_files["mc"]).n_events
    assert summary["blinding"] is None


@pytest.mark.parametrize("stage", ["reconstruct", "reconstruct_calo", "reconstruct_tracks", "event_display"])
def test_public_reconstruction_refuses_data_events(small_na64mu_files, stage):
    from na64reco.reco.calo import reconstruct_calo
    from na64reco.reco.tracking.stage import event_display, reconstruct_tracks

    with open_raw(small_na64mu_files["data"]) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
        events = raw.events(0, 50)
    call = {"reconstruct": lambda ev: reconstruct(ev, setup, conds),
            "reconstruct_calo": lambda ev: reconstruct_calo(ev, setup, conds),
            "reconstruct_tracks": lambda ev: reconstruct_tracks(ev, setup, conds),
            "event_display": lambda ev: event_display(ev, 0, setup, conds)}[stage]
    for ev in (events, events[5:6]):  # a slice of data events is data too
        with pytest.raises(BlindingError, match="na64reco.export.iterate_reco"):
            call(ev)


def test_event_display_of_a_protected_data_event_is_refused_without_its_data_flag(small_na64mu_files,
                                                                                     truth_of_data):
    """``draw_event(..., data=False)`` (the hook argument left out) still refuses: the events
    say they are data."""
    from na64reco.display import draw_event

    reco, hidden = truth_of_data
    i = int(np.flatnonzero(hidden)[0])
    j = int(np.flatnonzero(~hidden)[0])
    with open_raw(small_na64mu_files["data"]) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
        with pytest.raises(BlindingError, match="protected region"):
            draw_event(raw.events(i, i + 1), 0, setup, conds, data=False)
        fig = draw_event(raw.events(j, j + 1), 0, setup, conds)  # outside: shown
    assert fig is not None
