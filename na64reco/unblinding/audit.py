"""Hash-chained, append-only logs of unblindings (the audit logs and the registry's logs).

Each line is the canonical JSON of one record.  Every record carries ``prev_sha256``: the
SHA-256 of the previous line or, for the first record of a log, the ``ledger_sha256`` of
the ledger it records.  A *chain head* beside the log (``<log>.head``, replaced
atomically after every append) holds the number of records and the SHA-256 of the last
line.  Reading a log checks the whole chain against its head, so an edited, removed,
truncated or deleted record is refused with a message naming the file and the record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from na64reco.errors import BlindingError

AUDIT_FORMAT = "na64reco-unblinding"
HEAD_FORMAT = "na64reco-audit-head"
DEFAULT_AUDIT_NAME = "unblinding_audit.jsonl"


class AuditLogError(BlindingError):
    """An audit log does not match its hash chain or its chain head."""


def default_audit_log(ledger_path: str | Path) -> Path:
    return Path(ledger_path).resolve().parent / DEFAULT_AUDIT_NAME


def head_path(log: str | Path) -> Path:
    log = Path(log)
    return log.with_name(log.name + ".head")


def _json_default(obj):
    if isinstance(obj, set):
        return sorted(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def canonical_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=_json_default)


def _sha(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def _read_head(log: Path) -> dict:
    head = head_path(log)
    try:
        data = json.loads(head.read_text())
        if data.get("format") != HEAD_FORMAT:
            raise ValueError
        return {"records": int(data["records"]), "last_sha256": str(data["last_sha256"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise AuditLogError(f"chain head {head} of audit log {log} is missing or unreadable: the log "
                            "cannot be verified (restore both files)") from None


def read_audit_log(path: str | Path) -> list[dict]:
    """The records of a log after checking its hash chain and head (a log never written has none)."""
    path = Path(path)
    if not path.exists():
        if head_path(path).exists():
            n = _read_head(path)["records"]
            raise AuditLogError(f"audit log {path} was deleted: its chain head {head_path(path)} records "
                                f"{n} record(s); restore the log, its records cannot be re-created")
        return []
    text = path.read_text()
    if not text and not head_path(path).exists():
        return []
    lines = text.split("\n")
    # an append killed between its line and its head (SIGKILL, a power cut: what the start record is for)
    # leaves one whole, chained line more than the head counts: read as appended, and the next append
    # writes the head; anything else (a line cut short, a broken chain, more lines) stays an error
    first = not head_path(path).exists() and len(lines) == 2
    head = {"records": 0, "last_sha256": ""} if first else _read_head(path)
    if lines[-1]:
        raise AuditLogError(f"audit log {path} record {len(lines)} is cut short: the log was truncated or edited")
    records, prev = [], None
    for i, line in enumerate(lines[:-1], 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise AuditLogError(f"audit log {path} record {i} is not JSON: the log was edited") from None
        expected = prev if prev is not None else (rec.get("ledger_sha256") if isinstance(rec, dict) else None)
        if not isinstance(rec, dict) or rec.get("prev_sha256") != expected or canonical_line(rec) != line:
            where = "the first record was removed, or this one edited" if i == 1 else \
                f"record {i - 1} or {i} was edited, or records between them removed"
            raise AuditLogError(f"audit log {path} record {i}: the hash chain is broken ({where})")
        records.append(rec)
        prev = _sha(line)
    n = len(records)
    if n < head["records"]:
        raise AuditLogError(f"audit log {path} holds {n} record(s), its chain head {head_path(path).name} "
                            f"{head['records']}: record {n + 1} onwards was removed")
    torn = n == head["records"] + 1 and (n == 1 or _sha(lines[n - 2]) == head["last_sha256"])
    if torn:
        return records
    if n > head["records"]:
        raise AuditLogError(f"audit log {path} record {head['records'] + 1} was added by hand "
                            f"(the chain head {head_path(path).name} records {head['records']})")
    if n and prev != head["last_sha256"]:
        raise AuditLogError(f"audit log {path} record {n} was edited (it does not match the chain head "
                            f"{head_path(path).name})")
    return records


def _write_head(log: Path, records: int, last_sha256: str) -> None:
    head = head_path(log)
    tmp = head.with_name(f".{head.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": HEAD_FORMAT, "records": records, "last_sha256": last_sha256}) + "\n")
    os.replace(tmp, head)  # atomic: the head is always a complete file


def append_audit_record(path: str | Path, record: dict) -> dict:
    """Verify the log, append ``record`` chained to its last line, update the head; return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # append mode only: nothing is ever rewritten
        fcntl.flock(fh, fcntl.LOCK_EX)  # one writer at a time (released when closed)
        records = read_audit_log(path)
        prev = _sha(canonical_line(records[-1])) if records else record["ledger_sha256"]
        rec = {**record, "prev_sha256": prev}
        line = canonical_line(rec)
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
        _write_head(path, len(records) + 1, _sha(line))
    return rec


