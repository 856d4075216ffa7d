"""The registry of unblindings, keyed by the content of the data set they opened.

Copying a ledger to another directory, deleting the audit log beside it, or freezing
the same data anew elsewhere does not make the data blind again: every unblinding is
also appended to ``<registry>/<dataset sha256>.jsonl`` (hash-chained like an audit log,
:mod:`na64reco.unblinding.audit`), where the data-set hash is the SHA-256 of the sorted
SHA-256s of its files (:func:`~na64reco.unblinding.state.dataset_hash`), so copies and
renames of the files are the same data set.  The registries are

* the user's: ``registry=`` / ``--registry``, else ``$NA64RECO_REGISTRY``, else
  ``$XDG_DATA_HOME/na64reco/unblindings`` (``~/.local/share/na64reco/unblindings``);
* ``.na64reco-unblindings/`` beside the data files, wherever that can be written.

Pointing the registry elsewhere is possible (tests do it) but leaves a trace: the ledger
and every record name the registry they used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from na64reco.unblinding.audit import AuditLogError, find_records, unfinished
from na64reco.unblinding.state import dataset_hash

REGISTRY_ENV = "NA64RECO_REGISTRY"
BESIDE_DATA = ".na64reco-unblindings"
_LOG_NAME = re.compile(r"[0-9a-f]{64}\.jsonl")


def user_registry(registry: str | Path | None = None) -> Path:
    """The user's registry directory (``registry``, ``$NA64RECO_REGISTRY`` or the XDG default)."""
    if registry is not None:
        return Path(registry).expanduser().resolve()
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV]).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "na64reco" / "unblindings"


def registry_logs(dataset_sha256: str, files: list[dict], registry: str | Path | None = None, *,
                  for_writing: bool = False) -> list[Path]:
    """The registry logs of a data set: the user's, and beside the data (existing, or writable
    when ``for_writing``)."""
    dirs = [user_registry(registry)]
    for parent in sorted({Path(f["path"]).parent for f in files}):
        beside = parent / BESIDE_DATA
        if beside.is_dir() or (for_writing and os.access(parent, os.W_OK)):
            dirs.append(beside)
    return [d / f"{dataset_sha256}.jsonl" for d in dict.fromkeys(dirs)]


def file_hashes(files: list[dict]) -> list[str]:
    """The sorted SHA-256s of a data set's files, as the records carry them (``file_sha256s``)."""
    return sorted(f["sha256"] for f in files)


def registry_dir_logs(directory: Path) -> list[Path]:
    """The registry logs in ``directory``: files named ``<64 hex digits>.jsonl`` (a data set's hash), and
    those whose chain head alone is left (a deleted log: reading it is an error, as it must be)."""
    if not directory.is_dir():
        return []
    names = {p.name.removesuffix(".head") for p in directory.iterdir()}
    return [directory / n for n in sorted(names) if _LOG_NAME.fullmatch(n)]


def unblinded_before(state: dict, registry: str | Path | None = None) -> list[dict]:
    """Recorded unblindings of data sharing files with ``state``'s (any frozen state), one per state:
    the same data set, or one with a file more or less (its records' ``file_sha256s``; records written
    before they carried them count for the same data set only), found in every registry log of the
    user's registry and beside ``state``'s files.  An unblinding is a result on the record, an abort
    that carries a result, or a start without an end (a run that died with the box perhaps open).
    ``shared_files``: None for the same data set, else the number of files in common; ``ended``: False
    for a start without an end (running, or died)."""
    dataset = dataset_hash(state["files"])
    mine = set(file_hashes(state["files"]))
    dirs = {log.parent for log in registry_logs(dataset, state["files"], registry)}
    logs = [log for d in sorted(dirs) for log in registry_dir_logs(d)]
    found = find_records(logs, kind=None)  # (every log read once)
    for log, rec in found:  # a registry log holds the records of the data set it is named after
        if rec.get("dataset_sha256") != log.stem:
            raise AuditLogError(f"registry log {log} holds a record of data set {rec.get('dataset_sha256')!r}: "
                                "not written by na64reco (a registry log is named after its records' data set)")
    records = [rec for _, rec in found if rec.get("kind", "unblinding") == "unblinding"
               or (rec.get("kind") == "unblinding-aborted" and "result" in rec)] + unfinished(found)
    by_state = {}
    for rec in reversed(records):
        shared = None if rec.get("dataset_sha256") == dataset else len(mine & set(rec.get("file_sha256s") or ()))
        if shared != 0:
            by_state[rec["state_sha256"]] = (rec, shared)
    return [{"ledger": r["ledger"], "state_sha256": s, "unblinded_at": r["time_utc"], "unblinded_by": r["user"],
             "shared_files": shared, "ended": r.get("kind") != "unblinding-started"}
            for s, (r, shared) in by_state.items()]
