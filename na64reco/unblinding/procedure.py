"""``unblind()``: open the signal box of a frozen analysis, once, on the record."""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import secrets
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from na64reco.atomic import check_new_output
from na64reco.atomic import output_dir as staged_output_dir
from na64reco.errors import BlindingError
from na64reco.unblinding.audit import (
    AUDIT_FORMAT,
    _json_default,
    append_to_logs,
    default_audit_log,
    previous_unblinding,
    unfinished_attempts,
)
from na64reco.unblinding.guard import unblinding_session
from na64reco.unblinding.ledger import read_ledger, verify
from na64reco.unblinding.outputs import run_unblinded
from na64reco.unblinding.registry import (
    file_hashes,
    registry_logs,
    unblinded_before,
    user_registry,
)
from na64reco.unblinding.state import dataset_hash


@dataclass
class UnblindingResult:
    """What :func:`unblind` returns: the recorded counts and whether this call ran."""

    record: dict
    ran: bool            # False: the state was unblinded before, ``record`` is that record
    output_dir: Path | None = None
    changed_since: list[str] = field(default_factory=list)  # differences found now (ran=False)

    @property
    def observed(self) -> int:
        return int(self.record["result"]["signal_box"]["events"])


def unblind(ledger_path: str | Path, *, confirm: bool, output_dir: str | Path | None = None,
            audit_log: str | Path | None = None, roots: dict[str, Path] | None = None, runner=None,
            registry: str | Path | None = None, force_new: bool = False, reason: str = "",
            overwrite: bool = False) -> UnblindingResult:
    """Open the signal box of a frozen analysis, once, on the record.

    Refuses (:class:`BlindingError`) without ``confirm``, if the ledger was edited, if an
    audit or registry log fails its hash chain, or if the current state differs from the
    frozen one (each difference is named).  If the frozen state was unblinded before (in
    the log beside the ledger, ``audit_log`` or a registry of its data set), returns that
    record without running (differences found now are listed in ``changed_since``).  If
    the same data set was unblinded with another frozen state that the ledger does not
    supersede, ``force_new`` and a ``reason`` are required.  Otherwise runs the processor
    with a token valid only during this call, writes outputs to ``output_dir`` and appends
    the record to every log.  ``runner(ledger, token, output_dir) -> result`` replaces
    :func:`~na64reco.unblinding.outputs.run_unblinded` (tests).  ``output_dir`` appears whole
    or not at all (:func:`na64reco.atomic.output_dir`); an existing one is refused before the
    box is opened unless ``overwrite``.
    """
    if not confirm:
        raise BlindingError("unblinding opens the signal box for good: confirm with "
                            "--i-understand-this-opens-the-box")
    ledger_path = Path(ledger_path).resolve()
    frozen = read_ledger(ledger_path)
    files = frozen["state"]["files"]
    dataset = dataset_hash(files)
    logs = [default_audit_log(ledger_path)]
    if audit_log is not None and Path(audit_log).resolve() != logs[0]:
        logs.insert(0, Path(audit_log).resolve())
    every_log = logs + registry_logs(dataset, files, registry)
    earlier = previous_unblinding(frozen["state_sha256"], every_log)
    ledger, current, diffs = verify(ledger_path, roots=roots)
    blocking = [d for d in diffs if d.blocking]
    if earlier is not None:  # on the record already: show it, never re-run
        return UnblindingResult(earlier, ran=False, changed_since=[str(d) for d in blocking])
    if blocking:
        raise BlindingError(f"the analysis differs from the frozen state in {ledger_path.name} "
                            f"(frozen {ledger['frozen_at']} by {ledger['frozen_by']}): "
                            + "; ".join(str(d) for d in blocking))
    superseded = {s["state_sha256"] for s in ledger["supersedes"]}
    mine = ledger["state_sha256"]  # (its own died runs: _check_died below; re-running an abort is allowed)
    # (a start without an end of the same data set: the data set's lock below tells whether it is running)
    others = [u for u in unblinded_before(ledger["state"], registry)
              if u["state_sha256"] not in superseded | {mine} and u["ended"]]
    if others and not (force_new and reason.strip()):
        u = others[0]
        raise BlindingError(f"{_overlap(u, ledger_path.name)} unblinded before with another frozen state "
                            f"({u['unblinded_at']} by {u['unblinded_by']}, ledger {u['ledger']}) that this ledger does "
                            "not supersede: use --force-new --reason '...' to record why it is opened again")

    out_dir = Path(output_dir) if output_dir is not None else None
    keep = [ledger_path, *logs, *(f["path"] for f in files)]  # never inside a replaced directory
    if out_dir is not None:
        check_new_output(out_dir, overwrite=overwrite, inputs=keep)  # before the box is opened
    record = {
        "format": AUDIT_FORMAT, "kind": "unblinding", "user": getpass.getuser(),
        "ledger": str(ledger_path), "ledger_sha256": ledger["ledger_sha256"],
        "state_sha256": ledger["state_sha256"], "dataset_sha256": dataset, "file_sha256s": file_hashes(files),
        "processor": ledger["state"]["processor"]["name"],
        "selection_sha256": ledger["state"]["selection"]["sha256"],
        "calib_tag": ledger["state"]["calibration"]["tag"],
        "code_version": ledger["state"]["code"]["version"],
        "git_commit": current["code"].get("git_commit"),
        "supersedes": ledger["supersedes"] + others,
        "reason": ledger.get("reason", ""),
        "attempt": secrets.token_hex(8),  # ties the start of this run to its end
        "registry": str(user_registry(registry)),
        "notes": [str(d) for d in diffs],
        "output_dir": str(out_dir.resolve()) if out_dir else None,
    }
    registries = registry_logs(dataset, files, registry, for_writing=True)
    write_to = ([*logs, registries[0]], registries[1:])  # required; beside the data if possible
    locks = user_registry(registry)
    with unblinding_session(ledger_path, ledger, locks / f"{dataset}.lock",
                            [locks / f"file-{h}.lock" for h in file_hashes(files)]) as token:
        earlier = previous_unblinding(ledger["state_sha256"], every_log)  # again, under the locks
        if earlier is not None:
            return UnblindingResult(earlier, ran=False)
        late = [u for u in unblinded_before(ledger["state"], registry)
                if u["state_sha256"] not in superseded | {mine} and u not in others]
        if late and not (force_new and reason.strip()):  # another frozen state finished while we checked, or died
            u = late[0]
            how = "just unblinded" if u["ended"] else (f"in an unblinding started at {u['unblinded_at']} that never "
                                                        "ended (the process died, or it runs as another user)")
            raise BlindingError(f"{_overlap(u, ledger_path.name)} {how} with another frozen state (ledger "
                                f"{u['ledger']}): use --force-new --reason '...' to open it again")
        record["supersedes"] = record["supersedes"] + late
        # under the locks: a start without an end is a run that died, not one in progress
        died = unfinished_attempts(mine, every_log)
        _check_died(died, force_new, reason)
        if others or late or died:  # opened with --force-new: its reason on the record
            record["reason"] = "; ".join(r for r in (ledger.get("reason", ""), reason) if r)
        record["died_before"] = [{"attempt": d["attempt"], "started_at": d["time_utc"], "user": d["user"]}
                                 for d in died]
        recorded = False
        staging = staged_output_dir(out_dir, overwrite=overwrite, inputs=keep) if out_dir else nullcontext()
        try:
            # on the record before the box opens: a log that cannot be written stops the unblinding here
            # (the logs written before it get the abort), and a run that dies without a trace (SIGKILL, out
            # of memory) leaves this start, which the next unblinding finds (_check_died, unblinded_before)
            append_to_logs(*write_to, {**record, "kind": "unblinding-started", "time_utc": _now()})
            with staging as staged:
                result = (runner or run_unblinded)(ledger, token, staged)
                record = {**record, "time_utc": _now(), "result": result}
                append_to_logs(*write_to, record)  # on the record before anything else can fail
                recorded = True
                if staged is not None:
                    with open(staged / "unblinded_counts.json", "x") as fh:
                        json.dump(record, fh, indent=1, sort_keys=True, default=_json_default)
        except BaseException as exc:  # the box may be partly open: leave a trace, then fail
            if not recorded:  # (with the result if it could not be appended to every log)
                with contextlib.suppress(Exception):  # if this fails too, the start stays unfinished
                    append_to_logs(*write_to, {**record, "kind": "unblinding-aborted", "time_utc": _now(),
                                               "error": f"{type(exc).__name__}: {exc}"})
            raise
    return UnblindingResult(record, ran=True, output_dir=out_dir)


def _overlap(earlier: dict, ledger_name: str) -> str:
    """The subject of a message on an earlier unblinding (:func:`unblinded_before`) of these files."""
    n = earlier["shared_files"]
    return f"the data set of {ledger_name} was" if n is None else f"{n} of the files of {ledger_name} were"


def _check_died(died: list[dict], force_new: bool, reason: str) -> None:
    """Refuse to run again after an unblinding of the same state that died (:func:`unfinished_attempts`)
    unless ``force_new`` with a ``reason``: its box may have been open and its outputs written."""
    if died and not (force_new and reason.strip()):
        d = died[0]
        raise BlindingError(f"an unblinding of this frozen state started at {d['time_utc']} by {d['user']} and never "
                            "ended (the process died: the box may have been open, and outputs may exist in "
                            f"{d.get('output_dir') or 'no output directory'} or a temporary sibling of it): use "
                            "--force-new --reason '...' to run it again on the record")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
