"""Blinding does not follow a user-chosen reconstruction out of the protected region.

The protected variables (NA64mu p_out, NA64e E_ECAL) are reconstructed quantities.  A
setup or calibration chosen by the user (``NA64RECO_CALIB``, ``--calib-tag``, a setup
object given to the event display) with a larger MS2 field integral moves box events above
80 GeV; they must stay hidden, because the installed package's reference reconstruction
puts them in the box (``na64reco.selection.blinding.reference_protected``).  Also: a
runner record (``note_checked_files``) cannot relabel a data file as simulation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest

from na64reco.conditions import load_conditions
from na64reco.errors import BlindingError
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw, release_data_events
from na64reco.reco.event import reconstruct
from na64reco.resources import calib_dir
from na64reco.selection.blinding import protected_mask

NOMINAL_MS2 = "field_integral: 1.4 tesla*m    # assumed ~1.4 T m (NA64.md)"


@pytest.fixture(scope="module")
def box_data(tmp_path_factory):
    """A data-like file (no truth) with events in the box at every p_out: a simulated signal run
    (m = 0.1 GeV), 2022-like.  (The small mixture of the conftest has a box event only by the luck of
    its random numbers.)"""
    from na64reco.sim.generate import simulate

    path = tmp_path_factory.mktemp("box_data") / "data.root"
    simulate("na64mu", 1500, seed=13, run=1002, output=path, process="signal", mass=100.0, truth=False)  # MeV
    return path


@pytest.fixture(scope="module")
def moved(box_data, tmp_path_factory):
    """A calibration directory whose 2022 MS2 field integral is 3x nominal, and the data
    file's events hidden by the nominal reconstruction but shown by the moved one."""
    root = tmp_path_factory.mktemp("calib") / "calib"
    shutil.copytree(calib_dir(), root)
    setup_file = root / "setups" / "na64mu.yaml"
    text = setup_file.read_text()
    assert NOMINAL_MS2 in text
    setup_file.write_text(text.replace(NOMINAL_MS2, "field_integral: 4.2 tesla*m", 1))
    with open_raw(box_data) as raw:
        events = release_data_events(raw.events())
        run = raw.run
    nominal = load_setup("na64mu", run=run)
    reco = reconstruct(events, nominal, load_conditions(nominal, run))
    mine = load_setup(str(setup_file), run=run)
    reco_moved = reconstruct(events, mine, load_conditions(mine, run, root=root))
    hidden = protected_mask(reco, "na64mu")
    hidden_moved = protected_mask(reco_moved, "na64mu")
    leaked = hidden & ~hidden_moved
    assert leaked.any()  # the moved reconstruction does take box events out, or nothing is tested
    assert (np.asarray(reco_moved.p_out)[leaked] >= 80).all()
    return {"root": root, "setup_file": setup_file, "events": events, "reco": reco, "hidden": hidden,
            "leaked": leaked, "hidden_moved": hidden_moved, "reco_moved": reco_moved, "mine": mine, "run": run}


def _cli(args, env_calib):
    exe = Path(sys.executable).with_name("na64reco")
    env = {**os.environ, "NA64RECO_CALIB": str(env_calib)}
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_reco_export_with_a_moved_setup_withholds_the_reference_box(box_data, moved, tmp_path):
    out = tmp_path / "d.parquet"
    printed = _cli(["reco", str(box_data), "--output", str(out), "--quiet"], moved["root"])
    table = pd.read_parquet(out)
    reco, hidden = moved["reco"], moved["hidden"]
    assert not set(table["event"]) & set(np.asarray(reco.event)[hidden])  # nothing the reference hides
    assert set(table["event"]) == set(np.asarray(reco.event)[~(hidden | moved["hidden_moved"])])
    assert f"{np.count_nonzero(hidden | moved['hidden_moved'])} events withheld" in printed


@pytest.fixture(scope="module")
def veto_tag(tmp_path_factory):
    """A calibration directory with a tag ``veto-x10`` whose VETO gains are 10x nominal: every
    box event would look like a visible control (the VETO fired, >= 25 MeV)."""
    import yaml

    root = tmp_path_factory.mktemp("calib_tag") / "calib"
    shutil.copytree(calib_dir(), root)
    folder = root / "conditions" / "na64mu" / "calorimeter"
    body = yaml.safe_load((folder / "v001.yaml").read_text())
    body["version"] = 2
    body["detectors"]["VETO"]["gain_mev_per_adc"] = [10 * g for g in body["detectors"]["VETO"]["gain_mev_per_adc"]]
    (folder / "v002.yaml").write_text(yaml.safe_dump(body))
    tag = yaml.safe_load((root / "tags" / "na64mu-periods-v1.yaml").read_text())
    tag.update(tag="veto-x10", payloads={**tag["payloads"], "calorimeter": ["na64mu/calorimeter/v002.yaml"]})
    (root / "tags" / "veto-x10.yaml").write_text(yaml.safe_dump(tag))
    return root


