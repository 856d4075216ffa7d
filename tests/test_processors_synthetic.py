"""Synthetic raw files and a synthetic reco stage for the processor/runner tests.

The real reconstruction is tested elsewhere; here the reco record of an event is a
deterministic function of (run, event) (a counter-based hash), so every executor and
every chunking gives the same record, and the expected cut-flow can be computed
independently with plain numpy.  The raw files are real raw-format files (written with
RawWriter) whose digits are empty.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from na64reco.io.raw import PROCESSES, RawWriter, assemble_events

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (vectorised)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def uniform(run, event, k: int) -> np.ndarray:
    key = (np.asarray(run, np.uint64) << np.uint64(40)) ^ np.asarray(event, np.uint64) ^ (np.uint64(k) << np.uint64(56))
    return (_mix(key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def gauss(run, event, k):
    u1, u2 = uniform(run, event, k), uniform(run, event, k + 100)
    return np.sqrt(-2 * np.log(np.maximum(u1, 1e-300))) * np.cos(2 * np.pi * u2)


def synthetic_reco(events, setup, conditions, source="", leave_out=()):
    """Reco-like records from the event ids only (GeV, NaN where not reconstructed); ``leave_out``
    (the optional fields a processor does not read) is accepted and has nothing to leave out."""
    name = setup if isinstance(setup, str) else setup.name
    run, event = np.asarray(events["run"]), np.asarray(events["event"])
    n = len(event)
    u = lambda k: uniform(run, event, k)  # noqa: E731
    g = lambda k: gauss(run, event, k)    # noqa: E731
    e0 = 160.0 if name == "na64mu" else 100.0
    n_in = np.where(u(1) < 0.9, 1, np.where(u(2) < 0.5, 0, 2))
    p_in = np.where(n_in > 0, e0 * (1 + 0.03 * g(3)), np.nan)
    n_out = np.where(u(4) < 0.92, 1, 0)
    low = u(5) < 0.25
    p_out = np.where(low, 200 * u(6), p_in * (1 - 0.02 * np.abs(g(7))))
    p_out = np.where(n_out > 0, p_out, np.nan)
    hcal_mod = np.stack([2.2 + 0.4 * g(20 + i) for i in range(4)], axis=1)
    hcal_mod[u(25) < 0.05, 1] = 15.0
    srd = np.stack([0.025 * (1 + 0.3 * g(30 + i)) for i in range(3)], axis=1)
    if name == "na64mu":
        srd[:] = np.nan
        ecal = 0.4 + 0.05 * np.abs(g(8)) + np.where(u(9) < 0.1, 10 * u(10), 0.0)
    else:
        ecal = np.where(low, 60 * u(6), 100 * (1 + 0.02 * g(8)))
        hcal_mod = np.where(u(26)[:, None] < 0.9, 0.05 * np.abs(hcal_mod), hcal_mod)
    rec = {
        "run": run, "spill": np.asarray(events["spill"]), "event": event,
        "trigger": np.where(u(0) < 0.95, 1, 2).astype(np.uint32),
        "p_in": p_in, "p_out": p_out, "n_tracks_in": n_in, "n_tracks_out": n_out,
        "n_extra_planes_out": np.where(u(19) < 0.02, 6, (u(20) < 0.1).astype(np.int64)),
        "n_views_out": np.where(n_out > 0, np.where(u(27) < 0.9, 2, 1), 0).astype(np.int64),
        "chi2_in": 5 * u(11), "chi2_out": np.where(n_out > 0, 40 * u(12) ** 2, np.nan),
        "track_match_chi2": np.where(n_out > 0, 30 * u(18) ** 2, np.nan),
        "ecal_energy": ecal, "ecal_preshower_energy": 0.2 * ecal * (0.5 + u(13)),
        "ecal_main_energy": ecal * 0.8, "ecal_max_cell_x": np.full(n, 2), "ecal_max_cell_y": np.full(n, 3),
        "ecal_shower_chi2": 20 * u(14) ** 2,
        "hcal_energy": hcal_mod.sum(axis=1),
        "hcal_module_energy": ak.from_numpy(hcal_mod, regulararray=True),
        "vhcal_energy": np.where(u(15) < 0.05, 2.0, 0.01),
        "veto_energy": np.where(u(16) < 0.1, 0.05, 0.01 * u(17)),
        "veto_paddle_energy": ak.from_numpy(np.stack([0.003 * u(40 + i) for i in range(3)], axis=1),
                                            regulararray=True),
        "srd_module_energy": ak.from_numpy(srd, regulararray=True),
    }
    for c in (("S0", "S1", "V1", "S4", "Smu") if name == "na64mu" else ("S0", "S1", "V1")):
        rec[f"counter_{c}_energy"] = np.where(u(50 + len(c)) < 0.97, 0.01, 0.0)
    return ak.zip(rec, depth_limit=1)


def synthetic_processor(cls, stage=None):
    """A test subclass of processor ``cls`` whose reconstruction is ``stage`` (default
    :func:`synthetic_reco`), for data files too.

    The public ``reco=`` hook is refused for data (it could move events out of the signal
    box); a subclass is code, like an edit of the package, which no guard can stop
    (docs/unblinding.md).  The tests need it to check blinding on data with a known reco.
    """
    stage = stage or synthetic_reco

    class Synthetic(cls):
        def reconstruct(self, events, conditions, info):
            return stage(assemble_events(events, info.path or "<events>"), self.setup, conditions, info.path)

    Synthetic.__name__ = Synthetic.__qualname__ = f"Synthetic{cls.__name__}"
    return Synthetic


def write_raw(path, *, setup="na64mu", run=1, n_events=1000, first_event=0, truth=True,
              n_spills=4, beam_per_spill=100_000, basket_maps=True):
    """A raw-format file with empty digits, spills and (optionally) truth (``basket_maps=False``:
    format version 3, as written before stop 29, read through the trees' headers)."""
    event = np.arange(first_event, first_event + n_events, dtype=np.int64)
    spill = 1 + (event - first_event) * n_spills // max(n_events, 1)
    zeros = np.zeros(n_events, np.int64)
    ev = {"run": np.full(n_events, run), "spill": spill, "event": event,
          "trigger": np.ones(n_events, np.uint32), "time_in_spill": np.zeros(n_events),
          "n_calo": zeros, "calo_det": [], "calo_chan": [], "calo_adc": np.zeros((0, 32)),
          "n_apv": zeros, "apv_plane": [], "apv_chan": [], "apv_a0": [], "apv_a1": [], "apv_a2": [],
          "n_straw": zeros, "straw_plane": [], "straw_tube": [], "straw_tdc": []}
    with RawWriter(path, setup=setup, run=run, has_truth=truth, basket_maps=basket_maps) as w:
        w.write_events(ev)
        spills = np.arange(1, n_spills + 1)
        w.write_spills({"run": np.full(n_spills, run), "spill": spills,
                        "n_beam": np.full(n_spills, beam_per_spill),
                        "n_triggered": np.full(n_spills, n_events // n_spills)})
        if truth:
            u = uniform(np.full(n_events, run), event, 99)
            w.write_truth({"run": np.full(n_events, run), "spill": spill, "event": event,
                           "process": np.where(u < 0.5, PROCESSES["beam"], PROCESSES["signal"]),
                           "p_in": np.full(n_events, 160.0), "p_out": np.full(n_events, 100.0),
                           "x": u, "vertex_z": np.zeros(n_events), "e_ecal": zeros, "e_ecal_preshower": zeros,
                           "e_hcal": zeros, "e_vhcal": zeros, "e_veto": zeros, "e_srd": zeros,
                           "weight": 0.25 + 0.5 * u})  # (a weight is events per beam particle: <= 1)
    return path


def test_synthetic_reco_is_a_function_of_the_event_only():
    ev = {"run": np.full(10, 3), "spill": np.ones(10), "event": np.arange(10)}
    a = synthetic_reco(ev, "na64mu", None)
    b = synthetic_reco({k: v[5:] for k, v in ev.items()}, "na64mu", None)
    for f in a.fields:  # (NaN-aware comparison)
        np.testing.assert_array_equal(ak.to_numpy(a[f][5:]), ak.to_numpy(b[f]), err_msg=f)
