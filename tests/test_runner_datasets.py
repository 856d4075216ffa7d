"""`na64reco run FILES...` groups files into datasets by content, never summing samples."""

import hepunits as u

from na64reco.runner import fileset_from_files
from na64reco.sim.generate import simulate


def test_files_are_grouped_by_content(tmp_path):
    paths = {
        "mix": tmp_path / "mix.root", "sig": tmp_path / "sig.root",
        "data1": tmp_path / "d1.root", "data2": tmp_path / "d2.root",
    }
    simulate("na64mu", 300, 1, 5, paths["mix"])
    simulate("na64mu", 300, 2, 5, paths["sig"], process="signal", mass=0.1 * u.GeV)
    simulate("na64mu", 300, 3, 5, paths["data1"], truth=False)
    simulate("na64mu", 300, 4, 6, paths["data2"], truth=False)
    broken = tmp_path / "broken.root"
    broken.write_bytes(b"not root")
    files = [str(p) for p in paths.values()] + [str(broken)]
    fs = fileset_from_files(files)
    assert fs == {
        "mc_mixture": [str(paths["mix"])],
        "mc_signal_m0.1GeV": [str(paths["sig"])],
        "data": [str(paths["data1"]), str(paths["data2"])],
        "default": [str(broken)],
    }
    assert fileset_from_files(files, "all") == {"all": files}
