"""The check of a run's files before it starts, here and on workers (:mod:`na64reco.file_check`):
the same records, errors, skips and refusals whichever process checked a file, in the order of
the files; workers that never start, or fail, do not hold the check up or change its result."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import shutil

import numpy as np
import pytest

from na64reco.errors import ConfigError, RawFormatError
from na64reco.file_check import DaskChecks, PoolChecks, check_files, checked_in_order

N_FILES = 12


def _simulate(path, seed):
    from na64reco.sim.generate import simulate

    simulate("na64mu", 100, seed, 1001, path, process="beam", trigger="calibration", spill_particles=50)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    return [_simulate(folder / f"f{i}.root", i + 1) for i in range(N_FILES)]


@pytest.fixture(scope="module")
def truncated(files, tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "truncated.root"
    data = open(files[0], "rb").read()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


class ThreadChecks:
    """Workers as threads of this process (what the check needs of a pool: submit, wait)."""

    def __init__(self, pool, slots=4):
        self.pool, self.slots, self.submitted = pool, slots, 0

    def ready(self):
        return True

    def submit(self, paths, setup):
        from na64reco.file_check import check_batch

        self.submitted += 1
        return self.pool.submit(check_batch, paths, setup)

    def wait(self, futures, timeout):
        concurrent.futures.wait(futures, timeout, return_when=concurrent.futures.FIRST_COMPLETED)


class NeverStarts(ThreadChecks):
    """Workers that take batches and never run them (a batch cluster without nodes yet)."""

    def __init__(self):
        super().__init__(None)
        self.futures = []

    def submit(self, paths, setup):
        self.futures.append(concurrent.futures.Future())
        return self.futures[-1]


class Fails(ThreadChecks):
    """Workers that lose every batch (a worker killed, or one that cannot import the check)."""

    def submit(self, paths, setup):
        fut = concurrent.futures.Future()
        fut.set_exception(OSError("worker lost"))
        return fut


def _without_maps(info: dict) -> dict:
    """A file's record without the checksum blocks and basket map (kept only by a check here)."""
    return {k: v for k, v in info.items() if k not in ("blocks", "baskets")}


def _same(a, b):
    """Two CheckedFile records alike, but for the checksum blocks and basket map (kept only by a
    check here)."""
    assert a.path == b.path and a.error == b.error and a.events == b.events and a.identity == b.identity
    if a.info is None:
        assert b.info is None
        return
    assert _without_maps(a.info) == _without_maps(b.info)
    assert a.spills.keys() == b.spills.keys()
    for k in a.spills:
        np.testing.assert_array_equal(a.spills[k], b.spills[k])


def _here(paths):
    return list(checked_in_order(paths, "na64mu", None))


def test_workers_give_the_records_of_a_check_here_in_order(files, truncated):
    paths = files[:5] + [truncated] + files[5:]
    ref = _here(paths)
    assert [r.path for r in ref] == paths and ref[5].error[0] == "RawFormatError"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        remote = ThreadChecks(pool)
        got = list(checked_in_order(paths, "na64mu", remote, batch=2, patience=60))
    assert remote.submitted >= 3  # most batches went to the workers
    assert sum(r.info is not None and r.info["blocks"] is None for r in got) >= 5  # (workers keep no blocks)
    assert [r.path for r in got] == paths
    for a, b in zip(ref, got, strict=True):
        _same(a, b)


