"""Selections as data (cut-flows, signal box, sidebands) and the blinding rule."""

from na64reco.selection.blinding import (
    BlindingDecision,
    UnblindingToken,
    apply_blinding,
    check_unblind_argument,
)
from na64reco.selection.cuts import BLINDED, BOX, CutflowTable, build_selection, cut_masks, region_mask
from na64reco.selection.schema import Cut, Region, Selection, load_selection

__all__ = [
    "BLINDED", "BOX", "BlindingDecision", "Cut", "CutflowTable", "Region", "Selection",
    "UnblindingToken", "apply_blinding", "build_selection", "check_unblind_argument",
    "cut_masks", "load_selection", "region_mask",
]
