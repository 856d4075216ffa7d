"""Fifth blinding review: holes in "unblind once, on the record" and in reading a ledger.

* an audit log that could not be written was found only after the box was open: the run's result
  was computed, the record failed, and the next ``unblind`` ran as if for the first time;
* a run killed without a chance to write (SIGKILL, out of memory) left its outputs and no record;
* the registry knew a data set only by its exact set of files: one file more or less was "new";
* a ledger with its hashes recomputed but a key missing or of another type was an internal error.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal

import pytest

import na64reco.unblinding as ub
from na64reco.errors import BlindingError
from na64reco.unblinding.state import state_hash

pytest.importorskip("processors")
import test_unblinding as tu  # noqa: E402
from test_unblinding import PROC, TAG, _fake_run, _freeze, _never, write_data  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The temporary calib/, selection, code tree, registry and data files of test_unblinding.py."""
    return tu.env.__wrapped__(tmp_path, monkeypatch)


def _kinds(log):
    return [r["kind"] for r in ub.read_audit_log(log)]


def test_an_audit_log_that_cannot_be_written_stops_the_unblinding_before_the_box_opens(env):
    """(the record failed after the unblinded run, and no aborted record was left)"""
    _freeze(env)
    blocker = env["tmp"] / "a_file"
    blocker.write_text("")
    bad_log = blocker / "audit.jsonl"  # its directory is a file
    with pytest.raises(ub.AuditLogError, match=f"cannot write the audit log {bad_log}"):
        ub.unblind(env["ledger"], confirm=True, audit_log=bad_log, runner=_never)
    res = ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))  # nothing was opened: it runs
    assert res.ran and res.observed == 3


def test_a_result_that_could_not_be_recorded_everywhere_is_recorded_as_aborted(env, monkeypatch):
    _freeze(env)
    write = ub.audit.append_audit_record
    registry_log = None

    def fails_for_the_result_in_the_registry(path, record):
        nonlocal registry_log
        if record["kind"] == "unblinding" and path.parent == env["registry"]:
            registry_log = path
            raise OSError(28, "No space left on device")
        return write(path, record)

    monkeypatch.setattr(ub.audit, "append_audit_record", fails_for_the_result_in_the_registry)
    with pytest.raises(ub.AuditLogError, match="No space left on device"):
        ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    assert _kinds(registry_log) == ["unblinding-started", "unblinding-aborted"]
    aborted = ub.read_audit_log(registry_log)[1]
    assert aborted["result"]["signal_box"]["events"] == 3 and "No space left" in aborted["error"]
    monkeypatch.setattr(ub.audit, "append_audit_record", write)
    again = ub.unblind(env["ledger"], confirm=True, runner=_never)  # the log beside the ledger has it
    assert not again.ran and again.observed == 3


def _killed_unblinding(ledger, output):
    """In a forked child: an unblinding whose process is killed (SIGKILL) while the box is open."""

    def killed(_ledger, _token, staged):
        (staged / "hists.root").write_text("unblinded histograms")
        os.kill(os.getpid(), signal.SIGKILL)

    ub.unblind(ledger, confirm=True, runner=killed, output_dir=output)


def _kill_an_unblinding(env) -> None:
    """The ledger's unblinding killed while its box is open, and the locks it left removed (as their
    message says)."""
    child = multiprocessing.get_context("fork").Process(target=_killed_unblinding,
                                                        args=(env["ledger"], env["tmp"] / "out"))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    for lock in [*env["ledger"].parent.glob(".unblinding-*.lock"), *env["registry"].glob("*.lock")]:
        lock.unlink()


