"""Processors through the coffea Runner: executors agree, MOT counted once, dask survives
a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import cloudpickle
import numpy as np
import pytest
import test_processors_synthetic as synth
from test_processors_synthetic import synthetic_processor, synthetic_reco, write_raw

from na64reco.runner import RunOptions, run_files
from processors.na64e_invisible import Processor as EProcessor
from processors.na64mu_invisible import Processor

cloudpickle.register_pickle_by_value(synth)   # the synthetic reco travels to the workers


def slow_reco(events, setup, conditions, source=""):
    time.sleep(0.15)
    return synthetic_reco(events, setup, conditions, source)


cloudpickle.register_pickle_by_value(__import__(__name__))
SynthMu, SynthE = synthetic_processor(Processor), synthetic_processor(EProcessor)  # data too: see there


@pytest.fixture(scope="module")
def fileset(tmp_path_factory):
    d = tmp_path_factory.mktemp("proc")
    return {
        "mc": [str(write_raw(d / f"mc{i}.root", run=3, n_events=1500, first_event=10_000 * i,
                             n_spills=3, beam_per_spill=1000 + i)) for i in range(2)],
        "data": [str(write_raw(d / "data.root", run=3, n_events=1200, truth=False, n_spills=5,
                               beam_per_spill=777))],
    }


def _snapshot(out):
    """Everything numeric of an output, for exact comparison."""
    snap = {}
    for ds, acc in sorted(out.items()):
        cf = acc["cutflow"]
        snap[f"{ds}/cutflow"] = (cf.labels, cf.n.tolist(), cf.nm1_n.tolist(), cf.blinded)
        snap[f"{ds}/sumw"] = np.concatenate([cf.sumw, cf.sumw2, cf.nm1_sumw])
        for group in ("hists", "nminus1"):
            for name, h in acc[group].items():
                snap[f"{ds}/{group}/{name}"] = np.stack([h.values(flow=True), h.variances(flow=True)])
        regions = acc["regions"]
        snap[f"{ds}/regions"] = {k: (v.n, v.blinded) for k, v in regions.items()}
        snap[f"{ds}/regions_w"] = np.array([[v.sumw, v.sumw2] for v in regions.values()])
        p = acc["provenance"]
        snap[f"{ds}/prov"] = (p.events_processed, p.events_total, p.n_beam, p.n_spills,
                              p.selection_sha256, p.calib_tag, sorted(p.files))
    return snap


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-12, err_msg=k)
        else:
            assert a[k] == b[k], k


@pytest.fixture(scope="module")
def reference(fileset):
    return run_files(fileset, RunOptions("na64mu_invisible", chunksize=400),
                     processor_instance=SynthMu())


def test_iterative_output_content(reference, fileset):
    mc, data = reference["mc"], reference["data"]
    assert mc["provenance"].events_processed == 3000 == mc["provenance"].events_total
    assert mc["provenance"].chunks == 8
    # MOT from the spills trees, read once per file however many chunks it has
    assert mc["provenance"].n_beam == 3 * 1000 + 3 * 1001
    assert data["provenance"].n_beam == 5 * 777 and data["provenance"].n_spills == 5
    assert not mc["cutflow"].blinded and data["cutflow"].blinded
    assert mc["provenance"].selection_sha256 == Processor().selection.sha256
    # weighted: the histogram of p_in before cuts sums the truth weights
    import uproot

    w = 0.0
    for path in fileset["mc"]:
        with uproot.open(path) as f:
            w += f["truth"]["weight"].array(library="np").sum()
    assert mc["hists"]["p_in"][{"stage": "all"}].values(flow=True).sum() == pytest.approx(w)
    assert mc["cutflow"].sumw[0] == pytest.approx(w)


def test_chunking_does_not_change_the_result(reference, fileset):
    other = run_files(fileset, RunOptions("na64mu_invisible", chunksize=1000),
                      processor_instance=SynthMu())
    a, b = _snapshot(reference), _snapshot(other)
    for ds in ("mc", "data"):  # chunk counts differ, everything else agrees
        assert a.pop(f"{ds}/prov") == b.pop(f"{ds}/prov")
    _assert_same(a, b)


def test_futures_and_dask_agree_with_iterative(reference, fileset):
    ref = _snapshot(reference)
    fut = run_files(fileset, RunOptions("na64mu_invisible", executor="futures", workers=2,
                                        chunksize=400),
                    processor_instance=SynthMu())
    _assert_same(ref, _snapshot(fut))
    dsk = run_files(fileset, RunOptions("na64mu_invisible", executor="dask", workers=2, chunksize=400),
                    processor_instance=SynthMu())
    _assert_same(ref, _snapshot(dsk))


def test_dask_result_survives_a_killed_worker(reference, fileset):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = {}

        def go():
            result["out"] = run_files(fileset, RunOptions("na64mu_invisible", executor="dask",
                                                          chunksize=150, client=client),
                                      processor_instance=synthetic_processor(Processor, slow_reco)())

        t = threading.Thread(target=go)
        t.start()
        pids = client.run(os.getpid)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until work is really under way
            processing = client.processing()
            if sum(len(v) for v in processing.values()) >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        victim = sorted(pids)[0]
        os.kill(pids[victim], signal.SIGKILL)
        t.join(timeout=180)
        assert not t.is_alive()
        assert victim not in client.run(os.getpid)  # the worker really died
    snap = _snapshot(result["out"])
    ref = _snapshot(reference)
    for ds in ("mc", "data"):
        snap.pop(f"{ds}/prov"), ref.pop(f"{ds}/prov")
    _assert_same(ref, snap)
    assert result["out"]["mc"]["provenance"].events_processed == 3000
    assert result["out"]["mc"]["provenance"].n_beam == 6003


def test_na64e_processor_runs_and_blinds_data(tmp_path):
    mc = str(write_raw(tmp_path / "e_mc.root", setup="na64e", run=4, n_events=800))
    data = str(write_raw(tmp_path / "e_data.root", setup="na64e", run=4, n_events=800, truth=False))
    out = run_files({"mc": [mc], "data": [data]}, RunOptions("na64e_invisible", chunksize=300),
                    processor_instance=SynthE())
    assert out["mc"]["regions"]["signal_box"].n > 0
    assert out["data"]["regions"]["signal_box"].to_dict()["events"] == "blinded"
    assert out["data"]["hists"]["ecal_energy"][{"stage": "selected"}][:50j].values().sum() == 0
    assert "srd_module_energy" in out["mc"]["hists"]


class _TwinMu(SynthMu):
    """The synthetic processor whose chunks also fill ``hist.Hist`` by axis name, event
    selection by event selection (the slow twin of the shared-bin fills of
    :class:`~na64reco.hists.ChunkBins`), as outputs ``twin_hists`` / ``twin_nminus1``."""

    def process_chunk(self, events, meta):
        self._twin = {}
        out = super().process_chunk(events, meta)
        for acc in out.values():
            acc.update(self._twin)
        return out

    def _twin_fill(self, h, cols, mask, weights, names, stage=None):
        sel = slice(None) if mask is None else mask
        w = np.ones(len(cols))[sel] if weights is None else weights[sel]
        lead = {} if stage is None else {"stage": stage}
        x = cols[names[0]][sel]
        if len(names) == 1 and x.ndim == 2:  # one entry per module
            h.fill(**lead, module=np.broadcast_to(np.arange(x.shape[1]), x.shape).ravel(), **{names[0]: x.ravel()},
                   weight=np.repeat(w, x.shape[1]))
        else:
            h.fill(**lead, **{n: cols[n][sel] for n in names}, weight=w)

    def fill_histograms(self, reco, passed_all, weights, *, bins=None):
        twin = {}
        for names in [(v,) for v in self.variables()] + list(self.PAIRS):
            h = twin["_vs_".join(names)] = self._book(names, stage=True)
            self._twin_fill(h, reco, None, weights, names, stage="all")
            self._twin_fill(h, reco, passed_all, weights, names, stage="selected")
        self._twin["twin_hists"] = twin
        return super().fill_histograms(reco, passed_all, weights, bins=bins)

    def fill_nminusone(self, reco, selection, weights, *, bins=None):
        names, twin = [*self.selection.cut_names, "signal_box"], {}
        for name in names:
            var = self.selection.signal_box.variable if name == "signal_box" else self.selection.cut(name).variable
            h = twin[name] = self._book((var,), stage=False)
            self._twin_fill(h, reco, selection.all(*[n for n in names if n != name]), weights, (var,))
        self._twin["twin_nminus1"] = twin
        return super().fill_nminusone(reco, selection, weights, bins=bins)


def test_histograms_equal_hist_filled_by_axis_name(fileset):
    """The chunk's histograms filled from each variable's bins found once (``ChunkBins``,
    one ``np.bincount`` per histogram) are, bin for bin with the flow bins and to the last
    bit, ``hist.Hist`` filled by axis name for each stage and merged chunk by chunk: weighted
    (simulation) and not (blinded data), per-module and 2-D histograms, events passing all cuts."""
    out = run_files(fileset, RunOptions("na64mu_invisible", chunksize=400), processor_instance=_TwinMu())
    assert out["mc"]["provenance"].chunks == 8 and out["mc"]["cutflow"].n[-2] > 0  # "selected" filled
    compared = 0
    for ds in ("mc", "data"):
        for group in ("hists", "nminus1"):
            ours, twin = out[ds][group], out[ds][f"twin_{group}"]
            assert ours.keys() == twin.keys()
            for name, h in ours.items():
                ref = twin[name]
                assert h.axes == ref.axes, (ds, name)
                assert np.array_equal(h.view(flow=True).value, ref.view(flow=True).value), (ds, group, name)
                assert np.array_equal(h.view(flow=True).variance, ref.view(flow=True).variance), (ds, group, name)
                compared += h.view(flow=True).value.sum() > 0
    assert compared > 40
    modules = [n for n, h in out["mc"]["hists"].items() if "module" in h.axes.name]
    assert modules and out["mc"]["hists"][modules[0]].values().sum() > 0
    assert out["mc"]["hists"]["p_in"][{"stage": "selected"}].values().sum() > 0
