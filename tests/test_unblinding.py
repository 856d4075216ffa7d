"""Freeze / unblind: ledger hashes, differences, the token, the audit log, the commands.

The processor runs for real (coffea, iterative executor) over small raw-format *data*
files (no truth); only the reconstruction stage is replaced by a deterministic
function of the event number, so the expected box and sideband counts are computed
here independently.  Calibration, selection and "code" live in temporary copies, so
that tests can edit them (and concurrent edits of the repository cannot disturb them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import yaml

import na64reco.unblinding as ub
from na64reco.cli import main
from na64reco.errors import BlindingError, ConfigError
from na64reco.io.raw import RawWriter
from na64reco.resources import calib_dir, selections_dir

processors = pytest.importorskip("processors")
pytest.importorskip("processors.base")
pytest.importorskip("na64reco.runner")
from na64reco.selection.blinding import UnblindingToken, protection_path  # noqa: E402

PROC = "na64mu_invisible"
TAG = "na64mu-default"


# ----------------------------------------------------------------------------------------
# synthetic data and reconstruction
def _p_out(event):
    return 160.0 - (np.asarray(event) * 37 % 150).astype(float)


def _veto_fails(event):
    return np.asarray(event) % 10 == 3


def fake_reco(events, setup, conditions, source="", leave_out=()):
    """Every event passes every cut except the veto for event % 10 == 3; p_out from the id."""
    event = np.asarray(events["event"])
    n = len(event)
    full = lambda v: np.full(n, v, dtype=float)  # noqa: E731
    rec = {
        "run": np.asarray(events["run"]), "spill": np.asarray(events["spill"]), "event": event,
        "trigger": np.ones(n, np.uint32), "n_tracks_in": np.ones(n, np.int64),
        "n_tracks_out": np.ones(n, np.int64), "n_extra_planes_out": np.zeros(n, np.int64),
        "n_views_out": np.full(n, 2, np.int64),
        "p_in": full(160.0), "p_out": _p_out(event),
        "chi2_in": full(2.0), "chi2_out": full(2.0), "track_match_chi2": full(1.0), "ecal_energy": full(0.4),
        "hcal_module_energy": ak.from_numpy(np.full((n, 4), 2.2), regulararray=True),
        "hcal_energy": full(8.8), "vhcal_energy": full(0.01),
        "veto_energy": np.where(_veto_fails(event), 0.05, 0.005),
        "counter_S4_energy": full(0.002), "counter_Smu_energy": full(0.01),
    }
    for c in ("S0", "S1", "V1"):
        rec[f"counter_{c}_energy"] = full(0.01)
    return ak.zip(rec, depth_limit=1)


def write_data(path: Path, first_event: int, n_events: int, run: int = 7, spill: int = 1) -> Path:
    event = np.arange(first_event, first_event + n_events, dtype=np.int64)
    z = np.zeros(n_events, np.int64)
    ev = {"run": np.full(n_events, run), "spill": np.full(n_events, spill), "event": event,
          "trigger": np.ones(n_events), "time_in_spill": np.zeros(n_events),
          "n_calo": z, "calo_det": [], "calo_chan": [], "calo_adc": np.zeros((0, 32)),
          "n_apv": z, "apv_plane": [], "apv_chan": [], "apv_a0": [], "apv_a1": [], "apv_a2": [],
          "n_straw": z, "straw_plane": [], "straw_tube": [], "straw_tdc": []}
    with RawWriter(path, setup="na64mu", run=run, has_truth=False) as w:  # data: no truth
        w.write_events(ev)
        w.write_spills({"run": [run], "spill": [spill], "n_beam": [10 * n_events], "n_triggered": [n_events]})
    return path


def expected_counts(events: np.ndarray) -> dict:
    p, vf = _p_out(events), _veto_fails(events)
    return {"signal_box": int(np.sum(~vf & (p < 80))),
            "p_out_80_120": int(np.sum(~vf & (p >= 80) & (p < 120))),
            "veto_failed_box": int(np.sum(vf & (p < 80)))}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Temporary calib/, selection, code tree and data files; fake reconstruction."""
    calib = tmp_path / "calib"
    shutil.copytree(calib_dir(), calib)
    monkeypatch.setenv("NA64RECO_CALIB", str(calib))
    sel = tmp_path / "sel" / "na64mu_invisible.yaml"
    sel.parent.mkdir()
    shutil.copy(selections_dir() / "na64mu_invisible.yaml", sel)
    code = tmp_path / "code"
    for name, root in ub.code_roots().items():
        shutil.copytree(root, code / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    roots = {name: code / name for name in ub.code_roots()}
    monkeypatch.setattr(ub.state, "code_roots", lambda: roots)
    monkeypatch.setenv("NA64RECO_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr(processors.base, "reconstruct_stage", fake_reco)
    data = tmp_path / "data"
    data.mkdir()
    files = [write_data(data / "run7_a.root", 0, 120), write_data(data / "run7_b.root", 120, 90)]
    ledger_dir = tmp_path / "frozen"
    ledger_dir.mkdir()
    return {"tmp": tmp_path, "calib": calib, "sel": sel, "code": code, "files": files,
            "ledger": ledger_dir / "ledger.json", "events": np.arange(210), "registry": tmp_path / "registry"}


def _freeze(env, **kw):
    return ub.freeze(env["ledger"], processor=PROC, calib_tag=TAG, files=env["files"],
                     selection=str(env["sel"]), **kw)


# ----------------------------------------------------------------------------------------
def test_code_state_covers_library_and_processors():
    st = ub.code_state()
    assert "na64reco/unblinding/ledger.py" in st["source_files"]
    assert "na64reco/selection/token.py" in st["source_files"]
    assert st["source_files"]["protection/blinding.yaml"] == ub.sha256_file(protection_path())
    assert "na64reco/selection/blinding.py" in st["source_files"]
    assert "processors/base.py" in st["source_files"]
    assert not any("__pycache__" in p for p in st["source_files"])
    assert st["source_sha256"] == ub.state_hash(st["source_files"])


def test_ledger_records_every_input(env):
    ledger = _freeze(env, options={"executor": "iterative", "chunksize": 50})
    st = ledger["state"]
    assert st["processor"] == {"name": PROC, "setup": "na64mu",
                               "options": {"executor": "iterative", "chunksize": 50}}
    assert st["selection"]["sha256"] == ub.sha256_file(env["sel"])
    cal = st["calibration"]
    assert cal["tag"] == TAG and cal["tag_sha256"] == ub.sha256_file(env["calib"] / "tags" / f"{TAG}.yaml")
    assert cal["conditions"] == {
        "na64mu/calorimeter/v001.yaml": ub.sha256_file(env["calib"] / "conditions/na64mu/calorimeter/v001.yaml"),
        "na64mu/tracker/v001.yaml": ub.sha256_file(env["calib"] / "conditions/na64mu/tracker/v001.yaml")}
    assert cal["setup_sha256"] == ub.sha256_file(env["calib"] / "setups" / "na64mu.yaml")
    assert st["code"]["version"] == __import__("na64reco").__version__
    paths = [f["path"] for f in st["files"]]
    assert paths == sorted(str(f.resolve()) for f in env["files"])
    for f in st["files"]:
        assert f["size"] == Path(f["path"]).stat().st_size and f["sha256"] == ub.sha256_file(f["path"])
    assert ledger["state_sha256"] == ub.state_hash(st)
    assert ub.read_ledger(env["ledger"]) == ledger
    _, _, diffs = ub.verify(env["ledger"])
    assert [d for d in diffs if d.blocking] == []


def test_ledger_is_never_overwritten_and_refreezing_needs_force_new(env):
    _freeze(env)
    before = env["ledger"].read_bytes()
    with pytest.raises(BlindingError, match="never overwritten"):
        _freeze(env)
    with pytest.raises(BlindingError, match="never overwritten"):
        _freeze(env, force_new=True)
    assert env["ledger"].read_bytes() == before
    second = env["ledger"].with_name("ledger_v2.json")
    with pytest.raises(BlindingError, match="re-tuning"):
        ub.freeze(second, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]))
    new = ub.freeze(second, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]),
                    force_new=True)
    assert new["supersedes"][0]["ledger"] == str(env["ledger"].resolve())


