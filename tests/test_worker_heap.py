"""The heap policy of dask workers (issue 11): distributed's default ``MALLOC_TRIM_THRESHOLD_`` turns
glibc's dynamic mmap threshold off, so every chunk's large arrays are faulted in afresh (~200k page
faults and ~25 % more CPU per 188k events).  A local cluster's workers are started without it; a
worker of any cluster started with it and the ``na64reco.dask_worker`` preload keeps freed memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sim_heap import FAULTS

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


_ENV_SCRIPT = """
import json, os
from na64reco.runner import local_client
with local_client(1) as client:
    print(json.dumps(client.submit(lambda: dict(os.environ), pure=False).result()))
"""


def test_local_workers_keep_glibcs_heap_policy(tmp_path):
    """distributed's default ``MALLOC_TRIM_THRESHOLD_`` is not in a local worker's environment (it
    turns off glibc's dynamic mmap threshold: every chunk's large arrays faulted in afresh, ~200k
    faults and +25 % CPU per 188k events); the rest of distributed's worker environment is kept.
    A fresh interpreter: a fork server started earlier in this one keeps the environment it had."""
    res = subprocess.run([sys.executable, "-c", _ENV_SCRIPT], capture_output=True, text=True, env=_env(),
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    worker_env = json.loads(res.stdout.strip().splitlines()[-1])
    assert "MALLOC_TRIM_THRESHOLD_" not in worker_env
    assert worker_env.get("OMP_NUM_THREADS") == "1"


def test_the_preloads_value_is_distributeds_shipped_default():
    """The preload acts on distributed's own default value only: if distributed ships another, the
    constant must follow (else its workers would fault in every chunk again, unseen)."""
    import distributed
    import yaml

    from na64reco.dask_worker import DISTRIBUTED_TRIM_DEFAULT

    shipped = yaml.safe_load((Path(distributed.__file__).parent / "distributed.yaml").read_text())
    value = shipped["distributed"]["nanny"]["pre-spawn-environ"]["MALLOC_TRIM_THRESHOLD_"]
    assert str(value) == DISTRIBUTED_TRIM_DEFAULT


#: a fresh process: 2 rounds of 10 arrays of 4 MB made and freed, minor page faults counted after
#: the preload's heap step (what distributed's default variable costs: each round faulted in again)
_HEAP_SCRIPT = FAULTS + """
from na64reco.dask_worker import keep_freed_memory_if_trimmed
changed = keep_freed_memory_if_trimmed()
faults(10)
print(changed, faults(10))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("trim", ["65536", None, "1000000"])
def test_the_preload_keeps_freed_memory_in_a_worker_started_with_distributeds_trim(tmp_path, trim):
    env = _env() if trim is None else _env(MALLOC_TRIM_THRESHOLD_=trim)
    res = subprocess.run([sys.executable, "-c", _HEAP_SCRIPT], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    changed, faults = res.stdout.split()
    pages = 2 * 10 * (4 << 20) // 4096
    if trim == "65536":  # distributed's default: the preload keeps freed memory, the arrays are reused
        assert changed == "True" and int(faults) < pages // 100
    else:  # no variable, or a value of the user's own: the allocator is left as it is
        assert changed == "False"
        if trim is not None:  # (a trim threshold set: the blocks go back to the system and come again)
            assert int(faults) > pages // 4
