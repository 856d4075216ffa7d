"""What a dask worker imports (issue 11, worker memory): the modules of the worker path
(:data:`na64reco.dask_worker.MODULES`) and a processed chunk pull in no plotting, no
statistics and no dataframes; the fork server the workers start from preloads none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: ~400 MB of imports in all before: none of them is used by a worker
NOT_IN_WORKER = ("matplotlib", "mplhep", "pyhf", "scipy.optimize", "scipy.stats", "iminuit", "pandas",
                 "dask.dataframe", "na64reco.plotting", "na64reco.stats")

_SCRIPT = """
import json, sys
from na64reco.dask_worker import import_modules, start_numba
import_modules(); start_numba()
from na64reco.sim.generate import simulate
from na64reco.runner import RunOptions, run_files
simulate("na64mu", 600, 1, 1001, sys.argv[1], trigger="calibration", truth=False)
out = run_files({"d": [sys.argv[1]]}, RunOptions("na64mu_invisible", chunksize=300))
print(json.dumps(sorted(sys.modules)))
"""


def test_the_worker_path_imports_no_plotting_statistics_or_dataframes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "d.root")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    modules = set(json.loads(res.stdout.strip().splitlines()[-1]))
    assert "processors.na64mu_invisible" in modules
    assert not modules & set(NOT_IN_WORKER), sorted(modules & set(NOT_IN_WORKER))


def test_the_fork_server_preloads_no_pandas():
    import multiprocessing

    import distributed  # noqa: F401  (its configuration, which local_cluster has loaded)

    from na64reco.runner import NOT_PRELOADED, _use_forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    assert _use_forkserver()
    preload = multiprocessing.forkserver._forkserver._preload_modules
    assert "na64reco._forkserver_preload" in preload and not set(NOT_PRELOADED) & set(preload)


def test_local_client_runs_tasks_on_workers_or_none_in_process():
    """``--workers N`` of the scripts: 0 works in this process (no client), N >= 1 gives a client of
    a local cluster with N workers that runs a task, closed on exit."""
    import os

    from na64reco.runner import local_client

    with local_client(0) as client:
        assert client is None
    with local_client(1) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(os.getpid).result() != os.getpid()  # ran in the worker process
    assert client.status == "closed"