def test_freeze_rejects_unknown_options_and_missing_files(env):
    from na64reco.errors import ConfigError, NA64Error

    with pytest.raises(ConfigError, match="unknown processor option"):
        _freeze(env, options={"unblind": True})
    with pytest.raises(NA64Error, match="does not exist"):
        ub.freeze(env["ledger"], processor=PROC, calib_tag=TAG, files=[env["tmp"] / "nope.root"])
    assert not env["ledger"].exists()


# ---- nothing but unblind() opens the box -------------------------------------------------
def test_processor_refuses_anything_but_a_token(env):
    from processors import get_processor

    cls = get_processor(PROC)
    for fake in (True, 1, "yes", object(), {"ledger": "x"}):
        with pytest.raises(BlindingError):
            cls(str(env["sel"]), unblind=fake)
    with pytest.raises(BlindingError, match="by hand"):
        UnblindingToken("0" * 64, str(env["ledger"]), {})


def test_token_cannot_be_obtained_outside_unblind(env):
    from na64reco.selection.schema import load_selection

    _freeze(env)
    sel = load_selection(env["sel"])
    # a valid, verified ledger is still not enough: only unblind() issues tokens
    with pytest.raises(BlindingError, match="issued only by"):
        UnblindingToken.from_ledger(str(env["ledger"]), sel)


