"""The simulation parameters parse the setup YAML once per process and version of the file
(issue 11): an edited file is read again, a missing one is still a one-line error."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.sim.params import load_sim_params


def test_edited_setup_file_is_read_again(tmp_path):
    setup = load_setup("na64mu")
    copy = tmp_path / "na64mu.yaml"
    shutil.copy(setup.source, copy)
    mine = dataclasses.replace(setup, source=str(copy))
    first = load_sim_params(mine)
    assert load_sim_params(mine) == first  # the cached parse gives the same parameters
    assert first.spill_particles_max == 10000
    text = copy.read_text().replace("spill_particles_max: 10000", "spill_particles_max: 2500", 1)
    copy.write_text(text)
    st = os.stat(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later version of the file
    assert load_sim_params(mine).spill_particles_max == 2500


def test_mixture_override_does_not_leak_into_the_cache():
    setup = load_setup("na64mu")
    base = load_sim_params(setup)
    other = load_sim_params(setup, {"halo": 0.5})
    assert other.mixture["halo"] == 0.5
    assert load_sim_params(setup).mixture == base.mixture


def test_missing_setup_file_is_an_error_naming_it(tmp_path):
    mine = dataclasses.replace(load_setup("na64mu"), source=str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="gone.yaml: file not found"):
        load_sim_params(mine)