def test_reco_export_with_a_tag_faking_the_veto_control_withholds_the_reference_box(box_data, moved,
                                                                                      veto_tag, tmp_path):
    out = tmp_path / "d.parquet"
    _cli(["reco", str(box_data), "--output", str(out), "--quiet", "--calib-tag", "veto-x10"],
         veto_tag)
    with open_raw(box_data) as raw:
        setup = load_setup(str(veto_tag / "setups" / "na64mu.yaml"), run=raw.run)
        faked = reconstruct(moved["events"], setup, load_conditions(setup, raw.run, "veto-x10", root=veto_tag))
    reco, hidden = moved["reco"], moved["hidden"]
    assert (hidden & ~protected_mask(faked, "na64mu")).any()  # the tag does turn box events into controls
    table = pd.read_parquet(out)
    assert table["veto_energy"].min() > 0.025  # the tag was used
    assert set(table["event"]) == set(np.asarray(reco.event)[~(hidden | protected_mask(faked, "na64mu"))])


def test_run_with_a_moved_setup_keeps_the_reference_box_out_of_the_cutflow(box_data, moved, tmp_path):
    outdir = tmp_path / "out"
    _cli(["run", "--processor", "na64mu_invisible", "--output", str(outdir), "--no-plots", "--no-progress",
          str(box_data)], moved["root"])
    summary = json.loads((outdir / "cutflow.json").read_text())["data"]
    initial = summary["cutflow"][0]["events"]
    # what the moved reconstruction alone hides, and the union with the reference (computed here)
    reco_moved = moved["reco_moved"]
    from na64reco.selection import load_selection
    from na64reco.selection.blinding import blind_mask
    from na64reco.selection.cuts import cut_masks

    sel = load_selection("na64mu_invisible")
    own = blind_mask(reco_moved, cut_masks(reco_moved, sel), sel)
    assert initial == len(reco_moved) - np.count_nonzero(own | moved["hidden"])
    assert initial < len(reco_moved) - np.count_nonzero(own)  # the leaked events are not counted


def test_event_display_refuses_a_box_event_drawn_with_a_moved_setup(moved):
    from na64reco.display import draw_event

    i = int(np.flatnonzero(moved["leaked"])[0])
    mine = moved["mine"]
    cond = load_conditions(mine, moved["run"], root=moved["root"])
    with pytest.raises(BlindingError, match="not provably outside the protected region"):
        draw_event(moved["events"][i:i + 1], 0, mine, cond, data=True)


def test_event_display_message_does_not_tell_why_an_event_is_hidden(box_data, moved):
    """A missing p_out and a p_out inside the box give the same refusal (which one it is
    would count the measured box events by trying every event)."""
    from na64reco.display import draw_event

    p_out = np.asarray(moved["reco"].p_out)
    hidden = moved["hidden"]
    nan_i = int(np.flatnonzero(hidden & np.isnan(p_out))[0])
    box_i = int(np.flatnonzero(hidden & (p_out < 80))[0])
    messages = []
    with open_raw(box_data) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
        for i in (nan_i, box_i):
            with pytest.raises(BlindingError) as err:
                draw_event(raw.events(i, i + 1), 0, setup, conds)
            messages.append(str(err.value).split(": ", 1)[1])
    assert messages[0] == messages[1]


def test_a_runner_record_cannot_relabel_data_as_simulation(small_na64mu_files):
    """``note_checked_files`` with ``has_truth: True`` for a data file, and a reco hook that
    adds a truth weight (allowed for simulation): the file itself says data, so blinded."""
    import awkward as ak
    from coffea.nanoevents import BaseSchema, NanoEventsFactory

    import processors.base as base
    from na64reco.io.location import file_version
    from processors.na64mu_invisible import Processor

    path = str(small_na64mu_files["data"])

    def with_weight(events, setup, conditions, source=""):
        reco = reconstruct(release_data_events(events), setup, conditions)
        return ak.with_field(reco, np.ones(len(reco)), "truth_weight")

    with open_raw(path) as raw:
        rec = {"version": file_version(path), "setup": raw.setup, "run": raw.run, "has_truth": True,
               "blocks": raw.blocks("events")}
    base._file_info.cache_clear()
    base.note_checked_files({path: rec})
    try:
        events = NanoEventsFactory.from_root({path: "events"}, schemaclass=BaseSchema, mode="eager",
                                             metadata={"filename": path, "dataset": "d"}).events()
        with pytest.raises(BlindingError, match="reco= hook is refused for data"):
            Processor(reco=with_weight).process(events)
    finally:
        base.close_raw_files()
        base._file_info.cache_clear()


