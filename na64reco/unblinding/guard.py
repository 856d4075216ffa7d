"""The unblinding session: the lock beside the ledger and the token bound to an in-memory secret.

:func:`unblinding_session` is the only caller of :func:`na64reco.selection.token._open_session`.
While it is open, the lock file ``.unblinding-<state>.lock`` beside the ledger exists (it
stops a concurrent unblinding of the same frozen state), and so does the data set's lock
in the user's registry, ``<dataset>.lock`` (it stops two different frozen states of the
same data from being unblinded at once, wherever their ledgers sit).  Both hold the user, time,
host, this process's id and the public digest of the token's MAC -- nothing that could
rebuild the token.  When it closes, the secret is forgotten and the lock removed, so
every copy of the token is dead.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import os
import socket
from pathlib import Path

from na64reco.errors import BlindingError
from na64reco.selection.token import _close_session, _open_session, public_digest, unblinding_lock_path


@contextlib.contextmanager
def unblinding_session(ledger_path: str | Path, ledger: dict, dataset_lock: str | Path | None = None,
                       file_locks=()):
    """Lock the frozen state (and the data set, at ``dataset_lock``, and each of its files, at
    ``file_locks``: data sets that share a file are not unblinded at once) and yield the
    :class:`~na64reco.selection.token.UnblindingToken`."""
    state = ledger["state_sha256"]
    token = _open_session(ledger_path, state, ledger["state"]["selection"]["sha256"])
    locks = [(unblinding_lock_path(ledger_path, state), "this frozen state")]
    if dataset_lock is not None:
        locks.append((Path(dataset_lock), "this data set (with any frozen state)"))
    locks += [(Path(lock), "a data set with this file (with any frozen state)") for lock in file_locks]
    held: list[Path] = []
    try:
        for lock, what in locks:
            lock.parent.mkdir(parents=True, exist_ok=True)
            try:
                fh = open(lock, "x")  # one unblinding at a time
            except FileExistsError:
                raise BlindingError(f"an unblinding of {what} is in progress ({lock} exists: "
                                    f"{lock.read_text().strip()}){_died(lock)}") from None
            held.append(lock)
            with fh:
                json.dump({"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                           "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                           "digest": public_digest(token.mac)}, fh)
        yield token
    finally:
        for lock in held:
            lock.unlink(missing_ok=True)
        _close_session(token)


def _died(lock: Path) -> str:
    """The end of the message for an existing ``lock``: whether the process it names is gone."""
    try:
        held = json.loads(lock.read_text())
        pid, host = int(held["pid"]), held["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return "; remove the lock only if that run died"
    if host != socket.gethostname():
        return f"; remove the lock only if that run (on {host}) died"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return (f"; its process {pid} is gone: that run died. Remove the locks naming process {pid} (this one, "
                f"the others in {lock.parent} and the one beside its ledger); the start of that unblinding is on the "
                "record, so the next one needs --force-new --reason")
    except PermissionError:
        pass  # alive, another user's
    return f"; its process {pid} is running"
