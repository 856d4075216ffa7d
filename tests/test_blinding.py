"""Blinding: data events passing every cut inside the signal box never reach an output.

The expected box content is computed independently from the synthetic reco (numpy),
and every output of the processor (histograms, N-1, cut-flow, regions, text, files)
is checked not to contain those events, whatever the cut order, entry point or option.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import yaml
from coffea.nanoevents import BaseSchema, NanoEventsFactory
from test_processors_synthetic import synthetic_processor, synthetic_reco, write_raw

from na64reco.errors import BlindingError, ConfigError, NA64Error
from na64reco.selection import blinding as blinding_mod
from na64reco.selection import load_selection
from na64reco.selection.blinding import UnblindingToken
from na64reco.selection.cuts import BLINDED, BOX, cut_masks
from processors.na64mu_invisible import Processor

SynthMu = synthetic_processor(Processor)  # the synthetic reco for data too (a test subclass)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("blind")
    return {"data": str(write_raw(d / "data.root", n_events=2000, truth=False, run=2)),
            "mc": str(write_raw(d / "mc.root", n_events=2000, truth=True, run=2)), "dir": d}


def _events(path, start=0, stop=None):
    return NanoEventsFactory.from_root({path: "events"}, schemaclass=BaseSchema, mode="eager",
                                       entry_start=start, entry_stop=stop,
                                       metadata={"filename": path, "dataset": "d",
                                                 "entrystart": start, "entrystop": stop}).events()


def _boxed(path, selection):
    """Reference, from numpy: (hidden, allcuts, p_out, candidates).

    hidden: data events blinding must remove (p_out < 80 GeV or NaN, unless the VETO
    clearly fired, >= 25 MeV: selections/blinding.yaml); candidates: events passing every
    cut inside the box (what a simulation box count shows).
    """
    import uproot

    with uproot.open(path) as f:
        ev = f["events"].arrays(["run", "spill", "event"], library="np")
    reco = synthetic_reco(ev, "na64mu", None)
    allcuts = np.logical_and.reduce(list(cut_masks(reco, selection).values()))
    p_out = np.asarray(reco["p_out"])
    in_box = ~(p_out >= 80)
    hidden = in_box & ~(np.asarray(reco["veto_energy"]) >= 0.025)
    return hidden, allcuts, p_out, allcuts & in_box


def _assert_blind(out, n_box, n_total):
    cf = out["cutflow"]
    assert cf.blinded
    assert cf.rows()[-1]["events"] == BLINDED and cf.nminusone_rows()[-1]["events"] == BLINDED
    assert out["regions"][BOX].to_dict()["events"] == BLINDED
    assert cf.n[0] == n_total - n_box          # the boxed events are gone from everything
    sel_p = out["hists"]["p_out"][{"stage": "selected"}]
    assert sel_p[:80j].values().sum() == 0     # nothing below 80 GeV after all cuts
    nm1 = out["nminus1"][BOX]                  # N-1 of the box variable stays blind
    assert nm1[:80j].values().sum() == 0
    for name, h in out["hists"].items():       # every histogram holds the blinded sample only
        if "_vs_" in name or name in ("hcal_module_energy",):
            continue
        assert h[{"stage": "all"}].values(flow=True).sum() == pytest.approx(n_total - n_box)


def test_direct_process_call_on_a_data_chunk_is_blinded(files):
    proc = SynthMu()
    hidden, allcuts, _, candidates = _boxed(files["data"], proc.selection)
    assert candidates.sum() > 10 and (allcuts & ~hidden).sum() > 10   # both populations exist
    out = proc.process(_events(files["data"]))["d"]
    _assert_blind(out, hidden.sum(), 2000)
    assert out["cutflow"].n[-2] == (allcuts & ~hidden).sum()
    # the candidates hide among box events failing other cuts: subtraction does not count them
    assert hidden.sum() - candidates.sum() > 10
    assert 2000 - out["cutflow"].n[0] == hidden.sum() != candidates.sum()


def test_chunks_without_file_metadata_count_as_data(files):
    proc = SynthMu()
    ev = NanoEventsFactory.from_root({files["mc"]: "events"}, schemaclass=BaseSchema,
                                     mode="eager").events()
    ev.metadata.clear()
    hidden, _, _, _ = _boxed(files["mc"], proc.selection)
    out = proc.process(ev)["default"]
    _assert_blind(out, hidden.sum(), 2000)


def test_simulation_is_not_blinded(files):
    proc = SynthMu()
    _, _, _, candidates = _boxed(files["mc"], proc.selection)
    out = proc.process(_events(files["mc"]))["d"]
    assert not out["cutflow"].blinded
    assert out["regions"][BOX].n == candidates.sum() > 0
    assert out["cutflow"].n[-1] == candidates.sum()


def _reordered(files, tmp_name, transform):
    src = load_selection("na64mu_invisible").source
    data = yaml.safe_load(open(src))
    data = transform(data)
    p = files["dir"] / tmp_name
    p.write_text(yaml.safe_dump(data))
    return str(p)


@pytest.mark.parametrize("transform", [
    lambda d: {**d, "cuts": d["cuts"][::-1]},                                      # reversed order
    lambda d: {**d, "cuts": [{"name": "box_as_cut", "type": "range", "variable": "p_out",
                              "max": "80 GeV"}] + d["cuts"]},                      # box as a cut
])
def test_cut_order_and_sneaky_regions_cannot_open_the_box(files, transform):
    path = _reordered(files, "reordered.yaml", transform)
    proc = SynthMu(path)
    hidden, _, _, _ = _boxed(files["data"], load_selection("na64mu_invisible"))
    out = proc.process(_events(files["data"]))["d"]
    _assert_blind(out, hidden.sum(), 2000)


def test_a_sideband_inside_the_box_is_refused(files):
    """(Its data count was 0, the box's events withheld, beside the simulation's full count.)"""
    path = _reordered(files, "sneaky.yaml",
                      lambda d: {**d, "sidebands": [{"name": "sneaky", "variable": "p_out", "max": "80 GeV"}]})
    with pytest.raises(ConfigError, match="sideband 'sneaky' .* can hold events of the blinded region"):
        SynthMu(path)


@pytest.mark.parametrize("bad", [True, "yes", 1, {"token": "x"}, object()])
def test_would_be_unblind_options_are_refused(bad):
    with pytest.raises(BlindingError, match="UnblindingToken"):
        Processor(unblind=bad)


def test_tokens_cannot_be_forged_or_asked_for():
    sel = load_selection("na64mu_invisible")
    with pytest.raises(BlindingError, match="cannot be made by hand"):
        UnblindingToken(sel.sha256, "ledger", {})
    with pytest.raises(BlindingError, match="issued only by"):
        UnblindingToken.from_ledger("ledger.json", sel)


def _session(tmp_path, sel, state="5" * 64):
    """An unblinding session as ``unblind()`` opens it (after its checks), for a stand-in ledger."""
    from na64reco.unblinding.guard import unblinding_session

    ledger = {"state_sha256": state, "state": {"selection": {"sha256": sel.sha256}}}
    return unblinding_session(tmp_path / "ledger.json", ledger)


def test_a_token_opens_only_its_own_selection_while_its_unblinding_runs(files, tmp_path):
    import pickle

    import cloudpickle

    sel = load_selection("na64mu_invisible")
    other = _reordered(files, "other.yaml", lambda d: {**d, "cuts": d["cuts"][::-1]})
    _, _, _, candidates = _boxed(files["data"], sel)
    with _session(tmp_path, sel) as token:
        with pytest.raises(BlindingError):
            token.selection_sha256 = "0" * 64
        with pytest.raises(BlindingError, match="issued for"):
            SynthMu(other, unblind=token)
        proc = pickle.loads(cloudpickle.dumps(SynthMu(unblind=token)))  # as the executors ship it
        out = proc.process(_events(files["data"]))["d"]
        assert not out["cutflow"].blinded and out["regions"][BOX].n == candidates.sum()
        assert "UnblindingToken" in out["provenance"].unblinded_by
        shipped = pickle.dumps(token)  # as the executor ships it during the unblinding
    # the unblinding is over: the same processor, the token and every copy are blind again
    with pytest.raises(BlindingError, match="outside a running"):
        proc.process(_events(files["data"]))
    with pytest.raises(BlindingError, match="outside a running"):
        SynthMu(unblind=pickle.loads(shipped))


def test_a_pickled_token_and_a_hand_made_lock_open_nothing(files, tmp_path):
    """Issue 10: a token rebuilt from a pickle plus a hand-made lock file opened the box."""
    import json
    import os
    import pickle

    from na64reco.selection import token as token_mod

    sel = load_selection("na64mu_invisible")
    with _session(tmp_path, sel) as token:
        pass
    lock = token_mod.unblinding_lock_path(token.ledger, token.state_sha256)
    lock.write_text(json.dumps({"pid": os.getpid(), "digest": token_mod.public_digest(token.mac)}))
    rebuilt = pickle.loads(pickle.dumps(token))  # pickled outside the session: no secret
    assert rebuilt._secret is None
    for t in (token, rebuilt):
        with pytest.raises(BlindingError, match="outside a running"):
            SynthMu(unblind=t)
    # a pickle that carries a made-up secret (and a matching MAC) is refused as well
    fields = [getattr(token, n) for n in token.__slots__[:-1]]
    fields[4] = token_mod._mac(b"x" * 32, token.state_sha256, token.selection_sha256, token.nonce)
    forged = token_mod._rebuild_token(*fields, b"x" * 32)
    lock.write_text(json.dumps({"pid": os.getpid(), "digest": token_mod.public_digest(forged.mac)}))
    with pytest.raises(BlindingError, match="outside a running"):
        SynthMu(unblind=forged)
    out = SynthMu().process(_events(files["data"]))["d"]  # and the data stay blind
    hidden, _, _, _ = _boxed(files["data"], sel)
    _assert_blind(out, hidden.sum(), 2000)


def _check_in_worker(payload, sha256):
    import pickle
    from types import SimpleNamespace

    pickle.loads(payload).check(SimpleNamespace(sha256=sha256, source="selection"))
    return "accepted"


def test_workers_accept_the_token_only_while_their_unblinding_runs(tmp_path):
    import pickle

    import loky

    sel = load_selection("na64mu_invisible")
    with loky.ProcessPoolExecutor(max_workers=1) as pool:
        with _session(tmp_path, sel) as token:
            shipped = pickle.dumps(token)
            assert pool.submit(_check_in_worker, shipped, sel.sha256).result() == "accepted"
        with pytest.raises(BlindingError, match="outside a running"):
            pool.submit(_check_in_worker, shipped, sel.sha256).result()


def test_the_reco_hook_is_refused_for_data_and_allowed_for_simulation(files):
    """Issue 10: ``Processor(reco=...)`` fed modified reconstructed events for data."""
    from na64reco.runner import RunOptions, run_files

    def moved(events, setup, conditions, source=""):  # every box event moved out of the box
        reco = synthetic_reco(events, setup, conditions, source)
        return ak.with_field(reco, reco["p_out"] + 200.0, "p_out")

    with pytest.raises(BlindingError, match="reco= hook is refused for data"):
        Processor(reco=moved).process(_events(files["data"]))
    for skip in (False, True):  # a refusal is never a "bad file" to skip; one line naming the file
        with pytest.raises(NA64Error, match=f"{files['data']}.*reco= hook is refused for data"):
            run_files({"d": [files["data"]]}, RunOptions("na64mu_invisible", skip_bad_files=skip),
                      processor_instance=Processor(reco=moved))
    out = Processor(reco=moved).process(_events(files["mc"]))["d"]
    assert out["regions"][BOX].n == 0  # for simulation the hook works (everything moved out)


def test_a_redirected_selections_directory_does_not_move_the_protected_region(files, tmp_path, monkeypatch):
    """Issue 10: NA64RECO_SELECTIONS pointing at a user-written blinding.yaml moved the region."""
    from na64reco.resources import selections_dir

    user = tmp_path / "mysel"
    user.mkdir()
    for name in ("na64mu_invisible.yaml", "na64e_invisible.yaml"):
        (user / name).write_text((selections_dir() / name).read_text())
    (user / "blinding.yaml").write_text(
        "schema_version: 1\nsetups:\n  na64mu:\n    protected: {variable: p_out, max: 0.001 GeV}\n"
        "  na64e:\n    protected: {variable: ecal_energy, max: 0.001 GeV}\n")
    blinding_mod.load_protection.cache_clear()
    monkeypatch.setenv("NA64RECO_SELECTIONS", str(user))
    try:
        assert blinding_mod.load_protection("na64mu").protected.max == pytest.approx(80.0)
        proc = SynthMu()
        assert proc.selection.source.startswith(str(user))  # selections do come from the user path
        hidden, _, _, _ = _boxed(files["data"], proc.selection)
        _assert_blind(proc.process(_events(files["data"]))["d"], hidden.sum(), 2000)
    finally:
        blinding_mod.load_protection.cache_clear()


def test_a_selection_with_a_smaller_box_does_not_open_the_protected_region(files):
    path = _reordered(files, "smallbox.yaml", lambda d: {**d, "signal_box": {"variable": "p_out", "max": "1 GeV"}})
    proc = SynthMu(path)
    hidden, _, p_out, _ = _boxed(files["data"], load_selection("na64mu_invisible"))
    out = proc.process(_events(files["data"]))["d"]
    visible_controls = ((p_out < 80) & ~hidden).sum()      # box events where the VETO fired
    assert 0 < visible_controls < (p_out < 80).sum()
    assert out["hists"]["p_out"][{"stage": "all"}][:80j].values().sum() == visible_controls
    assert out["cutflow"].n[0] == 2000 - hidden.sum()


def test_cli_outputs_of_a_data_run_stay_blind(files, tmp_path, monkeypatch, capsys):
    import json

    import uproot

    import processors.base as base
    from na64reco.cli import main

    monkeypatch.setattr(base, "reconstruct_stage", synthetic_reco)
    outdir = tmp_path / "out"
    assert main(["run", "--processor", "na64mu_invisible", "--output", str(outdir), "--no-plots",
                 "--no-progress", "--chunksize", "700", files["data"]]) == 0
    printed = capsys.readouterr().out
    hidden, _, _, _ = _boxed(files["data"], load_selection("na64mu_invisible"))
    assert "blinded" in printed
    summary = json.loads((outdir / "cutflow.json").read_text())["data"]
    assert summary["cutflow"][-1]["events"] == BLINDED
    assert summary["regions"][BOX]["events"] == BLINDED
    assert summary["cutflow"][0]["events"] == 2000 - hidden.sum()
    with uproot.open(outdir / "hists.root") as f:
        h = f["data/nminus1_signal_box"].to_hist()
        assert h[:80j].values().sum() == 0
        assert f["data/p_out_selected"].to_hist()[:80j].values().sum() == 0
    assert main(["cutflow", str(outdir)]) == 0
    text = capsys.readouterr().out
    assert [ln for ln in text.splitlines() if ln.startswith(BOX)][0].split()[1] == BLINDED
