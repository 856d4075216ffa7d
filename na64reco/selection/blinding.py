"""The blinding rule.

For *data* (raw files without truth), every event that is not provably outside the
protected region of its setup (``selections/blinding.yaml``) or the selection's signal
box (a NaN box variable counts as inside) is removed right after the cuts are
evaluated, before any histogram, N-1 plot, count, log line or output sees it, unless it
lies in one of the setup's ``visible_controls`` (events that clearly fail a veto).
So events passing every cut inside the box never reach an output, and their number
cannot be obtained by subtraction either: they are hidden together with the box
events that fail other cuts.  The cut-flow's signal-box row reads ``"blinded"``
(see :class:`~na64reco.selection.cuts.CutflowTable`).

The rule depends only on the events, the protected regions and the selection's box:
not on the cut order in the YAML, not on any option.  The box can be opened only with an
:class:`UnblindingToken`, which cannot be built by hand: it is issued by
:meth:`UnblindingToken.from_ledger` after a registered ledger validator (the frozen-
analysis ledger of ``na64reco freeze``/``unblind``) has accepted the request, and it
is bound to one selection file (its SHA-256).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from na64reco.config import load_yaml
from na64reco.errors import BlindingError
from na64reco.resources import selections_dir
from na64reco.selection.cuts import outside_mask, region_mask
from na64reco.selection.schema import Region, Selection, parse_region

PROTECTED_FILE = "blinding.yaml"


@dataclass(frozen=True)
class Protection:
    """What stays hidden in the data of one setup."""

    protected: Region
    visible_controls: tuple[Region, ...]


@functools.lru_cache(maxsize=4)
def load_protection(setup: str, path: str | None = None) -> Protection:
    """The protected region and visible controls of ``setup`` (``selections/blinding.yaml``)."""
    node = load_yaml(path or selections_dir() / PROTECTED_FILE, schema_version=1)
    entry = node.node("setups").node(setup)
    protected = parse_region(entry.node("protected"), setup, "protected")
    controls = tuple(parse_region(c, setup, f"control{i}") for i, c in
                     enumerate(entry.nodes("visible_controls") if entry.has("visible_controls") else []))
    return Protection(protected, controls)


@dataclass(frozen=True)
class BlindingDecision:
    """What blinding did to one chunk (never shown for data: it would reveal the box)."""

    keep: np.ndarray  # events that may be used further
    blinded: bool     # True for data that was not unblinded


def blind_mask(reco: ak.Array, masks: dict[str, np.ndarray], selection: Selection) -> np.ndarray:
    """Data events to hide: not provably outside the protected region or the selection's
    box, and not in a visible control region.  (``masks`` is accepted for symmetry with
    the cut evaluation; the rule deliberately does not depend on the editable cuts.)"""
    protection = load_protection(selection.setup)
    inside = ~outside_mask(reco, protection.protected) | ~outside_mask(reco, selection.signal_box)
    control = np.zeros(len(reco), bool)
    for region in protection.visible_controls:
        control |= region_mask(reco, region)
    return inside & ~control


def apply_blinding(reco: ak.Array, masks: dict[str, np.ndarray], selection: Selection, *,
                   is_data: bool, token: UnblindingToken | None = None) -> BlindingDecision:
    """Decide which events survive blinding (all of them for simulation)."""
    n = len(reco)
    if not is_data:
        return BlindingDecision(np.ones(n, bool), False)
    if token is not None:
        token.check(selection)
        return BlindingDecision(np.ones(n, bool), False)
    return BlindingDecision(~blind_mask(reco, masks, selection), True)


# ----------------------------------------------------------------------------------------
_LEDGER_VALIDATOR: Callable[[str, Selection], dict] | None = None
_ISSUE = object()


def register_ledger_validator(validator: Callable[[str, Selection], dict]) -> None:
    """Install the function that checks a frozen-analysis ledger.

    ``validator(ledger_path, selection)`` must raise :class:`BlindingError` unless the
    ledger records ``selection`` (by its SHA-256) as frozen and allowed to be unblinded;
    it returns the ledger entry (a dict) that authorises the unblinding.
    """
    global _LEDGER_VALIDATOR
    _LEDGER_VALIDATOR = validator


class UnblindingToken:
    """Permission to open the signal box of one frozen selection.

    Only :meth:`from_ledger` creates tokens; calling the class raises
    :class:`BlindingError`.
    """

    __slots__ = ("selection_sha256", "ledger", "entry")

    def __init__(self, *args, _key=None, **kwargs):
        if _key is not _ISSUE:
            raise BlindingError("an UnblindingToken cannot be made by hand: it is issued by "
                                "UnblindingToken.from_ledger() from a frozen-analysis ledger "
                                "(na64reco unblind)")
        selection_sha256, ledger, entry = args
        object.__setattr__(self, "selection_sha256", selection_sha256)
        object.__setattr__(self, "ledger", ledger)
        object.__setattr__(self, "entry", dict(entry))

    def __setattr__(self, name, value):
        raise BlindingError("an UnblindingToken is immutable")

    def __reduce__(self):  # picklable for the futures/dask executors
        return (_rebuild_token, (self.selection_sha256, self.ledger, self.entry))

    @classmethod
    def from_ledger(cls, ledger_path: str, selection: Selection) -> UnblindingToken:
        if _LEDGER_VALIDATOR is None:
            raise BlindingError("no frozen-analysis ledger validator is installed: the signal "
                                "box stays closed (freeze the analysis with `na64reco freeze`)")
        entry = _LEDGER_VALIDATOR(str(ledger_path), selection)
        if not isinstance(entry, dict):
            raise BlindingError(f"ledger {ledger_path}: the validator did not return an entry")
        return cls(selection.sha256, str(ledger_path), entry, _key=_ISSUE)

    def check(self, selection: Selection) -> None:
        """Raise unless this token was issued for exactly ``selection``'s file content and
        its unblinding is in progress now (checked at every use, also on workers)."""
        if self.selection_sha256 != selection.sha256:
            raise BlindingError(
                f"the unblinding token was issued for a selection with SHA-256 "
                f"{self.selection_sha256[:12]}..., not for {selection.source} "
                f"({selection.sha256[:12]}...): the frozen selection was changed")
        _check_in_progress(self)

    def __repr__(self) -> str:
        return f"UnblindingToken(selection={self.selection_sha256[:12]}..., ledger={self.ledger!r})"


def unblinding_lock_path(ledger_path: str | Path, state_sha256: str) -> Path:
    """The lock file that exists while ``na64reco unblind`` runs for one frozen state."""
    return Path(ledger_path).resolve().with_name(f".unblinding-{state_sha256[:16]}.lock")


def _check_in_progress(token: UnblindingToken) -> None:
    """A token is good only for a frozen ledger whose unblinding is running right now.

    This is what makes a token rebuilt by hand (e.g. from a pickle) useless: it needs the
    ledger it names to record the same frozen state and selection, and the unblinding
    lock that only :func:`na64reco.unblinding.unblind` creates (after its checks and the
    confirmation) and removes when it is done.
    """
    state = token.entry.get("state_sha256", "")
    try:
        ledger = json.loads(Path(token.ledger).read_text())
        frozen_state = ledger["state_sha256"]
        frozen_selection = ledger["state"]["selection"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BlindingError(f"unblinding token: ledger {token.ledger} is missing or not a frozen-analysis "
                            "ledger") from None
    if not state or state != frozen_state or frozen_selection != token.selection_sha256:
        raise BlindingError(f"unblinding token does not match the frozen state of ledger {token.ledger}")
    if not unblinding_lock_path(token.ledger, state).exists():
        raise BlindingError(f"unblinding token for ledger {token.ledger} used outside a running "
                            "`na64reco unblind` (no unblinding in progress)")


def _rebuild_token(selection_sha256, ledger, entry):
    return UnblindingToken(selection_sha256, ledger, entry, _key=_ISSUE)


def check_unblind_argument(unblind) -> UnblindingToken | None:
    """Validate a processor's ``unblind`` argument: ``None`` or a real token."""
    if unblind is None:
        return None
    if isinstance(unblind, UnblindingToken):
        return unblind
    raise BlindingError(f"unblind={unblind!r} is not accepted: only an UnblindingToken issued from "
                        "a frozen-analysis ledger can open the signal box")