def test_blinded_run_hides_the_box(env):
    from na64reco.runner import RunOptions, run_files

    out = run_files({"d": [str(f) for f in env["files"]]},
                    RunOptions(PROC, selection=str(env["sel"]), calib_tag=TAG))
    regions = out["d"]["regions"]
    assert regions["signal_box"].to_dict()["events"] == "blinded"
    exp = expected_counts(env["events"])
    assert regions["p_out_80_120"].n == exp["p_out_80_120"]


# ---- unblinding ----------------------------------------------------------------------------
def test_unblind_requires_confirmation(env):
    _freeze(env)
    with pytest.raises(BlindingError, match="i-understand-this-opens-the-box"):
        ub.unblind(env["ledger"], confirm=False)
    assert not ub.default_audit_log(env["ledger"]).exists()


def test_unblind_once_then_the_record(env):
    _freeze(env)
    log = ub.default_audit_log(env["ledger"])
    out = env["tmp"] / "unblinded"
    res = ub.unblind(env["ledger"], confirm=True, output_dir=out)
    exp = expected_counts(env["events"])
    assert res.ran and res.observed == exp["signal_box"] > 0
    assert res.record["result"]["sidebands"]["p_out_80_120"]["events"] == exp["p_out_80_120"]
    assert res.record["result"]["sidebands"]["veto_failed_box"]["events"] == exp["veto_failed_box"]
    assert res.record["result"]["n_beam"] == 10 * 210
    assert (out / "unblinded_counts.json").is_file()
    assert list((out / "plots").glob("*unblinded_p_out.png"))
    started, rec = (json.loads(line) for line in log.read_text().splitlines())
    ledger = ub.read_ledger(env["ledger"])
    assert rec["ledger_sha256"] == ledger["ledger_sha256"] and rec["state_sha256"] == ledger["state_sha256"]
    # the start is on the record before the box opens; the chain starts at the ledger
    assert started["kind"] == "unblinding-started" and "result" not in started
    assert started["attempt"] == rec["attempt"] and started["prev_sha256"] == ledger["ledger_sha256"]
    assert rec["dataset_sha256"] == ub.dataset_hash(ledger["state"]["files"])
    # the same records in the user's registry and beside the data, keyed by the data set
    for reg in ub.registry_logs(rec["dataset_sha256"], ledger["state"]["files"]):
        assert [r["kind"] for r in ub.read_audit_log(reg)] == ["unblinding-started", "unblinding"]
        assert ub.read_audit_log(reg)[1] == {**rec, "prev_sha256": ub.read_audit_log(reg)[1]["prev_sha256"]}
    assert rec["user"] and rec["time_utc"].endswith("+00:00")
    assert rec["result"]["signal_box"]["events"] == exp["signal_box"]

    def must_not_run(*_):
        raise AssertionError("a second unblinding must not re-run the analysis")

    again = ub.unblind(env["ledger"], confirm=True, output_dir=env["tmp"] / "again", runner=must_not_run)
    assert not again.ran and again.record == rec
    assert "unblinded before, on " + rec["time_utc"] in ub.format_result(again)
    assert len(log.read_text().splitlines()) == 2  # nothing rewritten, nothing added
    # a new ledger of the same frozen state is the same analysis: still the record
    twin = env["ledger"].with_name("twin.json")
    ub.freeze(twin, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]),
              force_new=True, reason="a second ledger of the same analysis")
    assert not ub.unblind(twin, confirm=True, runner=must_not_run).ran


