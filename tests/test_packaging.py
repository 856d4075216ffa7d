"""The wheel carries the data directories, and the package finds them outside a checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True)
    (path,) = out.glob("na64reco-*.whl")
    return path


def test_wheel_contains_packages_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "na64reco/__init__.py" in names
    assert "processors/__init__.py" in names
    assert "na64reco/_data/calib/setups/na64mu.yaml" in names
    assert "na64reco/_data/calib/tags/na64mu-default.yaml" in names
    assert any(n.startswith("na64reco/_data/selections/") and n.endswith(".yaml") for n in names)
    assert "na64reco/_data/selections/blinding.yaml" in names  # the protected regions travel with the package


def test_installed_wheel_finds_its_data_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    code = (
        "import na64reco.resources as r, na64reco.geometry as g, na64reco.conditions as c;"
        "print(r.calib_dir()); print(r.selections_dir());"
        "s = g.load_setup('na64mu'); print(len(c.load_conditions(s, 1).calo));"
        "import na64reco.selection.blinding as b; print(b.protection_path())"
    )
    # a user selections directory does not move the protected regions of the installed package
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "NA64RECO_SELECTIONS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    calib, selections, n_dets, protection = out.stdout.split()
    assert calib.startswith(str(site)) and selections == str(tmp_path)
    assert protection == str(site / "na64reco" / "_data" / "selections" / "blinding.yaml")
    assert int(n_dets) == 9
