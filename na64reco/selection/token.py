"""The unblinding token: permission to open the signal box, valid only while the
``na64reco unblind`` that issued it is running.

A token names the frozen state and the selection file it opens (SHA-256s), a random run
nonce, the process that issued it, and ``mac = HMAC-SHA256(secret, state|selection|nonce)``.
The 32-byte secret is drawn by the running unblinding, kept in that process's memory
(:data:`_SESSIONS`), and reaches the executor's workers only inside the tasks that this
unblinding ships: pickling a token at any other moment drops the secret.  At every use
(:meth:`UnblindingToken.check`):

* in the issuing process, its session must be open in memory and the MAC must match;
* in another process (a futures or dask worker), the token must carry the secret, the
  MAC must match, the lock file beside the ledger must hold the MAC's public digest and
  name the issuing process, and that process must be alive and an ancestor of this one.

So files on disk alone -- a pickled token, a hand-made lock -- open nothing, and a
token dies with the unblinding that issued it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from na64reco.errors import BlindingError

_SESSIONS: dict[str, bytes] = {}  # nonce -> secret, while an unblinding runs in this process
_ISSUE = object()


def _mac(secret: bytes, state: str, selection: str, nonce: str) -> str:
    return hmac.new(secret, f"{state}|{selection}|{nonce}".encode(), hashlib.sha256).hexdigest()


def public_digest(mac: str) -> str:
    """What the lock file may show of a token's MAC (useless to rebuild the token)."""
    return hashlib.sha256(f"na64reco-unblinding-lock|{mac}".encode()).hexdigest()


def unblinding_lock_path(ledger_path: str | Path, state_sha256: str) -> Path:
    """The lock file that exists while ``na64reco unblind`` runs for one frozen state."""
    return Path(ledger_path).resolve().with_name(f".unblinding-{state_sha256[:16]}.lock")


class UnblindingToken:
    """Permission to open the signal box of one frozen selection, during one unblinding.

    Issued only by ``na64reco.unblinding`` (:func:`_open_session`); calling the class, or
    :meth:`from_ledger`, raises :class:`BlindingError`.
    """

    __slots__ = ("state_sha256", "selection_sha256", "ledger", "nonce", "mac", "origin_pid", "_secret")

    def __init__(self, *args, _key=None):
        if _key is not _ISSUE:
            raise BlindingError("an UnblindingToken cannot be made by hand: it is issued by "
                                "`na64reco unblind` for a frozen analysis")
        for name, value in zip(self.__slots__, args, strict=True):
            object.__setattr__(self, name, value)

    def __init_subclass__(cls, **kwargs):
        raise BlindingError("UnblindingToken cannot be subclassed: a subclass could redefine its check")

    def __setattr__(self, name, value):
        raise BlindingError("an UnblindingToken is immutable")

    def __reduce__(self):  # the secret travels only with tasks shipped by the running unblinding
        secret = _SESSIONS.get(self.nonce) if os.getpid() == self.origin_pid else None
        return (_rebuild_token, (*[getattr(self, n) for n in self.__slots__[:-1]], secret))

    @classmethod
    def from_ledger(cls, ledger_path, selection=None) -> UnblindingToken:
        raise BlindingError(f"ledger {ledger_path}: tokens are issued only by na64reco.unblinding.unblind() "
                            "(na64reco unblind), after the frozen state was verified and the unblinding confirmed")

    def check(self, selection) -> None:
        """Raise unless this token opens ``selection``'s file content now (every use, also on workers)."""
        if self.selection_sha256 != selection.sha256:
            raise BlindingError(
                f"the unblinding token was issued for a selection with SHA-256 {self.selection_sha256[:12]}..., "
                f"not for {selection.source} ({selection.sha256[:12]}...): the frozen selection was changed")
        here = os.getpid() == self.origin_pid
        secret = _SESSIONS.get(self.nonce) if here else self._secret
        if secret is None:
            raise BlindingError(f"unblinding token for ledger {self.ledger} used outside a running "
                                "`na64reco unblind` (a token rebuilt from a pickle or a file opens nothing)")
        expected = _mac(secret, self.state_sha256, self.selection_sha256, self.nonce)
        if not hmac.compare_digest(expected, self.mac):
            raise BlindingError(f"unblinding token for ledger {self.ledger} does not match the secret of "
                                "its unblinding: refused")
        if not here:
            _check_worker(self)

    def __repr__(self) -> str:
        return (f"UnblindingToken(state={self.state_sha256[:12]}..., selection={self.selection_sha256[:12]}..., "
                f"ledger={self.ledger!r})")


def _rebuild_token(*fields):
    return UnblindingToken(*fields, _key=_ISSUE)


def _check_worker(token: UnblindingToken) -> None:
    """A worker accepts a token only while the issuing unblinding, its ancestor, holds the lock."""
    import psutil

    lock = unblinding_lock_path(token.ledger, token.state_sha256)
    try:
        info = json.loads(lock.read_text())
        pid, digest = int(info["pid"]), info["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BlindingError(f"unblinding token for ledger {token.ledger} used outside a running "
                            f"`na64reco unblind` ({lock} is missing or not an unblinding lock)") from None
    if pid != token.origin_pid or not hmac.compare_digest(digest, public_digest(token.mac)):
        raise BlindingError(f"unblinding token for ledger {token.ledger}: {lock} belongs to another unblinding")
    try:
        ancestors = {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        ancestors = set()
    if pid not in ancestors:
        raise BlindingError(f"unblinding token for ledger {token.ledger} used in process {os.getpid()}, which "
                            f"is not a worker of the unblinding (pid {pid}) that issued it; unblinding runs on "
                            "local workers only (iterative, futures or a local dask cluster)")


def _open_session(ledger_path: str | Path, state_sha256: str, selection_sha256: str) -> UnblindingToken:
    """Draw a secret, keep it in memory and issue the token (``na64reco.unblinding`` only)."""
    nonce, secret = secrets.token_hex(16), secrets.token_bytes(32)
    _SESSIONS[nonce] = secret
    mac = _mac(secret, state_sha256, selection_sha256, nonce)
    return UnblindingToken(state_sha256, selection_sha256, str(Path(ledger_path).resolve()), nonce, mac,
                           os.getpid(), None, _key=_ISSUE)


def _close_session(token: UnblindingToken) -> None:
    """Forget the secret: the token (and every copy of it) opens nothing any more."""
    _SESSIONS.pop(token.nonce, None)