def test_concurrent_unblinding_is_refused(env):
    state = _freeze(env)["state_sha256"]
    lock = env["ledger"].with_name(f".unblinding-{state[:16]}.lock")
    lock.write_text("someone 2026-01-01T00:00:00+00:00 pid 1\n")
    with pytest.raises(BlindingError, match="in progress"):
        ub.unblind(env["ledger"], confirm=True, runner=lambda *a: pytest.fail("must not run"))
    lock.unlink()
    ub.unblind(env["ledger"], confirm=True, runner=lambda *a: {"signal_box": {"events": 0}})
    assert not lock.exists()


def test_two_frozen_states_of_one_data_set_cannot_unblind_at_once(env):
    """The lock is per data set too: a second ledger elsewhere (another state) waits its turn."""
    _freeze(env)
    other = env["tmp"] / "elsewhere" / "retuned.json"
    ub.freeze(other, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]),
              options={"chunksize": 1000})
    refused = []

    def first_runner(*_):  # while the first unblinding runs, the second one is tried
        with pytest.raises(BlindingError, match="unblinding of this data set .* is in progress"):
            ub.unblind(other, confirm=True, runner=lambda *a: pytest.fail("must not run"))
        refused.append(True)
        return {"signal_box": {"events": 0}}

    ub.unblind(env["ledger"], confirm=True, runner=first_runner)
    assert refused
    assert not list((env["registry"]).glob("*.lock"))  # released


def test_extra_audit_log_also_gets_the_record(env):
    _freeze(env)
    extra = env["tmp"] / "elsewhere" / "audit.jsonl"
    res = ub.unblind(env["ledger"], confirm=True, audit_log=extra, runner=lambda *a: {
        "signal_box": {"events": 3}, "sidebands": {}, "n_beam": 1})
    assert [json.loads(line)["state_sha256"] for line in extra.read_text().splitlines()] == [
        res.record["state_sha256"]] * 2  # its start and its result
    # the log beside the ledger is always written, so another --audit-log cannot hide it
    again = ub.unblind(env["ledger"], confirm=True, audit_log=env["tmp"] / "fresh.jsonl")
    assert not again.ran and again.observed == 3


@pytest.mark.parametrize("change, expected", [
    ("selection", "selection changed: .*content sha256"),
    ("conditions", "calibration changed: conditions file na64mu/calorimeter/v001.yaml was edited"),
    ("tag", "calibration changed: tag file"),
    ("setup", "calibration changed: detector setup file"),
    ("code", "code changed: source na64reco/background/estimates.py modified"),
    ("code_added", "code changed: source processors/sneaky.py added"),
    ("file_content", "file content changed: .*run7_b.root"),
    ("file_removed", "file list changed: removed .*run7_a.root"),
    ("calib_dir", "calibration changed: calibration directory"),
])
def test_unblind_refuses_a_changed_analysis(env, change, expected, monkeypatch):
    _freeze(env)
    if change == "selection":
        text = env["sel"].read_text().replace("max: 80 GeV", "max: 85 GeV", 1)
        env["sel"].write_text(text)
    elif change == "conditions":
        p = env["calib"] / "conditions/na64mu/calorimeter/v001.yaml"
        p.write_text(p.read_text().replace("comment:", "comment: retuned", 1))
    elif change == "tag":
        p = env["calib"] / "tags" / f"{TAG}.yaml"
        p.write_text(p.read_text() + "# edited\n")
    elif change == "setup":
        p = env["calib"] / "setups" / "na64mu.yaml"
        p.write_text(p.read_text() + "# edited\n")
    elif change == "code":
        p = env["code"] / "na64reco" / "background" / "estimates.py"
        p.write_text(p.read_text() + "\n# tweak\n")
    elif change == "code_added":
        (env["code"] / "processors" / "sneaky.py").write_text("x = 1\n")
    elif change == "file_content":
        write_data(env["files"][1], 120, 91)
    elif change == "file_removed":
        env["files"][0].unlink()
    elif change == "calib_dir":  # identical copy elsewhere: the processor would read other files
        shutil.copytree(env["calib"], env["tmp"] / "calib2")
        monkeypatch.setenv("NA64RECO_CALIB", str(env["tmp"] / "calib2"))
    with pytest.raises(BlindingError, match=expected):
        ub.unblind(env["ledger"], confirm=True, runner=lambda *a: pytest.fail("must not run"))
    assert not ub.default_audit_log(env["ledger"]).exists()


