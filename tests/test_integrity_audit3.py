"""What a third data-integrity audit found: ``display`` read the event numbers through uproot's
TTree header, unverified (a damaged header was an internal error); ``reco``, ``display`` and ``dqm``
of a file whose run is in no period or has no conditions did not name the file, and ``run`` found
it only when a chunk of that file came (after the files before it were processed); an MSADC or APV
channel twice in an event was summed silently (twice the cell's energy); NaN or infinite true
energies, energy fraction or vertex passed into the reco table; a branch stored as a list per
entry where the format has one number (or the reverse) passed ``verify`` and ``reco``, and failed a
run with a decoding error."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from test_cli_output_safety import one_line_error
from test_processors_synthetic import synthetic_reco

import na64reco.io.raw as raw_io
from na64reco import cli
from na64reco.errors import CalibrationMissing, ConfigError, RawFormatError
from na64reco.io.raw import PROCESSES, RawWriter, open_raw
from na64reco.runner import RunOptions, run_files
from processors.na64mu_invisible import Processor


def _write(path, *, n=4, run=1001, tweak=None):
    """``n`` events with two ECAL digits, two APV digits and two hits of one straw tube each, in
    one spill; ``tweak(events, truth)`` edits the arrays before they are written."""
    event = np.arange(1, n + 1, dtype=np.int64)
    two = np.full(n, 2, np.int64)
    ev = {"run": np.full(n, run), "spill": np.ones(n), "event": event, "trigger": np.ones(n, np.uint32),
          "time_in_spill": np.full(n, 0.5), "n_calo": two, "calo_det": np.ones(2 * n),
          "calo_chan": np.tile([3, 4], n), "calo_adc": np.full((2 * n, 32), 300),
          "n_apv": two, "apv_plane": np.zeros(2 * n), "apv_chan": np.tile([10, 11], n),
          "apv_a0": np.full(2 * n, 5), "apv_a1": np.full(2 * n, 20), "apv_a2": np.full(2 * n, 10),
          "n_straw": two, "straw_plane": np.full(2 * n, 14), "straw_tube": np.full(2 * n, 7),  # (a tube hit twice)
          "straw_tdc": np.tile([30, 90], n)}
    zeros = np.zeros(n)
    tr = {"run": np.full(n, run), "spill": np.ones(n), "event": event, "process": np.full(n, PROCESSES["beam"]),
          "p_in": np.full(n, 160.0), "p_out": np.full(n, 150.0), "x": zeros, "vertex_z": np.full(n, np.nan),
          "e_ecal": zeros + 0.3, "e_ecal_preshower": zeros, "e_hcal": zeros + 10, "e_vhcal": zeros,
          "e_veto": zeros, "e_srd": zeros, "weight": np.ones(n)}
    if tweak is not None:
        tweak(ev, tr)
    with RawWriter(path, setup="na64mu", run=run, has_truth=True) as w:
        w.write_events(ev)
        w.write_spills({"run": [run], "spill": [1], "n_beam": [1000], "n_triggered": [n]})
        w.write_truth(tr)
    return str(path)


# ---- display reads the event numbers verified -----------------------------------------------
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit3") / "mu.root"
    assert cli.main(["simulate", "--setup", "na64mu", "--events", "3000", "--seed", "1", "--run", "1001",
                     "--output", str(path), "--quiet"]) == 0
    return path


def _zeroed(src, dst, region: str, length: int | None = None):
    from bitflip import regions

    a, b = regions(src)[region][0]
    data = bytearray(src.read_bytes())
    data[a:b if length is None else a + length] = bytes((b - a) if length is None else length)
    dst.write_bytes(bytes(data))
    return dst


def test_display_reads_no_tree_header_and_names_a_damaged_basket(simulated, tmp_path, capsys):
    number = int(open_raw(simulated).event_numbers()[0])
    # the events tree header is never read by the format-4 readers (basket maps): nor by display now
    header = _zeroed(simulated, tmp_path / "header.root", "events header")
    assert cli.main(["display", str(header), "--event", str(number), "--output", str(tmp_path / "a.png")]) == 0
    capsys.readouterr()
    basket = _zeroed(simulated, tmp_path / "basket.root", "events baskets", 16)  # the first basket's key
    err = one_line_error(capsys, ["display", str(basket), "--event", str(number), "--output",
                                  str(tmp_path / "b.png")])  # (was: internal error, DeserializationError)
    assert str(basket) in err and "basket" in err


# ---- a run without a period or conditions: the file named, before any chunk ------------------
@pytest.mark.parametrize("command", ["reco", "display", "dqm"])
def test_a_run_in_no_period_is_an_error_naming_the_file(tmp_path, capsys, command):
    path = _write(tmp_path / "run0.root", run=0)
    out = {"reco": ["--quiet", "--output", str(tmp_path / "r.parquet")], "display": ["--event", "1", "--output",
                                                                          str(tmp_path / "e.png")],
           "dqm": ["--output", str(tmp_path / "dqm"), "--no-plots"]}[command]
    err = one_line_error(capsys, [command, path, *out])
    assert f"{path}: setup 'na64mu', run 0:" in err and "is in no period" in err


def test_a_run_without_conditions_names_the_file(tmp_path, capsys, monkeypatch):
    import shutil

    from na64reco.conditions import _payload

    calib = tmp_path / "calib"
    shutil.copytree(cli.Path(raw_io.__file__).parents[2] / "calib", calib)
    payload = calib / "conditions/na64mu/calorimeter/v001.yaml"
    payload.write_text(payload.read_text().replace("runs: {first: 1, last: 999999}", "runs: {first: 1, last: 1500}"))
    monkeypatch.setenv("NA64RECO_CALIB", str(calib))
    _payload.cache_clear()
    path = _write(tmp_path / "run2000.root", run=2000)
    try:
        err = one_line_error(capsys, ["reco", path, "--quiet", "--output", str(tmp_path / "r.parquet")])
        assert f"{path}: run 2000 has no calorimeter conditions" in err
        with pytest.raises(CalibrationMissing, match="no calorimeter conditions") as exc:
            run_files({"d": [_write(tmp_path / "good.root", run=1001, n=6), path]},
                      RunOptions("na64mu_invisible", chunksize=200), processor_instance=Processor(reco=synthetic_reco))
        assert str(exc.value).startswith(f"{path}: ")
    finally:
        _payload.cache_clear()


def test_run_refuses_a_run_in_no_period_before_any_chunk(tmp_path):
    calls = []

    def counting(events, *args, **kw):
        calls.append(len(events))
        return synthetic_reco(events, *args, **kw)

    good, bad = _write(tmp_path / "good.root", run=1001), _write(tmp_path / "bad.root", run=0)
    for skip in (False, True):  # (a missing calibration is no bad file: it stops the run either way)
        with pytest.raises(ConfigError, match="run 0 is in no period") as exc:
            run_files({"d": [good, bad]}, RunOptions("na64mu_invisible", chunksize=200, skip_bad_files=skip,
                                                     check_cache=False),
                      processor_instance=Processor(reco=counting))
        assert str(exc.value).startswith(f"{bad}: ")
    assert calls == []  # (was: good.root processed, then the run failed in bad.root's chunk)


# ---- a channel twice in an event ------------------------------------------------------------
def _twice(coll: str, fields: tuple[str, ...], order=(0, 0)):
    def tweak(ev, tr):
        for f in fields:  # event 0: its first digit twice (order: which copies, in which order)
            first = ev[f"{coll}_{f}"][:2][list(order)]
            ev[f"{coll}_{f}"] = np.concatenate([first, ev[f"{coll}_{f}"][2:]])
        if coll == "calo":
            ev["calo_adc"] = np.concatenate([ev["calo_adc"][:2][list(order)], ev["calo_adc"][2:]])
    return tweak


@pytest.mark.parametrize("coll, fields, words", [
    ("calo", ("det", "chan"), "entry 0 has calo digit calo_det=1 calo_chan=3 twice"),
    ("apv", ("plane", "chan", "a0", "a1", "a2"), "entry 0 has apv digit apv_plane=0 apv_chan=10 twice"),
])
def test_a_channel_twice_in_an_event_is_refused(tmp_path, capsys, coll, fields, words):
    path = _write(tmp_path / "twice.root", tweak=_twice(coll, fields))
    with pytest.raises(RawFormatError, match=words):
        open_raw(path).events()  # (what run, reco and display read; was: the two digits summed)
    assert cli.main(["verify", path]) == 1 and words in capsys.readouterr().out


def test_digits_in_any_channel_order_and_straw_tubes_hit_twice_pass(tmp_path):
    path = _write(tmp_path / "order.root", tweak=_twice("calo", ("det", "chan"), order=(1, 0)))
    with open_raw(path) as raw:
        assert raw.verify()["events"] == 4
        assert np.asarray(raw.events()["calo"]["chan"][0]).tolist() == [4, 3]


# ---- the truth values that reach the reco table ---------------------------------------------
@pytest.mark.parametrize("branch, value", [("e_ecal", np.nan), ("e_hcal", -1.0), ("e_srd", np.inf),
                                           ("x", np.nan), ("x", 1.5), ("vertex_z", -np.inf)])
def test_non_finite_or_out_of_range_truth_values_are_refused(tmp_path, branch, value):
    def tweak(ev, tr):
        tr[branch] = np.array(tr[branch], float)
        tr[branch][2] = value

    path = _write(tmp_path / "truth.root", tweak=tweak)
    with pytest.raises(RawFormatError, match=rf"{path}: branch truth\.{branch} of entry 2 is .*; expected"):
        open_raw(path).truth()


# ---- a list per entry where the format has one number --------------------------------------
def test_a_branch_stored_as_a_list_per_entry_is_refused_when_opened(tmp_path, monkeypatch):
    make, extend = RawWriter._make_trees, RawWriter._extend

    def make_listed(self):
        mktree = self._file.mktree

        def listed(name, branches, **kw):
            if name == "events":
                branches = {**branches, "trigger": ak.types.ListType(ak.types.NumpyType("uint32"))}
            return mktree(name, branches, **kw)
        self._file.mktree = listed
        make(self)

    def extend_listed(self, tree, arrays, flat, n):
        if tree == "events":
            arrays = {**arrays, "trigger": ak.unflatten(arrays["trigger"], np.ones(n, np.int64))}
        extend(self, tree, arrays, flat, n)

    monkeypatch.setattr(RawWriter, "_make_trees", make_listed)
    monkeypatch.setattr(RawWriter, "_extend", extend_listed)
    path = _write(tmp_path / "listed.root")
    monkeypatch.undo()
    with pytest.raises(RawFormatError, match=rf"{path}: branch events.trigger holds a list of uint32 per entry, "
                                             "expected one uint32 per entry"):
        open_raw(path)  # (was: verify and reco passed it, a run failed decoding it)
    with open_raw(_write(tmp_path / "plain.root"), structure=False) as raw:  # the header's path as the map's
        raw.tree("events")