def test_a_killed_unblinding_is_on_the_record_and_is_not_run_again_silently(env):
    """(a SIGKILL during the run left unblinded outputs and no record; with the locks removed, as the
    message says, the next unblinding was recorded as the first)"""
    ledger = _freeze(env)
    child = multiprocessing.get_context("fork").Process(target=_killed_unblinding,
                                                        args=(env["ledger"], env["tmp"] / "out"))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    log = ub.default_audit_log(env["ledger"])
    assert _kinds(log) == ["unblinding-started"]
    locks = [*env["ledger"].parent.glob(".unblinding-*.lock"), *env["registry"].glob("*.lock")]
    assert len(locks) == 2 + len(env["files"])  # the state's, the data set's and one per file
    with pytest.raises(BlindingError, match=rf"in progress .* its process {child.pid} is gone: that run died\. "
                                            rf"Remove the locks naming process {child.pid}"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)
    for lock in locks:
        lock.unlink()
    with pytest.raises(BlindingError, match=f"started at .* and never ended .* may exist in {env['tmp'] / 'out'} "
                                            "or a temporary sibling .*--force-new --reason"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)
    # another frozen state of the same files, and a new freeze, see the start too
    other = env["tmp"] / "other" / "l.json"
    kw = dict(processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]))
    with pytest.raises(BlindingError, match="these files were unblinded before .*a start without an end"):
        ub.freeze(other, options={"chunksize": 1000}, **kw)
    res = ub.unblind(env["ledger"], runner=_fake_run(3), confirm=True, force_new=True,
                     reason="the first run was killed by the batch system")
    (died,) = res.record["died_before"]
    assert died["attempt"] == ub.read_audit_log(log)[0]["attempt"] and died["attempt"] != res.record["attempt"]
    assert "killed by the batch system" in res.record["reason"]
    assert _kinds(log) == ["unblinding-started", "unblinding-started", "unblinding"]
    assert res.record["state_sha256"] == ledger["state_sha256"]


@pytest.mark.parametrize("files, shared", [(lambda f, extra: [*f, extra], 2), (lambda f, extra: f[:1], 1)])
def test_a_data_set_with_a_file_more_or_less_is_not_a_new_data_set(env, files, shared):
    """(the registry was keyed on the exact set of files: adding or removing one made the re-tuned
    selection's freeze and unblinding look like the first of a new data set)"""
    _freeze(env)
    first = ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    extra = write_data(env["tmp"] / "data" / "run7_c.root", 210, 50)
    env["sel"].write_text(env["sel"].read_text().replace("max: 20\n", "max: 21\n", 1))
    other = env["tmp"] / "retuned" / "l.json"
    kw = dict(processor=PROC, calib_tag=TAG, files=files(env["files"], extra), selection=str(env["sel"]))
    with pytest.raises(BlindingError, match=f"{shared} of these files were unblinded before"):
        ub.freeze(other, **kw)
    new = ub.freeze(other, force_new=True, reason="a file more after the unblinding", **kw)
    assert [(s["state_sha256"], s["shared_files"]) for s in new["supersedes"]] == [
        (first.record["state_sha256"], shared)]
    assert ub.unblind(other, confirm=True, runner=_fake_run(4)).ran  # supersedes it: on the record


def test_an_overlapping_data_set_frozen_before_the_unblinding_needs_a_reason(env):
    """Two ledgers frozen before either was opened, of data sets sharing files: the second unblinding
    needs --force-new --reason, like two ledgers of one data set."""
    extra = write_data(env["tmp"] / "data" / "run7_c.root", 210, 50)
    _freeze(env)
    other = env["tmp"] / "wider" / "l.json"
    ub.freeze(other, processor=PROC, calib_tag=TAG, files=[*env["files"], extra], selection=str(env["sel"]))
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    with pytest.raises(BlindingError, match="2 of the files of l.json were unblinded before with another frozen"):
        ub.unblind(other, confirm=True, runner=_never)
    res = ub.unblind(other, confirm=True, runner=_fake_run(5), force_new=True, reason="one more run")
    assert res.ran and [s["shared_files"] for s in res.record["supersedes"]] == [2]


def _rehashed(ledger: dict) -> dict:
    ledger["state_sha256"] = state_hash(ledger["state"])
    ledger["ledger_sha256"] = state_hash({k: v for k, v in ledger.items() if k != "ledger_sha256"})
    return ledger