def test_edited_ledger_is_refused(env):
    _freeze(env)
    ledger = json.loads(env["ledger"].read_text())
    ledger["state"]["selection"]["sha256"] = "0" * 64  # "re-freeze" by hand
    env["ledger"].write_text(json.dumps(ledger))
    with pytest.raises(BlindingError, match="edited after it was frozen"):
        ub.unblind(env["ledger"], confirm=True)


def test_diff_states_names_every_difference(env):
    a = _freeze(env)["state"]
    b = json.loads(json.dumps(a))
    b["processor"]["options"] = {"chunksize": 10}
    b["files"].append({"path": "/data/new.root", "size": 1, "sha256": "f" * 64})
    b["calibration"]["conditions"]["na64mu/tracker/v002.yaml"] = "e" * 64
    b["code"]["git_commit"] = "abc"
    whats = {(d.what, d.blocking) for d in ub.diff_states(a, b)}
    assert whats == {("processor", True), ("file list", True), ("calibration", True)} | (
        {("code", False)} if a["code"]["git_commit"] != "abc" else set())
    assert ub.diff_states(a, a) == []


# ---- commands ------------------------------------------------------------------------------
def test_cli_freeze_and_unblind(env, capsys):
    argv = ["freeze", "--processor", PROC, "--calib-tag", TAG, "--selection", str(env["sel"]),
            "--options", '{"chunksize": 100}', "--ledger", str(env["ledger"]), *map(str, env["files"])]
    assert main(argv) == 0
    assert "frozen na64mu_invisible" in capsys.readouterr().out
    assert main(argv) == 1
    assert "never overwritten" in capsys.readouterr().err

    assert main(["unblind", "--ledger", str(env["ledger"])]) == 1
    err = capsys.readouterr().err
    assert "--i-understand-this-opens-the-box" in err and len(err.strip().splitlines()) == 1

    out_dir = env["tmp"] / "out"
    assert main(["unblind", "--ledger", str(env["ledger"]), "--i-understand-this-opens-the-box",
                 "--output", str(out_dir)]) == 0
    exp = expected_counts(env["events"])
    assert f"signal box: {exp['signal_box']} observed events" in capsys.readouterr().out
    assert main(["unblind", "--ledger", str(env["ledger"]), "--i-understand-this-opens-the-box"]) == 0
    text = capsys.readouterr().out
    assert "unblinded before" in text and f"signal box: {exp['signal_box']} observed" in text

    # re-tuning after unblinding: the record stays the answer, the change is pointed out
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    assert main(["unblind", "--ledger", str(env["ledger"]), "--i-understand-this-opens-the-box"]) == 0
    text = capsys.readouterr().out
    assert f"signal box: {exp['signal_box']} observed" in text
    assert "warning: since then, selection changed" in text


def test_cli_unblind_refuses_a_changed_selection(env, capsys):
    _freeze(env)
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    assert main(["unblind", "--ledger", str(env["ledger"]), "--i-understand-this-opens-the-box"]) == 1
    err = capsys.readouterr().err
    assert "selection changed" in err and len(err.strip().splitlines()) == 1


# ---- the record cannot be rewritten --------------------------------------------------------
def _fake_run(n=3):
    return lambda *a: {"signal_box": {"events": n}, "sidebands": {}, "n_beam": 1}


def _never(*_):
    raise AssertionError("must not run")


def test_a_hand_edited_count_in_the_audit_log_is_refused(env):
    """Issue 10: a hand-edited count in the audit log was believed."""
    _freeze(env)
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    log = ub.default_audit_log(env["ledger"])
    log.write_text(log.read_text().replace('"events":3', '"events":0'))
    with pytest.raises(ub.AuditLogError, match=f"audit log {log} record 2 was edited"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)


