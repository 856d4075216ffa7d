"""The Python API as a notebook user calls it: arguments of the wrong kind, a setup, conditions and
events that do not belong together, and slices, chunk sizes and event indices out of range get an
error naming them, never a silently different result or a traceback from inside numpy or awkward."""

from __future__ import annotations

import numpy as np
import pytest

from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError, RawFormatError
from na64reco.geometry import load_setup
from na64reco.io import open_raw
from na64reco.reco.calo import reconstruct_calo
from na64reco.reco.event import reconstruct
from na64reco.reco.tracking.stage import reconstruct_tracks

sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator")

RUN = 1001  # the 2022 period of na64mu


@pytest.fixture(scope="module")
def mu(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "mu.root"
    sim.simulate("na64mu", 400, 5, RUN, path, process="beam", trigger="calibration")
    raw = open_raw(path)
    setup = load_setup("na64mu", run=RUN)
    return path, raw, raw.events(), setup, load_conditions(setup, RUN)


def test_a_setup_loaded_without_the_run_is_refused_for_a_run_of_a_period(mu):
    """(load_setup("na64mu") without run= applied neither the 2022 planes nor its tracking rule, a hit on
    every plane: notebook 03 printed p_in / p_out efficiencies of 0.83 / 0.72 for the true 0.52 / 0.33)"""
    path, _, events, setup, conditions = mu
    base = load_setup("na64mu")
    for call in (reconstruct, reconstruct_tracks, reconstruct_calo):
        for cond in (conditions, load_conditions(base, RUN)):
            with pytest.raises(ConfigError, match=rf"the events of {path}: run 1001 is in period '2022' .* loaded for "
                                                  r"the base description .*load_setup\('na64mu', run=1001\)"):
                call(events, base, cond, str(path))
    later = load_setup("na64mu", run=20000)  # the 2023 period, with its own conditions
    with pytest.raises(ConfigError, match=rf"the events of {path}: run 1001 is in period '2022' .* loaded for "
                                          "period '2023'"):
        reconstruct(events, later, load_conditions(later, 20000), str(path))
    with pytest.raises(ConfigError, match="conditions of setup 'na64mu' .* given with setup 'na64e'"):
        reconstruct(events, load_setup("na64e"), conditions)


def test_arguments_of_the_wrong_kind_are_named(mu):
    _, _, events, setup, conditions = mu
    with pytest.raises(TypeError, match=r"events is a Record; .* pass events\[i:i \+ 1\]"):
        reconstruct(events[0], setup, conditions)
    with pytest.raises(TypeError, match="setup is a str; expected a Setup"):
        reconstruct(events, "na64mu", conditions)
    with pytest.raises(TypeError, match="conditions is a NoneType; expected RunConditions"):
        reconstruct(events, setup, None)
    with pytest.raises(TypeError, match="load_conditions.*setup is a int"):
        load_conditions(3, RUN)


def test_one_stage_by_name(mu):
    """(stages="calo" said "unknown stage 'c'")"""
    _, _, events, setup, conditions = mu
    one = reconstruct(events[:50], setup, conditions, stages="calo")
    both = reconstruct(events[:50], setup, conditions)
    assert "ecal_energy" in one.fields and "p_in" not in one.fields
    assert np.array_equal(np.asarray(one.ecal_energy), np.asarray(both.ecal_energy), equal_nan=True)


def test_entry_ranges_are_python_slices(mu):
    """(events(-10) was the whole file, events(-10, -5) empty, events(50, 10) a "not made of whole
    blocks" error)"""
    _, raw, events, _, _ = mu
    n = len(events)
    numbers = np.asarray(events.event)
    assert np.array_equal(np.asarray(raw.events(-10).event), numbers[-10:])
    assert np.array_equal(np.asarray(raw.events(-10, -5).event), numbers[-10:-5])
    assert len(raw.events(50, 10)) == 0 and len(raw.events(50, 50)) == 0
    assert np.array_equal(raw.truth(-3)["event"], numbers[-3:])
    assert len(raw.events(-10 * n)) == n


@pytest.mark.parametrize("size", [0, -5, 500.0, True])
def test_iterate_reco_refuses_a_chunk_size_that_is_not_a_positive_integer(mu, size):
    """(-5 gave no chunk and no error, 0 "range() arg 3 must not be zero", 500.0 a bare TypeError)"""
    from na64reco.export import iterate_reco

    with pytest.raises(ConfigError, match=rf"iterate_reco\(\): chunk_size must be an integer >= 1, got {size!r}"):
        next(iterate_reco(mu[0], chunk_size=size))


@pytest.mark.parametrize("index", ["n", "-n-1", 1.0])
def test_draw_event_refuses_an_index_outside_the_events(mu, index):
    """(-1 of 50 events was awkward's "RecordArray 'length' must be ... not -49", 999 an IndexError from the
    track stage)"""
    from na64reco.display import draw_event

    path, _, events, setup, conditions = mu
    n = len(events)
    index = {"n": n, "-n-1": -n - 1}.get(index, index)
    with pytest.raises(IndexError, match=rf"event index {index!r} is not one of the {n} events of {path}"):
        draw_event(events, index, setup, conditions, source=str(path))


def test_draw_event_counts_a_negative_index_from_the_end(mu, tmp_path):
    from na64reco.display import draw_event

    path, _, events, setup, conditions = mu
    fig = draw_event(events, -1, setup, conditions, source=str(path), output=tmp_path / "last.png")
    assert (tmp_path / "last.png").stat().st_size > 10_000 and fig is not None


def test_read_reco_names_the_format_it_reads(mu, tmp_path):
    from na64reco.export import read_reco, reconstruct_file

    out = tmp_path / "mu.root"
    reconstruct_file(mu[0], out)
    with pytest.raises(RawFormatError, match=r"read_reco reads the Parquet output .* uproot.open\(path\)\['reco'\]"):
        read_reco(out)


def test_a_setup_loaded_by_a_relative_path_survives_a_change_of_directory(mu, tmp_path, monkeypatch):
    """(the period check read the setup file again by its relative path: "cs/my.yaml: file not found" after
    os.chdir; its message suggested load_setup('na64mu', ...) for a setup loaded from a file)"""
    import shutil

    from na64reco.resources import calib_dir

    path, _, events, _, conditions = mu
    (tmp_path / "cs").mkdir()
    shutil.copy(calib_dir() / "setups" / "na64mu.yaml", tmp_path / "cs" / "my.yaml")
    monkeypatch.chdir(tmp_path)
    mine = load_setup("cs/my.yaml", run=RUN)
    monkeypatch.chdir(tmp_path / "cs")
    assert len(reconstruct(events[:20], mine, conditions, str(path))) == 20
    base = load_setup(str(tmp_path / "cs" / "my.yaml"))
    with pytest.raises(ConfigError, match=rf"load_setup\('{tmp_path / 'cs' / 'my.yaml'}', run=1001\)"):
        reconstruct(events[:20], base, conditions, str(path))


@pytest.mark.parametrize("bound", [2.7, True, "3"])
def test_entry_bounds_that_are_not_integers_are_named(mu, bound):
    """(events(2.7, 5) gave Python's bare slice TypeError; events(True) was accepted as 1)"""
    _, raw, _, _, _ = mu
    with pytest.raises(TypeError, match=rf"entry_start of tree 'events' must be an integer or None, got {bound!r}"):
        raw.events(bound, 5)
