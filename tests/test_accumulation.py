"""Merging the processors' per-chunk outputs: in place (coffea's accumulation) gives what
``+`` gives, and merging stays linear in the number of files."""

from __future__ import annotations

import pytest
from coffea.processor.accumulator import accumulate

from na64reco.errors import NA64Error
from processors.base import Provenance


def _chunk(path: str, events: int, spills: dict, *, excluded: int = 0, skipped: dict | None = None) -> Provenance:
    p = Provenance("na64mu_invisible", "sel", "abc", "sel.yaml", "tag", "1.0")
    p.events_processed, p.chunks, p.events_excluded = events, 1, excluded
    p.conditions = {f"{path}.cond"}
    p.files = {path: {"events": events, "chunks": 1, "data": True, "run": 1001, "spill_events": dict(spills)}}
    p.skipped = dict(skipped or {})
    return p


def _chunks():
    return [_chunk("a.root", 10, {1: 6, 2: 4}), _chunk("b.root", 7, {5: 7}, excluded=2),
            _chunk("a.root", 3, {2: 1, 3: 2}),
            _chunk("c.root", 1, {9: 1}, skipped={"d.root": {"reason": "x", "events": 4}}),
            _chunk("b.root", 2, {5: 2}, skipped={"d.root": {"reason": "x", "events": 5}})]


def test_in_place_merge_equals_sum_and_leaves_the_chunks_alone():
    chunks = _chunks()
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    before = [c.to_dict() for c in chunks]
    merged = accumulate({"d": {"provenance": c}} for c in chunks)["d"]["provenance"]
    assert merged.to_dict() == total.to_dict()
    assert [c.to_dict() for c in chunks] == before  # coffea's first step copies; the inputs stay
    assert merged.files["a.root"] == {"events": 13, "chunks": 2, "data": True, "run": 1001,
                                      "spill_events": {1: 6, 2: 5, 3: 2}}
    assert merged.events_processed == 23 and merged.events_excluded == 2 and merged.skipped["d.root"]["events"] == 9


def test_in_place_merge_refuses_different_constants():
    a, b = _chunks()[:2]
    b.calib_tag = "other"
    with pytest.raises(NA64Error, match="different calib_tag"):
        a += b


def test_merging_many_files_is_linear():
    """Checked by identity, not timed: ``+=`` merges in place and copies no record of the
    files merged before (``+`` copied them all for every chunk: O(files**2))."""
    total = first = _chunk("f0", 1, {1: 1})
    rec0 = first.files["f0"]
    for i in range(1, 500):
        total += _chunk(f"f{i}", 1, {1: 1})
    assert total is first and total.files["f0"] is rec0
    assert len(total.files) == 500 and total.events_processed == 500
