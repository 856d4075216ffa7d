"""Spill-level accounting of the exposure (na64reco.exposure)."""

import numpy as np
import pytest

from na64reco.errors import NA64Error
from na64reco.exposure import count_spills, merge_spill_counts, spill_exposure

SPILLS = {"spill": np.array([1, 2, 3, 4]), "n_beam": np.array([1000, 2000, 3000, 4000]),
          "n_triggered": np.array([10, 20, 0, 5])}


def test_a_spill_counts_only_when_all_its_events_were_processed():
    chunks = [count_spills([1] * 10 + [2] * 7), count_spills([2] * 3 + [4] * 4)]  # one event of spill 4 lost
    processed = merge_spill_counts(*chunks)
    assert processed == {1: 10, 2: 10, 4: 4}
    exp = spill_exposure(SPILLS, processed, "f.root")
    assert exp.n_beam == 1000 + 3000        # spill 2 (10 of 20) and 4 (4 of 5) are partial; 3 had no events
    assert exp.n_spills == 2 and exp.n_triggered == 10
    assert [(p["spill"], p["processed"], p["written"], p["n_beam"]) for p in exp.partial] == [
        (2, 10, 20, 2000), (4, 4, 5, 4000)]


def test_everything_processed_gives_the_file_exposure():
    processed = count_spills(np.repeat([1, 2, 4], [10, 20, 5]))
    exp = spill_exposure(SPILLS, processed, "f.root")
    assert (exp.n_beam, exp.n_spills, exp.n_triggered, exp.partial) == (10_000, 4, 35, [])


@pytest.mark.parametrize("processed, words", [
    ({1: 11}, ["f.root", "11 events of spill 1", "10 were written"]),
    ({9: 1}, ["f.root", "spill(s) [9]"]),
])
def test_inconsistent_counts_are_errors_naming_the_file(processed, words):
    with pytest.raises(NA64Error) as err:
        spill_exposure(SPILLS, processed, "f.root")
    for w in words:
        assert w in str(err.value)