def test_checked_by_workers_or_not_the_run_check_is_the_same(files, truncated):
    fileset = {"a": files[:7], "b": [files[7], truncated, *files[8:]]}
    with pytest.raises(RawFormatError) as here:
        check_files(fileset, "na64mu", skip_bad_files=False)
    with concurrent.futures.ThreadPoolExecutor(2) as pool, pytest.raises(RawFormatError) as there:
        check_files(fileset, "na64mu", skip_bad_files=False, remote=ThreadChecks(pool))
    assert str(here.value) == str(there.value) and truncated in str(there.value)
    ref = check_files(fileset, "na64mu", skip_bad_files=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = check_files(fileset, "na64mu", skip_bad_files=True, remote=ThreadChecks(pool))
    assert ref.good == got.good == {"a": files[:7], "b": [files[7], *files[8:]]}
    assert ref.entries == got.entries and ref.skipped == got.skipped and list(got.skipped) == [truncated]
    assert ref.max_cluster == got.max_cluster > 0
    assert ref.coffea_metadata() == got.coffea_metadata()
    for path in ref.files:
        assert _without_maps(ref.files[path]) == _without_maps(got.files[path])


def test_a_copy_is_refused_naming_both_files_whoever_checked_them(files, tmp_path):
    copy = str(tmp_path / "copy.root")
    shutil.copy(files[1], copy)
    fileset = {"d": [*files, copy]}
    with pytest.raises(ConfigError) as here:
        check_files(fileset, "na64mu", skip_bad_files=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool, pytest.raises(ConfigError) as there:
        check_files(fileset, "na64mu", skip_bad_files=True, remote=ThreadChecks(pool))
    assert str(here.value) == str(there.value)
    assert copy in str(there.value) and files[1] in str(there.value)


def test_workers_that_never_start_do_not_hold_the_check_up(files):
    remote = NeverStarts()
    got = list(checked_in_order(files, "na64mu", remote, batch=2, patience=0.05))
    for a, b in zip(_here(files), got, strict=True):
        _same(a, b)
    assert remote.futures and all(f.cancelled() for f in remote.futures)  # taken back, cancelled there
    assert all(r.info["blocks"] is not None for r in got)  # all checked here


def test_batches_a_worker_lost_are_checked_here(files):
    got = list(checked_in_order(files, "na64mu", Fails(None), batch=2, patience=60))
    for a, b in zip(_here(files), got, strict=True):
        _same(a, b)


def test_closing_early_cancels_what_the_workers_hold(files):
    remote = NeverStarts()
    results = checked_in_order(files, "na64mu", remote, batch=2, patience=60)
    first = next(results)  # the first batch is checked here; the next ones handed out
    assert first.path == files[0] and remote.futures
    results.close()
    assert all(f.cancelled() for f in remote.futures)


def test_a_process_pool_checks_files(files):
    import loky

    pool = loky.ProcessPoolExecutor(max_workers=2)
    try:
        got = list(checked_in_order(files, "na64mu", PoolChecks(pool, 2), batch=2, patience=120))
    finally:
        pool.shutdown()
    assert sum(r.info["blocks"] is None for r in got) >= 2
    for a, b in zip(_here(files), got, strict=True):
        _same(a, b)


def test_a_dask_cluster_checks_files(files):
    from distributed import Client

    from na64reco.runner import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        remote = DaskChecks(lambda: client)
        got = list(checked_in_order(files, "na64mu", remote, batch=2, patience=120))
        assert remote.slots == 4
    assert sum(r.info["blocks"] is None for r in got) >= 2  # batches the workers checked
    for a, b in zip(_here(files), got, strict=True):
        _same(a, b)


def test_a_run_of_many_files_on_dask_is_the_run_in_one_process(files, truncated, monkeypatch):
    """``run_files`` on a running dask cluster, whose workers check the files after the first
    batch and are told the results: the cut-flow, every histogram, the regions and the
    provenance (files, events, MOT, the bad file's skip) are those of the iterative run."""
    from distributed import Client

    import na64reco.runner as runner
    from na64reco.runner import RunOptions, local_cluster, run_files

    fileset = {"d": [*files[:9], truncated, *files[9:]]}
    ref = run_files(fileset, RunOptions("na64mu_invisible", skip_bad_files=True, check_cache=False))
    handed = []
    submit = runner.DaskChecks.submit
    monkeypatch.setattr(runner.DaskChecks, "submit", lambda self, paths, setup: handed.append(paths) or
                        submit(self, paths, setup))
    with local_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        got = run_files(fileset, RunOptions("na64mu_invisible", executor="dask", client=client, skip_bad_files=True,
                                            chunksize=400, check_cache=False))  # (every file checked)
        assert all(not notes for notes in client.run(lambda: __import__("processors.base").base._CHECKED).values())
    assert handed == [fileset["d"][8:]]  # the second batch went to the workers
    a, b = ref["d"], got["d"]
    assert a["cutflow"].labels == b["cutflow"].labels
    np.testing.assert_array_equal(a["cutflow"].n, b["cutflow"].n)
    np.testing.assert_allclose(a["cutflow"].sumw, b["cutflow"].sumw, rtol=1e-12)
    for group in ("hists", "nminus1"):
        assert a[group].keys() == b[group].keys()
        for name in a[group]:
            np.testing.assert_allclose(a[group][name].values(flow=True), b[group][name].values(flow=True),
                                       rtol=1e-12, err_msg=name)
    def regions(out):
        return {k: (v.n, v.blinded) for k, v in out["regions"].items()}

    assert regions(a) == regions(b)
    pa, pb = a["provenance"], b["provenance"]
    assert (pa.events_processed, pa.events_total, pa.n_beam, sorted(pa.files)) == \
           (pb.events_processed, pb.events_total, pb.n_beam, sorted(pb.files))
    assert pa.skipped == pb.skipped and list(pb.skipped) == [truncated]


def test_records_pickle_small(files):
    import pickle

    rec = _here(files[:1])[0]
    assert len(pickle.dumps(dataclasses.replace(rec, info={**rec.info, "blocks": None}))) < 4000


def test_a_worker_keeps_the_blocks_of_the_files_it_checked(files):
    """A worker's batch is noted for its own processors with the checksum blocks; the client's
    note of the same files (without blocks) keeps them, one of another file version does not."""
    from na64reco.runner import check_and_note
    from processors.base import _CHECKED, close_raw_files, note_checked_files

    close_raw_files()
    try:
        records = check_and_note(files[:2], "na64mu")
        assert [r.path for r in records] == files[:2] and all(r.info["blocks"] is None for r in records)
        assert all(_CHECKED[p]["blocks"] is not None and _CHECKED[p]["version"] == r.info["version"]
                   for p, r in zip(files[:2], records, strict=True))
        slim = {p: {**_CHECKED[p], "blocks": None} for p in files[:2]}
        note_checked_files({files[0]: slim[files[0]], files[1]: {**slim[files[1]], "version": "changed"}})
        assert _CHECKED[files[0]]["blocks"] is not None
        assert _CHECKED[files[1]]["blocks"] is None and _CHECKED[files[1]]["version"] == "changed"
    finally:
        close_raw_files()


def test_dask_workers_that_join_later_are_told_what_was_checked(files):
    """The check's notes reach the workers by a plugin: a worker started after they were sent has
    them too, and unregistering the plugin (the end of the run) makes every worker forget them."""
    from distributed import Client

    from na64reco.runner import _forget_checked, _note_checked, local_cluster
    from na64reco.runner import check_files as run_check

    def noted():
        from processors.base import _CHECKED

        return sorted(_CHECKED)

    check = run_check({"d": files[:3]}, "na64mu", skip_bad_files=False)
    with local_cluster(1) as cluster, Client(cluster) as client:
        client.wait_for_workers(1)
        plugin = _note_checked(check, client)
        cluster.scale(2)
        client.wait_for_workers(2)
        told = client.run(noted)
        assert len(told) == 2 and all(v == sorted(files[:3]) for v in told.values())
        _forget_checked(client, plugin)
        assert all(v == [] for v in client.run(noted).values())