def test_assembling_the_flat_events_of_a_data_file_keeps_the_data_mark(small_na64mu_files):
    """``assemble_events(raw.read_verified("events"))`` (or ``raw.arrays``) of a data file
    gave unmarked events that the public reconstruction accepted: every event, box included."""
    from na64reco.io.raw import assemble_events, is_data_events

    for kind in ("data", "mc"):
        with open_raw(small_na64mu_files[kind]) as raw:
            setup = load_setup(raw.setup, run=raw.run)
            conds = load_conditions(setup, raw.run)
            for flat in (raw.read_verified("events"), raw.read_verified("events", 2, 7), raw.arrays("events", 0, 5)):
                events = assemble_events(flat, str(raw.path))
                assert is_data_events(events) == (kind == "data")
                if kind == "data":
                    with pytest.raises(BlindingError, match="na64reco.export.iterate_reco"):
                        reconstruct(events, setup, conds)
                else:
                    assert len(reconstruct(events, setup, conds)) == len(flat)


# -- the reference reconstruction runs again only the stages whose inputs differ ----------------

def _payload_tag(root, payload: str, tag: str, edit) -> None:
    """A new version of ``payload`` in the calibration directory ``root`` made by ``edit(body)``
    and a tag ``tag`` that uses it (the rest as the package's default tag)."""
    import yaml

    folder = root / "conditions" / "na64mu" / payload
    latest = max(folder.glob("v*.yaml"))
    body = yaml.safe_load((folder / "v001.yaml").read_text())
    body["version"] = int(latest.stem[1:]) + 1
    edit(body)
    (folder / f"v{body['version']:03d}.yaml").write_text(yaml.safe_dump(body))
    tags = yaml.safe_load((root / "tags" / "na64mu-periods-v1.yaml").read_text())
    files = [f"na64mu/{payload}/v{body['version']:03d}.yaml"]
    tags.update(tag=tag, payloads={**tags["payloads"], payload: files})
    (root / "tags" / f"{tag}.yaml").write_text(yaml.safe_dump(tags))


@pytest.fixture(scope="module")
def payload_tags(tmp_path_factory):
    """A calibration copy with two tags besides the default: ``ms2-x3`` (tracker payload: the
    MS2 field integral measured 3x nominal, which moves box events above 80 GeV) and
    ``veto-x10`` (calorimeter payload: VETO gains 10x, which makes box events look like
    VETO-fired controls)."""
    root = tmp_path_factory.mktemp("calib_payloads") / "calib"
    shutil.copytree(calib_dir(), root)

    def ms2(body):
        body["schema_version"] = 3
        body["magnets"] = {"MS2": {"field_integral_tm": 4.2}}

    def veto(body):
        body["detectors"]["VETO"]["gain_mev_per_adc"] = [10 * g for g in body["detectors"]["VETO"]["gain_mev_per_adc"]]

    _payload_tag(root, "tracker", "ms2-x3", ms2)
    _payload_tag(root, "calorimeter", "veto-x10", veto)
    return root