def test_an_edited_earlier_record_breaks_the_chain(env):
    _freeze(env)
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    second = env["ledger"].with_name("retuned.json")
    ub.freeze(second, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]),
              force_new=True, reason="chi2 cut loosened")
    log = ub.default_audit_log(env["ledger"])
    assert [r["kind"] for r in ub.read_audit_log(log)] == ["unblinding-started", "unblinding",
                                                          "freeze-after-unblinding"]
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace('"events":3', '"events":1')
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ub.AuditLogError, match=f"audit log {log} record 3: the hash chain is broken"):
        ub.read_audit_log(log)


@pytest.mark.parametrize("how", ["truncated", "emptied", "deleted", "head_deleted", "line_added"])
def test_a_truncated_or_deleted_audit_log_is_refused(env, how):
    """Issue 10: deleting the log let `unblind` run again."""
    _freeze(env)
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    log = ub.default_audit_log(env["ledger"])
    first = log.read_text()
    if how == "truncated":
        log.write_text(first[: len(first) - 40])
        expected = "record 2 is cut short"
    elif how == "emptied":
        log.write_text("")
        expected = "holds 0 record.*record 1 onwards was removed"
    elif how == "deleted":
        log.unlink()
        expected = "was deleted: its chain head"
    elif how == "head_deleted":
        ub.audit.head_path(log).unlink()
        expected = "chain head .* is missing"
    else:
        rec = json.loads(first.splitlines()[-1])
        rec["prev_sha256"] = "0" * 64
        log.write_text(first + ub.audit.canonical_line(rec) + "\n")
        expected = "record 3"
    with pytest.raises(ub.AuditLogError, match=expected):
        ub.unblind(env["ledger"], confirm=True, runner=_never)


def test_deleting_log_and_head_or_copying_the_ledger_does_not_reopen_the_box(env):
    """Issue 10: deleting the log, or copying the ledger to another directory, let `unblind` run again."""
    _freeze(env)
    first = ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    elsewhere = env["tmp"] / "copy" / "ledger.json"
    elsewhere.parent.mkdir()
    shutil.copy(env["ledger"], elsewhere)
    again = ub.unblind(elsewhere, confirm=True, runner=_never)
    assert not again.ran and again.observed == 3 and again.record["time_utc"] == first.record["time_utc"]
    log = ub.default_audit_log(env["ledger"])
    log.unlink()
    ub.audit.head_path(log).unlink()
    assert not ub.unblind(env["ledger"], confirm=True, runner=_never).ran  # the registries remember


def test_the_user_registry_alone_remembers_copied_data(env):
    _freeze(env)
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    moved = env["tmp"] / "moved"
    moved.mkdir()
    files = [shutil.copy(f, moved / f.name) for f in env["files"]]  # same content, no registry beside
    ledger = env["tmp"] / "other" / "ledger.json"
    with pytest.raises(BlindingError, match="unblinded before .*--force-new --reason"):
        ub.freeze(ledger, processor=PROC, calib_tag=TAG, files=files, selection=str(env["sel"]))
    assert not ledger.exists()
    new = ub.freeze(ledger, processor=PROC, calib_tag=TAG, files=files, selection=str(env["sel"]),
                    force_new=True, reason="data moved to new storage")
    assert [s["ledger"] for s in new["supersedes"]] == [str(env["ledger"].resolve())]
    res = ub.unblind(ledger, confirm=True, runner=_fake_run(3))  # on the record, with its reason
    assert res.ran and res.record["supersedes"] == new["supersedes"] and res.record["reason"] == new["reason"]


def test_refreezing_retuned_cuts_elsewhere_supersedes_the_unblinding(env):
    """Issue 10: re-tuning a cut and freezing into a new directory gave a fresh unblinding with
    "supersedes": []."""
    _freeze(env)
    first = ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    ledger = env["tmp"] / "elsewhere" / "retuned.json"
    kw = dict(processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]))
    with pytest.raises(BlindingError, match="unblinded before"):
        ub.freeze(ledger, **kw)
    with pytest.raises(BlindingError, match="needs --reason"):
        ub.freeze(ledger, force_new=True, **kw)
    new = ub.freeze(ledger, force_new=True, reason="chi2 cut loosened after unblinding", **kw)
    assert new["supersedes"] == [{"ledger": str(env["ledger"].resolve()),
                                  "state_sha256": first.record["state_sha256"],
                                  "unblinded_at": first.record["time_utc"], "unblinded_by": first.record["user"],
                                  "shared_files": None, "ended": True}]
    assert new["reason"] == "chi2 cut loosened after unblinding"
    (noted,) = ub.read_audit_log(ub.default_audit_log(ledger))
    assert noted["kind"] == "freeze-after-unblinding" and noted["reason"] == new["reason"]
    res = ub.unblind(ledger, confirm=True, runner=_fake_run(5))
    assert res.ran and res.record["supersedes"] == new["supersedes"] and res.record["reason"] == new["reason"]
    assert "supersedes " + str(env["ledger"].resolve()) in ub.format_result(res)


