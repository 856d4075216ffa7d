"""Exposure of a run -- muons (MOT) or electrons (EOT) on target -- by spill.

The beam counters count particles per spill (``spills.n_beam``) and the DAQ writes the
triggered events of each spill (``spills.n_triggered`` of them).  An analysis that
processed only some of a file's events (a chunk skipped after a read error) must
normalise to the beam of the spills it saw, not of the file.

**Rule (spill-level accounting).**  A spill's ``n_beam`` counts if and only if every
event written for it was processed: ``processed[spill] == n_triggered[spill]``.  A
spill some of whose events were skipped counts nothing and is reported as *partial*
(its processed events stay in the histograms: the normalisation errs on the side of
fewer MOT, i.e. a conservative background per MOT and signal efficiency).  A spill
with no triggered events counts when any event of its file was processed.  A file
refused before the run, or whose every chunk was skipped, counts nothing.

**Bad spills.**  A spill in the run-quality bad-spill list (``na64reco dqm``, given to
``na64reco run --bad-spills``) counts nothing either: its events are dropped before
anything is filled, and it is reported as *excluded* with the list's reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from na64reco.errors import NA64Error


@dataclass
class Exposure:
    """Beam particles, spills and triggered events counted for the processed events."""

    n_beam: int = 0
    n_spills: int = 0
    n_triggered: int = 0
    #: spills not counted because some of their events were not processed:
    #: ``{"file", "spill", "processed", "written", "n_beam"}`` each
    partial: list[dict] = field(default_factory=list)
    #: spills not counted because they are in the bad-spill list:
    #: ``{"file", "spill", "n_beam", "reasons"}`` each
    excluded: list[dict] = field(default_factory=list)


def count_spills(spill_numbers) -> dict[int, int]:
    """Events per spill number of a chunk (``{spill: events}``)."""
    values, counts = np.unique(np.asarray(spill_numbers), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def merge_spill_counts(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
    """Sum of two ``{spill: events}`` counts (chunks of one file)."""
    out = dict(a)
    for spill, n in b.items():
        out[spill] = out.get(spill, 0) + n
    return out


def spill_exposure(spills: Mapping[str, np.ndarray], processed: Mapping[int, int], source: str,
                   excluded: Mapping[int, list] | None = None) -> Exposure:
    """Exposure of one file from its ``spills`` tree and the events processed per spill.

    Args:
        spills: the file's ``spills`` tree (``spill``, ``n_beam``, ``n_triggered`` arrays).
        processed: events processed per spill number (:func:`count_spills`, merged over chunks).
        source: the file (for messages).
        excluded: spill numbers of this file in the bad-spill list, with their reasons: never
            counted, listed in ``Exposure.excluded``.

    Raises:
        NA64Error: events of a spill the ``spills`` tree does not list, or more events of a
            spill than it says were written (an inconsistent file).
    """
    numbers = np.asarray(spills["spill"]).astype(np.int64)
    n_beam = np.asarray(spills["n_beam"]).astype(np.int64)
    written = np.asarray(spills["n_triggered"]).astype(np.int64)
    if len(np.unique(numbers)) != len(numbers):
        raise NA64Error(f"{source}: spills tree lists a spill number twice; expected one entry per spill")
    index = {int(s): i for i, s in enumerate(numbers)}
    unknown = sorted(set(processed) - set(index))
    if unknown:
        raise NA64Error(f"{source}: events of spill(s) {unknown[:5]} that the spills tree does not list")
    exp = Exposure()
    excluded = excluded or {}
    for spill, i in index.items():
        n = processed.get(spill, 0)
        if n > written[i]:
            raise NA64Error(f"{source}: {n} events of spill {spill} processed, but the spills tree says "
                            f"{int(written[i])} were written")
        if spill in excluded:
            exp.excluded.append({"file": source, "spill": spill, "n_beam": int(n_beam[i]),
                                 "reasons": list(excluded[spill])})
        elif n == written[i]:
            exp.n_beam += int(n_beam[i])
            exp.n_spills += 1
            exp.n_triggered += int(written[i])
        else:
            exp.partial.append({"file": source, "spill": spill, "processed": n, "written": int(written[i]),
                                "n_beam": int(n_beam[i])})
    return exp
