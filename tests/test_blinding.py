"""Blinding: data events passing every cut inside the signal box never reach an output.

The expected box content is computed independently from the synthetic reco (numpy),
and every output of the processor (histograms, N-1, cut-flow, regions, text, files)
is checked not to contain those events, whatever the cut order, entry point or option.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from coffea.nanoevents import BaseSchema, NanoEventsFactory
from test_processors_synthetic import synthetic_reco, write_raw

from na64reco.errors import BlindingError
from na64reco.selection import blinding as blinding_mod
from na64reco.selection import load_selection
from na64reco.selection.blinding import UnblindingToken
from na64reco.selection.cuts import BLINDED, BOX, cut_masks
from processors.na64mu_invisible import Processor


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
    proc = Processor(reco=synthetic_reco)
    hidden, allcuts, _, candidates = _boxed(files["data"], proc.selection)
    assert candidates.sum() > 10 and (allcuts & ~hidden).sum() > 10   # both populations exist
    out = proc.process(_events(files["data"]))["d"]
    _assert_blind(out, hidden.sum(), 2000)
    assert out["cutflow"].n[-2] == (allcuts & ~hidden).sum()
    # the candidates hide among box events failing other cuts: subtraction does not count them
    assert hidden.sum() - candidates.sum() > 10
    assert 2000 - out["cutflow"].n[0] == hidden.sum() != candidates.sum()


def test_chunks_without_file_metadata_count_as_data(files):
    proc = Processor(reco=synthetic_reco)
    ev = NanoEventsFactory.from_root({files["mc"]: "events"}, schemaclass=BaseSchema,
                                     mode="eager").events()
    ev.metadata.clear()
    hidden, _, _, _ = _boxed(files["mc"], proc.selection)
    out = proc.process(ev)["default"]
    _assert_blind(out, hidden.sum(), 2000)


def test_simulation_is_not_blinded(files):
    proc = Processor(reco=synthetic_reco)
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
    lambda d: {**d, "sidebands": [{"name": "sneaky", "variable": "p_out", "max": "80 GeV"}]},
])
def test_cut_order_and_sneaky_regions_cannot_open_the_box(files, transform):
    path = _reordered(files, "reordered.yaml", transform)
    proc = Processor(path, reco=synthetic_reco)
    hidden, _, _, _ = _boxed(files["data"], load_selection("na64mu_invisible"))
    out = proc.process(_events(files["data"]))["d"]
    _assert_blind(out, hidden.sum(), 2000)
    for name, counts in out["regions"].items():
        if name != BOX:
            assert counts.n == 0 or name != "sneaky"


@pytest.mark.parametrize("bad", [True, "yes", 1, {"token": "x"}, object()])
def test_would_be_unblind_options_are_refused(bad):
    with pytest.raises(BlindingError, match="UnblindingToken"):
        Processor(unblind=bad, reco=synthetic_reco)


def test_tokens_cannot_be_forged_and_need_a_ledger(monkeypatch):
    sel = load_selection("na64mu_invisible")
    with pytest.raises(BlindingError, match="cannot be made by hand"):
        UnblindingToken(sel.sha256, "ledger", {})
    monkeypatch.setattr(blinding_mod, "_LEDGER_VALIDATOR", None)
    with pytest.raises(BlindingError, match="ledger"):
        UnblindingToken.from_ledger("ledger.yaml", sel)


def test_a_ledger_token_opens_only_its_own_selection_while_unblinding_runs(files, monkeypatch, tmp_path):
    import json
    import pickle

    sel = load_selection("na64mu_invisible")
    ledger = tmp_path / "ledger.json"
    state = "5" * 64
    ledger.write_text(json.dumps({"state_sha256": state, "state": {"selection": {"sha256": sel.sha256}}}))

    def validator(path, selection):
        frozen = json.loads(open(path).read())
        if selection.sha256 != frozen["state"]["selection"]["sha256"]:
            raise BlindingError(f"{path}: selection not frozen")
        return {"state_sha256": frozen["state_sha256"]}

    monkeypatch.setattr(blinding_mod, "_LEDGER_VALIDATOR", None)
    blinding_mod.register_ledger_validator(validator)
    token = UnblindingToken.from_ledger(str(ledger), sel)
    with pytest.raises(BlindingError):
        token.selection_sha256 = "0" * 64
    # no unblinding in progress: the token (or a copy rebuilt from a pickle) opens nothing
    with pytest.raises(BlindingError, match="outside a running"):
        Processor(unblind=token, reco=synthetic_reco)
    with pytest.raises(BlindingError, match="outside a running"):
        Processor(unblind=pickle.loads(pickle.dumps(token)), reco=synthetic_reco)
    lock = blinding_mod.unblinding_lock_path(ledger, state)
    lock.write_text("test")
    other = _reordered(files, "other.yaml", lambda d: {**d, "cuts": d["cuts"][::-1]})
    with pytest.raises(BlindingError, match="issued for"):
        Processor(other, unblind=token, reco=synthetic_reco)
    proc = pickle.loads(pickle.dumps(Processor(unblind=token, reco=synthetic_reco)))
    _, _, _, candidates = _boxed(files["data"], sel)
    out = proc.process(_events(files["data"]))["d"]
    assert not out["cutflow"].blinded and out["regions"][BOX].n == candidates.sum()
    assert "UnblindingToken" in out["provenance"].unblinded_by
    lock.unlink()  # the unblinding is over: the same processor is blind again
    with pytest.raises(BlindingError, match="outside a running"):
        proc.process(_events(files["data"]))
    ledger.write_text(json.dumps({"state_sha256": "6" * 64, "state": {"selection": {"sha256": sel.sha256}}}))
    with pytest.raises(BlindingError, match="does not match the frozen state"):
        token.check(sel)


def test_a_selection_with_a_smaller_box_does_not_open_the_protected_region(files):
    path = _reordered(files, "smallbox.yaml", lambda d: {**d, "signal_box": {"variable": "p_out", "max": "1 GeV"}})
    proc = Processor(path, reco=synthetic_reco)
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
