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
not on the cut order in the YAML, not on any option.  The protected regions are read from
the installed package (``selections/blinding.yaml`` of the checkout, or of the wheel's
``_data``), never from ``NA64RECO_SELECTIONS`` or another path a user can redirect:
selections may come from anywhere, the protected region may not.  The box can be opened
only with an :class:`~na64reco.selection.token.UnblindingToken`, which only a running
``na64reco unblind`` issues and which is bound to one selection file (its SHA-256) and to
a secret held in that process's memory (``na64reco.selection.token``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import awkward as ak
import numpy as np

from na64reco.config import load_yaml
from na64reco.errors import BlindingError
from na64reco.resources import package_selections_dir
from na64reco.selection.cuts import outside_mask, region_mask
from na64reco.selection.schema import Region, Selection, parse_region
from na64reco.selection.token import UnblindingToken, unblinding_lock_path

__all__ = ["PROTECTED_FILE", "BlindingDecision", "Protection", "UnblindingToken", "apply_blinding", "blind_mask",
           "check_unblind_argument", "load_protection", "protected_mask", "protection_path", "protection_text",
           "unblinding_lock_path", "withhold_protected"]

PROTECTED_FILE = "blinding.yaml"


@dataclass(frozen=True)
class Protection:
    """What stays hidden in the data of one setup."""

    protected: Region
    visible_controls: tuple[Region, ...]


def protection_path():
    """The installed package's ``blinding.yaml`` (no environment variable can move it)."""
    return package_selections_dir() / PROTECTED_FILE


@functools.lru_cache(maxsize=4)
def load_protection(setup: str) -> Protection:
    """The protected region and visible controls of ``setup``, from :func:`protection_path`."""
    node = load_yaml(protection_path(), schema_version=1)
    entry = node.node("setups").node(setup)
    protected = parse_region(entry.node("protected"), setup, "protected")
    controls = tuple(parse_region(c, setup, f"control{i}") for i, c in
                     enumerate(entry.nodes("visible_controls") if entry.has("visible_controls") else []))
    return Protection(protected, controls)


def protected_mask(reco: ak.Array, setup: str) -> np.ndarray:
    """Data events that stay hidden whatever the selection: not provably outside the
    setup's protected region (NaN counts as inside) and in no visible control region."""
    protection = load_protection(setup)
    inside = ~outside_mask(reco, protection.protected)
    for region in protection.visible_controls:
        inside &= ~region_mask(reco, region)
    return inside


def withhold_protected(reco: ak.Array, setup: str) -> tuple[ak.Array, int]:
    """``(reco without the protected events, how many were withheld)``: what an exporter or
    viewer of *data* may show before the unblinding (``na64reco reco``, the event display)."""
    hidden = protected_mask(reco, setup)
    return reco[~hidden], int(np.count_nonzero(hidden))


def protection_text(setup: str) -> str:
    """The protected region and its visible controls, in words (for output metadata)."""
    protection = load_protection(setup)
    text = protection.protected.text
    if protection.visible_controls:
        text += " unless " + " or ".join(c.text for c in protection.visible_controls)
    return text


@dataclass(frozen=True)
class BlindingDecision:
    """What blinding did to one chunk (never shown for data: it would reveal the box)."""

    keep: np.ndarray  # events that may be used further
    blinded: bool     # True for data that was not unblinded


def blind_mask(reco: ak.Array, masks: dict[str, np.ndarray], selection: Selection) -> np.ndarray:
    """Data events to hide: not provably outside the protected region or the selection's
    box, and not in a visible control region.  (``masks`` is accepted for symmetry with
    the cut evaluation; the rule deliberately does not depend on the editable cuts.)"""
    control = np.zeros(len(reco), bool)
    for region in load_protection(selection.setup).visible_controls:
        control |= region_mask(reco, region)
    return protected_mask(reco, selection.setup) | (~outside_mask(reco, selection.signal_box) & ~control)


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


def check_unblind_argument(unblind) -> UnblindingToken | None:
    """Validate a processor's ``unblind`` argument: ``None`` or a real token."""
    if unblind is None:
        return None
    if isinstance(unblind, UnblindingToken):
        return unblind
    raise BlindingError(f"unblind={unblind!r} is not accepted: only an UnblindingToken issued from "
                        "a frozen-analysis ledger can open the signal box")