class _Spy:
    """``reconstruct`` recording the ``stages`` of each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, events, setup, conditions, stages=None):
        self.calls.append(stages)
        return reconstruct(events, setup, conditions, stages=stages)


@pytest.mark.parametrize(("tag", "stage"), [("ms2-x3", "tracking"), ("veto-x10", "calo")])
def test_reference_with_one_payload_changed_redoes_only_its_stage(moved, payload_tags, tag, stage):
    """Only the stage reading the changed payload runs again, and the protected events are the
    full reference reconstruction's, bit for bit; the tag does hide fewer events by itself
    (so the reference matters here)."""
    from na64reco.selection.blinding import reference_protected

    setup = load_setup("na64mu", run=moved["run"])
    conds = load_conditions(setup, moved["run"], tag, root=payload_tags)
    mine = reconstruct(moved["events"], setup, conds)
    assert (moved["hidden"] & ~protected_mask(mine, "na64mu")).any()  # the tag opens box events by itself
    full, partial = _Spy(), _Spy()
    expected = reference_protected(moved["events"], setup, conds, full)
    got = reference_protected(moved["events"], setup, conds, partial, reco=mine)
    assert full.calls == [None] and partial.calls == [(stage,)]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, moved["hidden"])  # the reference is the package's reconstruction


def test_reference_with_a_moved_setup_redoes_every_stage(moved):
    from na64reco.selection.blinding import reference_protected

    mine = moved["mine"]
    cond = load_conditions(mine, moved["run"], root=moved["root"])
    spy = _Spy()
    got = reference_protected(moved["events"], mine, cond, spy, reco=moved["reco_moved"])
    assert spy.calls == [None]
    np.testing.assert_array_equal(got, moved["hidden"])


def test_reference_refuses_a_reco_of_other_events(moved, payload_tags):
    from na64reco.selection.blinding import reference_protected

    setup = load_setup("na64mu", run=moved["run"])
    conds = load_conditions(setup, moved["run"], "veto-x10", root=payload_tags)
    events = moved["events"]
    with pytest.raises(ValueError, match="reco"):
        reference_protected(events[1:], setup, conds, _Spy(), reco=reconstruct(events[:-1], setup, conds))


def test_each_stage_reads_only_its_own_payload(moved, monkeypatch):
    """The stages run with :meth:`RunConditions.scoped` views: a stage reading the other
    payload's conditions fails loudly, and the stages' records put together are the whole."""
    import na64reco.reco.event as event
    from na64reco.conditions import WithheldConditions

    setup = load_setup("na64mu", run=moved["run"])
    conds = load_conditions(setup, moved["run"])
    events = moved["events"][:50]
    cal, trk = conds.scoped("calorimeter"), conds.scoped("tracker")
    assert cal.calo is conds.calo and trk.planes is conds.planes and trk.field_integrals is conds.field_integrals
    assert set(cal.files) == {"calorimeter"} and set(trk.files) == {"tracker"}
    for withheld in (lambda: cal.planes["MM1X"], lambda: cal.magnet(setup, "MS2"), lambda: "ECAL" in trk.calo,
                     lambda: trk.calo_table(setup, "gain"), lambda: list(cal.field_integrals)):
        with pytest.raises(WithheldConditions, match="may read only its own payload"):
            withheld()
    whole = reconstruct(events, setup, conds)
    parts = {**{f: reconstruct(events, setup, conds, stages=("calo",))[f] for f in ("event", "veto_energy")},
             **{f: reconstruct(events, setup, conds, stages=("tracking",))[f] for f in ("p_out", "mu_out")}}
    for name, value in parts.items():
        assert repr(ak.to_list(value)) == repr(ak.to_list(whole[name])), name  # NaN and None alike
    assert "p_out" not in reconstruct(events, setup, conds, stages=("calo",)).fields

    calo_function = event.STAGES["calo"][0]

    def nosy(ev, s, c, source=""):
        c.planes  # noqa: B018 - a look is allowed, a read is not
        return calo_function(ev, s, c, source=source) | {"peek": np.full(len(ev), c.planes["MM1X"].alignment)}

    monkeypatch.setitem(event.STAGES, "calo", (nosy, "calorimeter"))
    with pytest.raises(WithheldConditions, match="the calorimeter stage read tracker conditions"):
        reconstruct(events, setup, conds)


def test_uses_reference_inputs_compares_the_inputs_file_by_file(moved):
    """The package's setup and default tag are the reference; the moved setup is not."""
    from na64reco.selection.blinding import uses_reference_inputs

    run = moved["run"]
    nominal = load_setup("na64mu", run=run)
    assert uses_reference_inputs(nominal, load_conditions(nominal, run))
    assert not uses_reference_inputs(moved["mine"], load_conditions(moved["mine"], run, root=moved["root"]))


def test_a_data_chunk_with_the_reference_inputs_is_assembled_once(box_data, moved, monkeypatch):
    """The processor's reference check of a data chunk reconstructed with the reference inputs does not
    assemble the chunk's events again (nothing is reconstructed again).  With a moved setup it must:
    ``test_run_with_a_moved_setup_keeps_the_reference_box_out_of_the_cutflow`` runs that case in a
    process of its own (the processors cache setups and conditions per process)."""
    import processors.base as base
    from na64reco.runner import RunOptions, run_files

    calls = []
    real = base.assemble_events

    def counted(events, source):
        calls.append(len(events))
        return real(events, source)

    monkeypatch.setattr(base, "assemble_events", counted)
    run_files({"data": [str(box_data)]}, RunOptions("na64mu_invisible", executor="iterative"))
    assert calls and sum(calls) == len(moved["events"])  # each event assembled once: for its reconstruction