@pytest.mark.parametrize("edit, key", [
    (lambda lg: lg["state"].pop("files"), "'state.files' is missing"),
    (lambda lg: lg["state"]["calibration"].pop("tag"), "'state.calibration.tag' is missing"),
    (lambda lg: lg.pop("supersedes"), "'supersedes' is missing"),
    (lambda lg: lg["state"].update(files="a.root"), "'state.files' is a str, expected list"),
    (lambda lg: lg["state"].update(files=[]), "'state.files' is empty"),
    (lambda lg: lg["state"]["files"][0].update(sha256=None), "'state.files.0.sha256' is a NoneType"),
    (lambda lg: lg["state"].update(bad_spills={"path": None}), "'state.bad_spills.path' is a NoneType"),
    (lambda lg: lg["supersedes"].append("x"), "'supersedes.0' is a str, expected dict"),
    (lambda lg: lg["state"]["calibration"].pop("root"), "'state.calibration.root' is missing"),
    (lambda lg: lg["state"]["code"].pop("source_files"), "'state.code.source_files' is missing"),
])
def test_a_ledger_of_another_form_is_refused_naming_the_key(env, edit, key):
    """(with its hashes recomputed, a missing key was 'internal error, a bug in na64reco (KeyError)', and an
    empty file list passed verify and failed only in the run, after the token was issued)"""
    ledger = _freeze(env)
    edit(ledger)
    env["ledger"].write_text(json.dumps(_rehashed(ledger)))
    with pytest.raises(BlindingError, match=f"ledger {env['ledger']}: key {key}"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)
    assert not ub.default_audit_log(env["ledger"]).exists()


# ---- the review of these fixes -----------------------------------------------------------------
def test_a_died_run_blocks_another_frozen_state_of_the_same_files(env):
    """(a start without an end blocked only its own state: a second ledger frozen before the death was
    unblinded without --force-new and recorded no supersedes)"""
    _freeze(env)
    other = env["tmp"] / "other" / "l.json"
    ub.freeze(other, processor=PROC, calib_tag=TAG, files=env["files"], selection=str(env["sel"]),
              options={"chunksize": 1000})
    _kill_an_unblinding(env)
    with pytest.raises(BlindingError, match="the data set of l.json was in an unblinding started at .* never "
                                            "ended .*--force-new --reason"):
        ub.unblind(other, confirm=True, runner=_never)
    res = ub.unblind(other, confirm=True, runner=_fake_run(2), force_new=True, reason="the first died")
    assert [(s["state_sha256"], s["ended"]) for s in res.record["supersedes"]] == [
        (ub.read_ledger(env["ledger"])["state_sha256"], False)]
    assert res.record["reason"] == "the first died"


def test_a_start_that_reached_only_some_logs_is_closed_by_an_abort(env, monkeypatch):
    """(a registry that refused the start left it dangling in the log beside the ledger: the next
    unblinding was told the process had died)"""
    _freeze(env)
    write = ub.audit.append_audit_record

    def registry_full(path, record):
        if record["kind"] == "unblinding-started" and path.parent == env["registry"]:
            raise OSError(122, "Disk quota exceeded")
        return write(path, record)

    monkeypatch.setattr(ub.audit, "append_audit_record", registry_full)
    with pytest.raises(ub.AuditLogError, match="Disk quota exceeded"):
        ub.unblind(env["ledger"], confirm=True, runner=_never)
    assert _kinds(ub.default_audit_log(env["ledger"])) == ["unblinding-started", "unblinding-aborted"]
    monkeypatch.setattr(ub.audit, "append_audit_record", write)
    assert ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3)).ran


def test_registry_logs_deleted_or_foreign(env):
    """(a registry log deleted with its head left was not seen by the scan of the registry; a stray
    notes.jsonl with a bad head blocked every unblinding)"""
    (env["registry"]).mkdir(parents=True, exist_ok=True)
    (env["registry"] / "notes.jsonl").write_text("not a log\n")
    _freeze(env)
    first = ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    log = env["registry"] / f"{first.record['dataset_sha256']}.jsonl"
    log.unlink()
    for beside in env["tmp"].glob("data/.na64reco-unblindings/*.jsonl"):
        beside.unlink()
    extra = write_data(env["tmp"] / "data" / "run7_c.root", 210, 50)
    with pytest.raises(ub.AuditLogError, match=f"{log.name} was deleted: its chain head"):
        ub.freeze(env["tmp"] / "wider" / "l.json", processor=PROC, calib_tag=TAG, files=[*env["files"], extra],
                  selection=str(env["sel"]))


