"""The suite's parallel layout (tests/conftest.py) does what it promises: under
``-n 2 --dist loadgroup`` the tests sharing a module-scoped fixture run on one worker and
the fixture is built once, not once per worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

TOY = '''
import os
import pytest


@pytest.fixture(scope="module")
def shared():
    with open(os.environ["BUILT_LOG"], "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("k", range(4))
def test_shared(shared, k):
    pass


@pytest.mark.parametrize("k", range(4))
def test_alone(k):
    pass
'''


def test_a_module_fixture_is_built_once_under_loadgroup(tmp_path):
    (tmp_path / "tests").mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_toy.py").write_text(TOY)
    built = tmp_path / "built.log"
    argv = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "tests",
            *[a for p in ("cacheprovider", "benchmark", "hypothesispytest", "nbmake") for a in ("-p", f"no:{p}")]]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BUILT_LOG": str(built)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "8 passed" in proc.stdout, proc.stdout[-3000:]
    assert len(built.read_text().split()) == 1, (built.read_text(), proc.stdout[-3000:])
    workers = {line.split()[0] for line in proc.stdout.splitlines() if "PASSED" in line and "test_shared" in line}
    assert len(workers) == 1, proc.stdout[-3000:]
