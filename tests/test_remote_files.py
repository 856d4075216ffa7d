"""Remote input files: a simulated file served over HTTP on the loopback interface (with
byte ranges, see ``http_server.py``) gives the same ``inspect``, ``reco`` and ``run``
results as the local file, on executors with workers; a missing URL is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from http_server import serve

from na64reco import cli
from na64reco.errors import NA64Error, RawFormatError
from na64reco.io import location, open_raw
from na64reco.runner import RunOptions, fileset_from_files, load_fileset, run_files
from na64reco.sim.generate import simulate


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    simulate("na64mu", 30_000, 7, 5, d / "mc.root")  # ~270 triggered events
    full = (d / "mc.root").read_bytes()
    (d / "truncated.root").write_bytes(full[: len(full) // 2])
    with serve(d) as (url, server):
        yield {"dir": d, "url": url, "local": str(d / "mc.root"), "remote": f"{url}/mc.root",
               "missing": f"{url}/missing.root", "truncated": f"{url}/truncated.root", "server": server}


def test_location_helpers(tmp_path):
    url = "root://eosuser.cern.ch//eos/user/n/na64/run1.root"
    assert location.is_url(url) and location.is_url("https://host/a.root") and location.is_url("s3://b/k.root")
    assert not location.is_url("data/run1.root") and not location.is_url(tmp_path / "a.root")
    assert not location.is_url("C:/data/run1.root")
    assert location.location(url) == url                      # the // after the host survives
    assert location.join(tmp_path, url) == url
    assert location.join(tmp_path, "a.root") == str(tmp_path / "a.root")
    assert location.join(tmp_path, "/abs/a.root") == "/abs/a.root"
    assert location.display_name(url) == "run1.root" == location.display_name("x/run1.root")
    assert location.resolve(url) == url
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    assert location.file_info(path).size == 5
    with pytest.raises(RawFormatError, match=r"b\.bin: file not found"):
        location.file_info(tmp_path / "b.bin")


def test_file_info_and_bytes_over_http(served):
    info = location.file_info(served["remote"])
    local = location.file_info(served["local"])
    assert info.size == local.size and info.version            # Content-Length, Last-Modified
    with location.open_bytes(served["remote"]) as fh:
        assert fh.read() == Path(served["local"]).read_bytes()
    with pytest.raises(RawFormatError) as err:
        location.file_info(served["missing"])
    assert str(err.value) == f"{served['missing']}: file not found"


def test_open_raw_over_http(served):
    with open_raw(served["remote"], setup="na64mu") as raw, open_raw(served["local"]) as ref:
        assert raw.path == served["remote"]                    # the URL as given, not a Path
        assert raw.n_events == ref.n_events and raw.run == ref.run == 5
        np.testing.assert_array_equal(raw.truth()["p_in"], ref.truth()["p_in"])
        np.testing.assert_array_equal(raw.spills()["n_beam"], ref.spills()["n_beam"])


def test_inspect_over_http(served, capsys):
    assert cli.main(["inspect", "--json", served["local"]]) == 0
    local = json.loads(capsys.readouterr().out)
    assert cli.main(["inspect", "--json", served["remote"]]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote.pop("file") == served["remote"]
    local.pop("file")
    assert remote == local


def test_reco_over_http(served, tmp_path, capsys):
    from na64reco.export import read_reco

    for name, src in (("local", served["local"]), ("remote", served["remote"])):
        assert cli.main(["reco", src, "--output", str(tmp_path / f"{name}.parquet"), "--quiet"]) == 0
    capsys.readouterr()
    (a, meta_a), (b, meta_b) = (read_reco(tmp_path / f"{n}.parquet") for n in ("local", "remote"))
    assert meta_b["inputs"] == [served["remote"]]
    assert a.fields == b.fields and len(a) == len(b) > 0
    for field in a.fields:  # (vector records with None where a track is missing: compared as awkward)
        assert ak.array_equal(a[field], b[field], equal_nan=True), field


def _cutflow(outdir):
    summary = json.loads((outdir / "cutflow.json").read_text())
    for entry in summary.values():
        entry["provenance"].pop("wall_time")
    return summary


@pytest.mark.parametrize("executor", ["futures", "dask"])
def test_run_over_http_with_workers_matches_the_local_file(served, tmp_path, executor, capsys):
    common = ["run", "--processor", "na64mu_invisible", "--chunksize", "120", "--no-plots", "--no-progress"]
    assert cli.main([*common, "--output", str(tmp_path / "local"), served["local"]]) == 0
    assert cli.main([*common, "--executor", executor, "--workers", "2", "--output", str(tmp_path / "remote"),
                     served["remote"]]) == 0
    capsys.readouterr()
    local, remote = _cutflow(tmp_path / "local"), _cutflow(tmp_path / "remote")
    assert remote == local
    (entry,) = remote.values()
    assert entry["provenance"]["events_processed"] == entry["provenance"]["events_total"] > 0
    assert entry["provenance"]["chunks"] >= 2                  # the workers read byte ranges of the URL


def test_a_missing_url_is_one_line(served, capsys):
    for command in (["inspect"], ["reco", "--output", "x.parquet"],
                    ["run", "--processor", "na64mu_invisible", "--output", "out", "--no-plots"]):
        assert cli.main([*command, served["missing"]]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{served['missing']}: file not found" in err


def test_skip_bad_urls_accounting_is_exact(served):
    fs = {"d": [served["remote"], served["missing"], served["truncated"]]}
    out = run_files(fs, RunOptions("na64mu_invisible", chunksize=150, skip_bad_files=True))
    prov = out["d"]["provenance"]
    assert set(prov.skipped) == {served["missing"], served["truncated"]}
    assert prov.skipped[served["missing"]] == {"reason": f"{served['missing']}: file not found", "events": 0}
    with open_raw(served["local"]) as raw:
        n = raw.n_events
    assert prov.events_processed == n
    n_trunc = prov.skipped[served["truncated"]]["events"]
    assert n_trunc in (0, n)
    assert prov.events_processed + prov.events_skipped == prov.events_total == n + n_trunc
    with pytest.raises(NA64Error) as err:
        run_files(fs, RunOptions("na64mu_invisible"))
    assert str(err.value) == f"{served['missing']}: file not found"


def test_filesets_keep_urls_as_they_are(served, tmp_path):
    (tmp_path / "fs.yaml").write_text(
        f"schema_version: 1\ndatasets:\n  mc: [{served['remote']}, local.root, /abs/x.root]\n")
    assert load_fileset(tmp_path / "fs.yaml") == {
        "mc": [served["remote"], str(tmp_path / "local.root"), "/abs/x.root"]}
    assert fileset_from_files([served["remote"], served["local"]]) == {
        "mc_mixture": [served["remote"], served["local"]]}   # grouped by content, read over HTTP
    assert fileset_from_files([served["missing"]]) == {"default": [served["missing"]]}


def test_unblinding_hashes_remote_files(served):
    from na64reco.unblinding import files_state, sha256_file

    (remote,) = files_state([served["remote"]])
    assert remote["path"] == served["remote"]
    assert remote["sha256"] == sha256_file(served["local"])
    assert remote["size"] == location.file_info(served["local"]).size
    with pytest.raises(NA64Error, match="does not exist"):
        files_state([served["missing"]])
    assert files_state([served["missing"], served["remote"]], missing_ok=True) == [remote]


def test_display_over_http(served, tmp_path, capsys):
    out = tmp_path / "event.png"
    assert cli.main(["display", served["remote"], "--event", "3", "--output", str(out)]) == 0
    assert out.stat().st_size > 10_000 and served["remote"] in capsys.readouterr().out


def test_network_errors_of_remote_files_are_transient():
    import aiohttp

    from na64reco.runner import is_transient

    info = aiohttp.RequestInfo(url=aiohttp.client.URL("http://127.0.0.1/x.root"), method="GET", headers={},
                               real_url=aiohttp.client.URL("http://127.0.0.1/x.root"))
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert is_transient(aiohttp.ClientPayloadError("response payload is not completed"))
    assert is_transient(aiohttp.ClientResponseError(info, (), status=503))
    assert not is_transient(aiohttp.ClientResponseError(info, (), status=404))
    assert not is_transient(RawFormatError("http://127.0.0.1/x.root: file not found"))


def test_an_unreachable_server_is_a_bad_file_and_a_transient_error():
    import socket

    from na64reco.errors import RemoteFileUnavailable
    from na64reco.runner import is_transient

    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/run.root"
    with pytest.raises(RemoteFileUnavailable) as err:
        location.file_info(url)
    assert str(err.value).startswith(f"{url}: not reachable") and "\n" not in str(err.value)
    assert isinstance(err.value, RawFormatError) and is_transient(err.value)


def test_a_dropped_connection_is_retried_with_retries(served):
    """The server closes the connection instead of answering the large byte range of a
    chunk: without --retries the run stops with one line naming the URL and the entries;
    with them the chunk is read again and the result is the same."""
    fs = {"d": [served["remote"]]}
    reference = run_files(fs, RunOptions("na64mu_invisible", chunksize=150))
    server = served["server"]
    try:
        server.drop_ranges = 2
        with pytest.raises(NA64Error) as err:
            run_files(fs, RunOptions("na64mu_invisible", chunksize=150))
        assert str(err.value).startswith(f"{served['remote']} (entries ") and "\n" not in str(err.value)
        server.drop_ranges = 2
        out = run_files(fs, RunOptions("na64mu_invisible", chunksize=150, retries=4))
        assert server.drop_ranges == 0
    finally:
        server.drop_ranges = 0
    assert out["d"]["cutflow"].n.tolist() == reference["d"]["cutflow"].n.tolist()
    assert out["d"]["provenance"].events_processed == reference["d"]["provenance"].events_processed