def test_a_ledger_frozen_before_another_unblinding_needs_force_new_to_unblind(env):
    _freeze(env)
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    other = env["tmp"] / "team_b" / "ledger.json"
    ub.freeze(other, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]))
    ub.unblind(other, confirm=True, runner=_fake_run(4))
    env["sel"].write_text(env["sel"].read_text().replace("max: 21\n", "max: 20\n", 1))
    with pytest.raises(BlindingError, match="unblinded before with another frozen state"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)
    res = ub.unblind(env["ledger"], confirm=True, force_new=True, reason="the nominal analysis", runner=_fake_run(3))
    assert res.ran and res.record["supersedes"][0]["ledger"] == str(other.resolve())
    assert res.record["reason"] == "the nominal analysis"


def test_cli_force_new_with_a_reason(env, capsys):
    _freeze(env)
    assert main(["unblind", "--ledger", str(env["ledger"]), "--i-understand-this-opens-the-box"]) == 0
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    argv = ["freeze", "--processor", PROC, "--calib-tag", TAG, "--selection", str(env["sel"]),
            "--ledger", str(env["tmp"] / "new" / "l.json"), *map(str, env["files"])]
    capsys.readouterr()
    assert main(argv) == 1
    assert "--force-new --reason" in capsys.readouterr().err
    assert main([*argv, "--force-new", "--reason", "looser chi2"]) == 0
    out = capsys.readouterr().out
    assert "supersedes " + str(env["ledger"].resolve()) in out and "reason: looser chi2" in out


def test_a_failed_unblinding_leaves_a_trace_and_can_be_run_again(env):
    _freeze(env)

    def dies(*_):
        raise RuntimeError("plotting failed after the counts were written")

    with pytest.raises(RuntimeError, match="plotting failed"):
        ub.unblind(env["ledger"], confirm=True, runner=dies)
    started, aborted = ub.read_audit_log(ub.default_audit_log(env["ledger"]))
    assert aborted["kind"] == "unblinding-aborted" and "plotting failed" in aborted["error"]
    assert started["kind"] == "unblinding-started" and started["attempt"] == aborted["attempt"]
    assert ub.read_audit_log(env["registry"] / f"{aborted['dataset_sha256']}.jsonl") == [started, aborted]
    res = ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    assert res.ran and [r["kind"] for r in ub.read_audit_log(ub.default_audit_log(env["ledger"]))] == [
        "unblinding-started", "unblinding-aborted", "unblinding-started", "unblinding"]


def test_a_log_rewritten_with_a_valid_chain_disagrees_with_the_registry(env):
    _freeze(env)
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    log = ub.default_audit_log(env["ledger"])
    started, rec = ub.read_audit_log(log)
    log.unlink()
    ub.audit.head_path(log).unlink()
    for r in (started, rec):
        r.pop("prev_sha256")
    rec["result"]["signal_box"]["events"] = 0
    for r in (started, rec):
        ub.append_audit_record(log, r)  # a rewrite that recomputes the chain and the head
    with pytest.raises(ub.AuditLogError, match="recorded differently in .*: one of them was edited"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)


# ----------------------------------------------------------------------------------------
def _bad_spill_list(path: Path, spills) -> Path:
    path.write_text(yaml.safe_dump({"schema_version": 1, "spills": [
        {"run": r, "spill": s, "reasons": ["test"]} for r, s in spills]}))
    return path


