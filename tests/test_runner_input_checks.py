"""Input checks of the runner's Python API and of ``na64reco run``: the fileset's datasets and
files, the types of the run options, the dask scheduler's address."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_processors_synthetic import write_raw

from na64reco import cli
from na64reco.errors import ConfigError, NA64Error
from na64reco.runner import RunOptions, check_scheduler_address, load_fileset, run_files


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("input_checks")
    return str(write_raw(d / "good.root", n_events=300, truth=False))


def _opts(**kw):
    return RunOptions("na64mu_invisible", chunksize=250, **kw)


def _run(fileset, **kw):
    return run_files(fileset, _opts(**kw))


@pytest.mark.parametrize("as_path", [str, Path])
def test_a_single_path_is_a_dataset_of_one_file(raw, as_path):
    out = _run({"d": as_path(raw)})
    assert list(out) == ["d"]
    prov = out["d"]["provenance"]
    assert prov.events_processed == prov.events_total == 300


def test_a_path_object_in_a_list_is_taken_as_its_text(raw):
    assert _run({"d": [Path(raw)]})["d"]["provenance"].events_processed == 300


@pytest.mark.parametrize("files", [[], ()])
def test_a_dataset_without_files_is_refused_naming_it(files):
    with pytest.raises(ConfigError, match="dataset 'empty_ds' has no files"):
        _run({"empty_ds": files})


@pytest.mark.parametrize("fileset, words", [
    ({}, "no datasets"),
    (["a.root"], "mapping"),
    ({"d": 3}, "dataset 'd'.*list of file paths"),
    ({"d": {"files": ["a.root"]}}, "dataset 'd'.*list of file paths"),
    ({"d": ["a.root", None]}, "dataset 'd': None .* not a file path"),
])
def test_a_fileset_of_the_wrong_form_is_refused(fileset, words):
    with pytest.raises(ConfigError, match=words):
        _run(fileset)


@pytest.mark.parametrize("name, value", [
    ("chunksize", "10"), ("chunksize", 10.0), ("chunksize", None), ("workers", None), ("workers", "2"),
    ("retries", "1"), ("workers", True),
])
def test_run_options_of_the_wrong_type_are_a_config_error_naming_them(name, value):
    with pytest.raises(ConfigError, match=rf"{name} must be an integer >= \d, got {value!r:.4}") as err:
        RunOptions("na64mu_invisible", **{name: value})
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_run_options_still_take_integers():
    opts = RunOptions("na64mu_invisible", executor="futures", workers=np.int64(2), chunksize=np.int32(100))
    assert (opts.workers, opts.chunksize) == (2, 100) and type(opts.workers) is int
    with pytest.raises(ConfigError, match="chunksize must be >= 1, got 0"):
        RunOptions("na64mu_invisible", chunksize=0)
    with pytest.raises(ConfigError, match="executor"):
        RunOptions("na64mu_invisible", executor=None)


@pytest.mark.parametrize("address", ["notanaddress", "tcp://host", "tcp://host:", "tcp://host:abc",
                                     "tcp://:8786", "tcp://host:0", "tcp://host:70000", "foo://host:1", "", " ", 8786])
def test_a_scheduler_that_is_no_address_is_refused_by_the_options(address):
    with pytest.raises(ConfigError, match=r"scheduler .* such as tcp://HOST:PORT") as err:
        RunOptions("na64mu_invisible", executor="dask", scheduler=address)
    assert repr(address) in str(err.value)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "tls://scheduler.cern.ch:8786",
                                     "tcp://[::1]:8786", "ws://host:8786"])
def test_scheduler_addresses_are_taken(address):
    assert check_scheduler_address(address) == address
    assert RunOptions("na64mu_invisible", executor="dask", scheduler=address).scheduler == address


def test_the_cli_refuses_a_bad_scheduler_in_one_line_before_reading_the_files(tmp_path, capsys):
    missing = tmp_path / "not_there.root"  # (reading the files would fail on it first)
    rc = cli.main(["run", "--processor", "na64mu_invisible", "--executor", "dask", "--scheduler", "notanaddress",
                   "--output", str(tmp_path / "out"), str(missing)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "internal error" not in err and err.count("\n") == 1
    assert "'notanaddress'" in err and "tcp://HOST:PORT" in err
    assert not (tmp_path / "out").exists()


def test_a_scheduler_that_does_not_answer_is_a_clear_error(raw):
    import dask
    import distributed  # noqa: F401  (its config defaults loaded first: imported inside the ``set`` below,
    # they were dropped with it on exit, and later tests of this process met KeyError 'distributed')

    t0 = time.monotonic()
    words = r"cannot connect to the dask scheduler tcp://127\.0\.0\.1:1 \(--scheduler\)"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(NA64Error, match=words):
        _run({"d": [raw]}, executor="dask", scheduler="tcp://127.0.0.1:1")
    assert time.monotonic() - t0 < 10


def test_a_fileset_yaml_dataset_with_an_unknown_key_is_refused(raw, tmp_path):
    p = tmp_path / "fileset.yaml"
    p.write_text(f"schema_version: 1\ndatasets:\n  d: {{files: [{raw}], extra: 1}}\n")
    with pytest.raises(ConfigError, match=r"datasets\.d.*unknown key 'extra'.*allowed key is 'files'"):
        load_fileset(p)
    p.write_text(f"schema_version: 1\ndatasets:\n  d: {{files: [{raw}]}}\n  e: [{raw}]\n")
    assert load_fileset(p) == {"d": [raw], "e": [raw]}