def append_to_logs(required: Iterable[Path], optional: Iterable[Path], record: dict) -> None:
    """Append ``record`` to every ``required`` log (an :class:`AuditLogError` naming a log that cannot
    be written), and to the ``optional`` ones where they can be written (a warning otherwise: e.g. a
    registry beside read-only data)."""
    for log in dict.fromkeys(required):
        try:
            append_audit_record(log, record)
        except OSError as exc:
            raise AuditLogError(f"cannot write the audit log {log}: {exc.strerror or exc}") from None
    for log in dict.fromkeys(optional):
        try:
            append_audit_record(log, record)
        except BlindingError:
            raise
        except OSError as exc:
            warnings.warn(f"could not append to {log}: {exc}", stacklevel=2)


def find_records(logs: Iterable[str | Path], *, kind: str | None = "unblinding", state_sha256: str | None = None,
                 dataset_sha256: str | None = None) -> list[tuple[Path, dict]]:
    """``(log, record)`` of every record of ``kind`` (None: any) matching the given hashes, in all ``logs``."""
    out = []
    for log in logs:
        for rec in read_audit_log(log):
            if rec.get("format") != AUDIT_FORMAT or (kind is not None and rec.get("kind", "unblinding") != kind):
                continue
            if state_sha256 is not None and rec.get("state_sha256") != state_sha256:
                continue
            if dataset_sha256 is not None and rec.get("dataset_sha256") != dataset_sha256:
                continue
            out.append((Path(log), rec))
    return out


def _identity(rec: dict) -> str:
    return canonical_line({k: v for k, v in rec.items() if k != "prev_sha256"})


def unfinished_attempts(state_sha256: str, logs: Iterable[str | Path]) -> list[dict]:
    """The ``unblinding-started`` records of ``state_sha256`` in ``logs`` whose attempt has no end there
    (no ``unblinding`` or ``unblinding-aborted`` record of the same ``attempt``): unblindings that died
    (SIGKILL, out of memory, a power cut) with the box perhaps open and outputs perhaps written."""
    return unfinished(find_records(logs, kind=None, state_sha256=state_sha256))


def unfinished(found: list[tuple[Path, dict]]) -> list[dict]:
    """The ``unblinding-started`` records among ``found`` ``(log, record)`` whose ``attempt`` (random,
    unique) has no end in a log that holds the start (an end written anywhere else, e.g. a log made
    for it, does not close it): :func:`unfinished_attempts` on records already read."""
    ended = {(log, rec.get("attempt")) for log, rec in found
             if rec.get("kind") in ("unblinding", "unblinding-aborted")}
    started = {}
    for log, rec in found:
        if rec.get("kind") == "unblinding-started":
            started.setdefault(rec.get("attempt"), (rec, []))[1].append(log)
    return [rec for attempt, (rec, logs) in started.items() if not any((log, attempt) in ended for log in logs)]


def previous_unblinding(state_sha256: str, logs: Iterable[str | Path]) -> dict | None:
    """The recorded unblinding of ``state_sha256`` in ``logs``, if any; copies that disagree are refused."""
    found = find_records(logs, state_sha256=state_sha256)
    if not found:
        return None
    first_log, first = found[0]
    for log, rec in found[1:]:
        if _identity(rec) != _identity(first):
            raise AuditLogError(f"the unblinding of state {state_sha256[:12]} is recorded differently in "
                                f"{first_log} and {log}: one of them was edited")
    return first