def test_the_frozen_bad_spill_list_is_applied_by_unblind(env):
    """A data-quality list is part of the analysis: frozen by content, applied by unblind."""
    bad = write_data(env["tmp"] / "data" / "run7_spill2.root", 1000, 50, spill=2)
    listed = _bad_spill_list(env["tmp"] / "bad_spills.yaml", [(7, 2)])
    ledger = ub.freeze(env["ledger"], processor=PROC, calib_tag=TAG, files=[*env["files"], bad],
                       selection=str(env["sel"]), bad_spills=listed)
    assert ledger["state"]["bad_spills"]["spills"] == 1
    res = ub.unblind(env["ledger"], confirm=True)
    exp = expected_counts(env["events"])  # spill 2's 50 events are dropped and not in the MOT
    assert res.observed == exp["signal_box"]
    assert res.record["result"]["n_beam"] == 10 * 210


def test_an_edited_or_missing_bad_spill_list_blocks_unblinding(env):
    listed = _bad_spill_list(env["tmp"] / "bad_spills.yaml", [(7, 2)])
    _freeze(env, bad_spills=listed)
    _bad_spill_list(listed, [(7, 1)])  # now it would drop the spill with the events
    with pytest.raises(BlindingError, match="bad-spill list .* was edited"):
        ub.unblind(env["ledger"], confirm=True, runner=lambda *a: pytest.fail("must not run"))
    listed.unlink()
    with pytest.raises(BlindingError, match="bad-spill list .* is missing"):
        ub.unblind(env["ledger"], confirm=True, runner=lambda *a: pytest.fail("must not run"))


def test_a_run_records_the_content_of_the_bad_spill_list_it_applied(env):
    """The provenance names the list by path and by the SHA-256 of the bytes the run parsed."""
    import hashlib

    from na64reco.runner import RunOptions, run_files
    from na64reco.summary import cutflow_summary, format_summary

    listed = _bad_spill_list(env["tmp"] / "bad_spills.yaml", [(7, 2)])
    out = run_files({"data": [str(f) for f in env["files"]]},
                    RunOptions(PROC, calib_tag=TAG, selection=str(env["sel"]), bad_spills=str(listed),
                               check_cache=False))
    prov = out["data"]["provenance"]
    assert prov.bad_spills == str(listed)
    assert prov.bad_spills_sha256 == hashlib.sha256(listed.read_bytes()).hexdigest()
    assert prov.to_dict()["bad_spills_sha256"] == prov.bad_spills_sha256
    listed_spill = write_data(env["tmp"] / "data" / "run7_spill2.root", 1000, 50, spill=2)
    out = run_files({"data": [str(listed_spill)]},
                    RunOptions(PROC, calib_tag=TAG, selection=str(env["sel"]), bad_spills=str(listed),
                               check_cache=False))
    summary = cutflow_summary(out)
    assert f"(sha256 {prov.bad_spills_sha256[:12]})" in format_summary(summary)
    assert "do not add up" not in format_summary(summary)
    ds = next(iter(summary))
    summary[ds]["provenance"]["events_total"] += 5  # a hand-edited cutflow.json: `na64reco cutflow` says so
    assert "!= " in format_summary(summary) and "WARNING: the events do not add up" in format_summary(summary)


def test_a_bad_spill_list_changed_during_the_unblinding_is_refused(env, monkeypatch):
    """The checks before the run see the frozen list; if the run's own read gives other bytes
    (edited in between), the unblinding fails on the record instead of counting other spills."""
    import na64reco.bad_spills as bs

    listed = _bad_spill_list(env["tmp"] / "bad_spills.yaml", [(7, 2)])
    _freeze(env, bad_spills=listed)
    read = bs.load_bad_spills_hashed
    calls = []

    def edited_after_the_check(p):  # the unblinding's state check reads the frozen list, the run another
        calls.append(p)
        spills, sha = read(p)
        return (spills, sha) if len(calls) == 1 else ({}, sha[::-1])

    monkeypatch.setattr(bs, "load_bad_spills_hashed", edited_after_the_check)
    with pytest.raises(BlindingError, match="changed during the unblinding"):
        ub.unblind(env["ledger"], confirm=True)
    assert len(calls) == 2  # refused at the run's read, before any event
    kinds = [r["kind"] for r in ub.read_audit_log(ub.default_audit_log(env["ledger"]))]
    assert kinds == ["unblinding-started", "unblinding-aborted"]


def test_a_malformed_bad_spill_list_is_refused_at_freeze(env):
    p = env["tmp"] / "bad.yaml"
    p.write_text("spills: [1, 2]\n")
    with pytest.raises(ConfigError, match="schema_version"):
        _freeze(env, bad_spills=p)
    assert not env["ledger"].exists()