def _waits_in_child(ledger, ready, release):
    """In a forked child: an unblinding whose runner waits until ``release`` is set."""

    def waits(*_):
        ready.set()
        release.wait(60)
        return {"signal_box": {"events": 1}, "sidebands": {}, "n_beam": 1}

    ub.unblind(ledger, confirm=True, runner=waits)


def test_data_sets_sharing_a_file_are_not_unblinded_at_once(env):
    """(overlapping data sets had different locks: the second was told the first had died, and with
    --force-new ran while the first still ran)"""
    extra = write_data(env["tmp"] / "data" / "run7_c.root", 210, 50)
    _freeze(env)
    other = env["tmp"] / "wider" / "l.json"
    ub.freeze(other, processor=PROC, calib_tag=TAG, files=[env["files"][1], extra], selection=str(env["sel"]))
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_waits_in_child, args=(env["ledger"], ready, release))
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(BlindingError, match="an unblinding of a data set with this file .* is in progress .*"
                                                f"its process {child.pid} is running"):
            ub.unblind(other, confirm=True, runner=_never, force_new=True, reason="should wait")
    finally:
        release.set()
        child.join(60)
    assert child.exitcode == 0
    res = ub.unblind(other, confirm=True, runner=_fake_run(2), force_new=True, reason="the other one shares b")
    assert [s["shared_files"] for s in res.record["supersedes"]] == [1]


def test_an_append_killed_before_its_chain_head_is_read_as_appended(env):
    """(a kill between a log's line and its head blocked every later freeze and unblind: 'chain head missing'
    or 'record added by hand')"""
    _freeze(env)
    log = ub.default_audit_log(env["ledger"])
    ub.unblind(env["ledger"], confirm=True, runner=_fake_run(3))
    head = ub.audit.head_path(log)
    two_records = head.read_text()
    started, result = ub.read_audit_log(log)
    head.write_text(two_records.replace('"records": 2', '"records": 1').replace(
        json.loads(two_records)["last_sha256"], ub.audit._sha(ub.audit.canonical_line(started))))
    assert ub.read_audit_log(log) == [started, result]  # the second line's append was cut before its head
    head.unlink()
    log.write_text(ub.audit.canonical_line(started) + "\n")  # the first append of a new log, head not written
    assert ub.read_audit_log(log) == [started]
    log.write_text(log.read_text() + ub.audit.canonical_line(result) + "\n")  # two lines and no head: refused
    with pytest.raises(ub.AuditLogError, match="chain head .* is missing"):
        ub.read_audit_log(log)


def test_an_end_written_outside_the_starts_log_does_not_close_a_died_run(env, tmp_path):
    """(an abort record for the dead attempt, put in a throw-away --audit-log or in a new registry log
    named 64 zeros, let the dead state re-run, or the dead files be frozen again, with no reason)"""
    _freeze(env)
    _kill_an_unblinding(env)
    (started,) = ub.read_audit_log(ub.default_audit_log(env["ledger"]))
    forged = {k: v for k, v in started.items() if k != "prev_sha256"} | {"kind": "unblinding-aborted"}
    throwaway = tmp_path / "elsewhere" / "audit.jsonl"
    ub.append_audit_record(throwaway, forged)
    with pytest.raises(BlindingError, match="started at .* and never ended"):
        ub.unblind(env["ledger"], confirm=True, audit_log=throwaway, runner=_never)
    ub.append_audit_record(env["registry"] / f"{'0' * 64}.jsonl", forged)
    with pytest.raises(ub.AuditLogError, match=f"registry log .*{'0' * 64}.jsonl holds a record of data set"):
        ub.freeze(env["tmp"] / "again" / "l.json", processor=PROC, calib_tag=TAG, files=env["files"],
                  selection=str(env["sel"]), options={"chunksize": 1000})
