"""Simulation campaigns cut into spill jobs on dask (na64reco.campaign).

Checks: the plan covers exactly N beam particles in consecutive spills; the files of a
campaign have the same content for 1 and 2 dask workers, and together the content of one
file simulating the whole run (event numbers aside: they restart in every file); the
exposure (sum of spills.n_beam over the files, and the processor's MOT) is N exactly.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from na64reco.campaign import campaign_exposure, plan_campaign, simulate_campaign
from na64reco.errors import ConfigError
from na64reco.sim.generate import simulate

N, PER_SPILL, PER_FILE, SEED, RUN = 23_500, 2_000, 3, 7, 10001  # 12 spills (last 1 500) in 4 files


@pytest.mark.parametrize("n, per_spill, per_file", [(1, 10, 1), (10, 10, 1), (11, 10, 1), (23_500, 2_000, 3),
                                                    (100_000, 10_000, 20), (99_999, 7, 13)])
def test_plan_covers_n_beam_in_consecutive_spills(n, per_spill, per_file):
    plan = plan_campaign(n, per_spill, per_file)
    assert sum(j.n_beam for j in plan.jobs) == n
    assert sum(j.n_spills for j in plan.jobs) == -(-n // per_spill)
    nxt = 0
    for i, job in enumerate(plan.jobs):
        assert (job.index, job.first_spill) == (i, nxt)
        assert 1 <= job.n_spills <= per_file
        assert (job.n_spills - 1) * per_spill < job.n_beam <= job.n_spills * per_spill
        nxt += job.n_spills


@pytest.mark.parametrize("args", [(0, 10, 1), (10, 0, 1), (10, 10, 0), (10.0, 10, 1)])
def test_plan_rejects_bad_sizes(args):
    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        plan_campaign(*args)


def _content(files: list) -> dict[str, ak.Array]:
    """Every branch of the events, spills and truth trees, concatenated over ``files``."""
    out = {}
    for tree in ("events", "spills", "truth"):
        parts = [uproot.open(f)[tree].arrays(library="ak") for f in files]
        out[tree] = ak.concatenate(parts)
    return out


def _assert_same(a: dict, b: dict, skip=()):
    for tree in a:
        assert a[tree].fields == b[tree].fields
        assert len(a[tree]) == len(b[tree])
        for f in a[tree].fields:
            if (tree, f) in skip:
                continue
            x, y = a[tree][f], b[tree][f]
            if x.ndim > 1:  # jagged digits: same counts, then the same values
                assert ak.to_list(ak.num(x)) == ak.to_list(ak.num(y)), (tree, f)
                x, y = ak.flatten(x), ak.flatten(y)
            np.testing.assert_array_equal(ak.to_numpy(x), ak.to_numpy(y), err_msg=f"{tree}/{f}")  # nan == nan


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    plan = plan_campaign(N, PER_SPILL, PER_FILE)
    out = {}
    for workers in (1, 2):
        d = tmp_path_factory.mktemp(f"camp{workers}")
        out[workers] = simulate_campaign("na64mu", plan, seed=SEED, run=RUN, outdir=d, workers=workers,
                                         process="beam", trigger="calibration")
    return plan, out


def test_one_and_two_workers_write_the_same_events(campaigns):
    plan, res = campaigns
    assert len(res[1].files) == len(res[2].files) == len(plan.jobs) == 4
    a, b = _content(res[1].files), _content(res[2].files)
    assert len(a["events"]) > 1000
    _assert_same(a, b)
    for f1, f2 in zip(res[1].files, res[2].files, strict=True):  # file by file, too
        _assert_same(_content([f1]), _content([f2]))


def test_campaign_equals_one_file_of_the_whole_run(campaigns, tmp_path):
    _, res = campaigns
    whole = tmp_path / "whole.root"
    simulate("na64mu", N, SEED, RUN, whole, process="beam", trigger="calibration", spill_particles=PER_SPILL)
    a, b = _content(res[1].files), _content([whole])
    _assert_same(a, b, skip={("events", "event"), ("truth", "event")})
    assert not np.array_equal(ak.to_numpy(a["events"]["event"]), ak.to_numpy(b["events"]["event"]))
    # (run, spill, event) stays unique over the campaign
    keys = set(zip(*(ak.to_list(a["events"][k]) for k in ("run", "spill", "event")), strict=True))
    assert len(keys) == len(a["events"])


def test_exposure_is_the_sum_of_spill_n_beam(campaigns):
    plan, res = campaigns
    for r in res.values():
        assert r.n_beam == N
        assert campaign_exposure(r.files) == (N, 12)
        n_beam = _content(r.files)["spills"]["n_beam"]
        assert ak.to_list(n_beam) == [PER_SPILL] * 11 + [N - 11 * PER_SPILL]
        assert r.n_written == len(_content(r.files)["events"])


def test_exposure_refuses_the_same_spills_twice(campaigns):
    """The jobs of one campaign share a seed but not their spills: summed once each.  The
    1- and 2-worker campaigns are the same events (other paths and UUIDs): refused."""
    from na64reco.errors import ConfigError

    _, res = campaigns
    with pytest.raises(ConfigError, match=r"campaign exposure: .*share spills 1-3 .*counted twice"):
        campaign_exposure([*res[1].files, res[2].files[0]])
    with pytest.raises(ConfigError, match="listed twice"):
        campaign_exposure([res[1].files[0], res[1].files[0]])


def test_processor_mot_of_a_campaign(campaigns):
    from na64reco.runner import RunOptions, run_files

    _, res = campaigns
    out = run_files({"beam": res[2].files}, RunOptions("na64mu_invisible"))["beam"]
    assert out["provenance"].n_beam == N
    assert out["provenance"].events_processed == res[2].n_written


def test_first_spill_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="first_spill"):
        simulate("na64mu", 10, 1, 1, tmp_path / "x.root", first_spill=-1)


def test_a_second_campaign_does_not_overwrite_the_files_of_the_first(campaigns):
    """(the default stem ignored the process: a signal campaign into the same folder replaced the mixture files,
    and the first result's files then held other events)"""
    plan, out = campaigns
    first = out[1]
    folder = Path(first.files[0]).parent
    assert Path(first.files[0]).name.startswith("na64mu_beam_run10001_seed7_")
    with pytest.raises(ConfigError, match=r"campaign: 4 of its 4 files exist .*overwrite=True"):
        simulate_campaign("na64mu", plan, seed=SEED, run=RUN, outdir=folder, process="beam", trigger="calibration")
