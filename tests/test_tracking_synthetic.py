"""A small synthetic tracker-event generator for the tracking tests (and its own checks).

Independent of ``na64reco.sim``: straight lines + thin magnet kicks + Highland scattering
in the planes, the air and the ECAL + Gaussian point smearing + APV pulses with charge
sharing over strips + MM multiplexing + straw drift + noise hits + optional pile-up.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from scipy.special import ndtr

from na64reco import constants, units
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.material import highland as _highland
from na64reco.pulse import apv_shape


def highland(p, x_over_x0):
    """Muon Highland angle (rad) at ``p`` MeV."""
    return _highland(p, constants.MUON_MASS, x_over_x0)


def _track_states(setup, rng, n, p_in, *, x0=None, y0=None, ecal_loss=None, scatter=True):
    """True measured coordinates at every plane, (n, n_planes), plus p_in, p_out (MeV)."""
    b = setup.beam
    x = rng.normal(0, b.spot_sigma_x, n) if x0 is None else x0
    y = rng.normal(0, b.spot_sigma_y, n) if y0 is None else y0
    tx = rng.normal(0, b.divergence_x, n)
    ty = rng.normal(0, b.divergence_y, n)
    p = np.asarray(p_in, float) * np.ones(n)
    p_in_true = p.copy()
    z = b.start_z
    elements = [(pl.z, "plane", pl) for pl in setup.planes]
    elements += [(m.center_z, "magnet", m) for m in setup.magnets.values()]
    if "ECAL" in setup.calorimeters and "MS2" in setup.magnets:
        elements.append((setup.detector("ECAL").z, "ecal", None))
    elements.sort(key=lambda e: e[0])
    coords = np.full((n, len(setup.planes)), np.nan)
    air = setup.readout.air_x0_per_metre
    for ze, kind, obj in elements:
        dz = ze - z
        if scatter and dz > 0:  # air as a thin scatterer in the middle of the gap
            th = np.array([highland(pp, air * dz / 1000) for pp in p])
            x, y = x + tx * dz / 2, y + ty * dz / 2
            tx, ty = tx + th * rng.standard_normal(n), ty + th * rng.standard_normal(n)
            x, y = x + tx * dz / 2, y + ty * dz / 2
        else:
            x, y = x + tx * dz, y + ty * dz
        z = ze
        if kind == "plane":
            coords[:, obj.index] = x if obj.measures == "x" else y
            if scatter:
                th = np.array([highland(pp, obj.x0_fraction) for pp in p])
                tx, ty = tx + th * rng.standard_normal(n), ty + th * rng.standard_normal(n)
        elif kind == "magnet":
            k = obj.kick(p)
            if obj.bend_plane == "x":
                tx = tx - k
            else:
                ty = ty - k
        elif kind == "ecal":
            loss = rng.exponential(2 * units.GeV, n) if ecal_loss is None else ecal_loss
            p = p - loss
            if scatter:
                th = np.array([highland(pp, 40.0) for pp in p])
                tx, ty = tx + th * rng.standard_normal(n), ty + th * rng.standard_normal(n)
    return coords, p_in_true, p


def make_events(n, *, setup="na64mu", seed=1, p_in=160 * units.GeV, noise=True, efficiency=True,
                pileup=0.0, scatter=True, ecal_loss=None, t_first=25.0, charge=40.0):
    """Synthetic events: (awkward events with apv/straw, truth dict).

    ``noise``: False, True / "cluster" (noise clusters at uniform positions) or "strip"
    (single fired strips: ambiguous MM channels).
    ``truth``: ``p_in``, ``p_out`` (GeV), ``coords`` (n, planes) true measured coordinates
    (mm), ``measured`` (n, planes) bool (plane efficient), ``pileup`` (n,) bool.
    """
    s = load_setup(setup)
    cond = load_conditions(s, 1)
    rng = np.random.default_rng(seed)
    ro = s.readout
    p_in = np.asarray(p_in, float) * (1 + s.beam.momentum_spread * rng.standard_normal(n))
    coords, pin, pout = _track_states(s, rng, n, p_in, ecal_loss=ecal_loss, scatter=scatter)
    has_pu = rng.random(n) < pileup
    pu_coords, _, _ = _track_states(s, rng, n, 160 * units.GeV * np.ones(n), scatter=scatter)
    eff = np.array([pl.efficiency for pl in s.planes]) if efficiency else np.ones(len(s.planes))
    measured = rng.random(coords.shape) < eff
    pu_measured = rng.random(coords.shape) < eff
    apv = {k: [] for k in ("ev", "plane", "chan", "a0", "a1", "a2")}
    straw = {k: [] for k in ("ev", "plane", "tube", "tdc")}
    shapes = apv_shape(t_first + np.arange(3) * ro.apv_sample_spacing, ro.apv_peaking_time)

    def apv_strips(e, pl, strip_values, amps):
        a = amps[:, None] * shapes[None, :] + ro.apv_noise * rng.standard_normal((len(amps), 3))
        keep = a.max(axis=1) > 3 * ro.apv_noise  # zero suppression
        for sv, ak_ in zip(strip_values[keep], np.round(a[keep]).astype(np.int16), strict=True):
            chan = int(ro.mm_channel_of_strip(sv)) if pl.type == "MM" else int(sv)
            for k, v in zip(("ev", "plane", "chan", "a0", "a1", "a2"), (e, pl.index, chan, *ak_), strict=True):
                apv[k].append(v)

    def deposit(e, pl, true_coord):
        u = true_coord + rng.normal(0, pl.resolution) - pl.center - cond.planes[pl.name].alignment
        if pl.type == "straw":
            tube = int(np.floor(u / pl.pitch + pl.n_strips / 2))
            if not 0 <= tube < pl.n_strips:
                return
            d = abs(u - float(pl.position_of(tube)))
            tdc = int(round(d / ro.straw_drift_velocity / ro.straw_tdc_lsb))
            for k, v in zip(("ev", "plane", "tube", "tdc"), (e, pl.index, tube, tdc), strict=True):
                straw[k].append(v)
            return
        sf = float(pl.strip_of(u))
        lo, hi = int(np.floor(sf)) - 3, int(np.floor(sf)) + 4
        strips = np.arange(max(lo, 0), min(hi, pl.n_strips))
        if strips.size == 0:
            return
        sig = ro.cluster_spread
        frac = ndtr((strips + 0.5 - sf) / sig) - ndtr((strips - 0.5 - sf) / sig)
        q = charge * rng.gamma(4.0, 0.25)
        apv_strips(e, pl, strips, q * frac * ro.apv_gain)

    for e in range(n):
        digits_before = len(apv["ev"])
        for pl in s.planes:
            if measured[e, pl.index]:
                deposit(e, pl, coords[e, pl.index])
            if has_pu[e] and pu_measured[e, pl.index]:
                deposit(e, pl, pu_coords[e, pl.index])
            if noise:
                for _ in range(rng.poisson(pl.noise_hits)):
                    if pl.type == "straw":
                        for k, v in zip(("ev", "plane", "tube", "tdc"),
                                        (e, pl.index, int(rng.integers(pl.n_strips)), int(rng.integers(0, 60))),
                                        strict=True):
                            straw[k].append(v)
                    elif noise == "strip":  # one fired strip: an ambiguous MM channel
                        st = np.array([rng.integers(pl.n_strips)])
                        apv_strips(e, pl, st, rng.uniform(20, 200, 1))
                    else:  # a cluster at a uniform position (as the simulator makes them)
                        deposit(e, pl, pl.center + cond.planes[pl.name].alignment + (rng.random() - 0.5) * pl.width)
        # a strip/channel fired twice (two deposits) is read once: sum the samples
        del digits_before
    ev = _merge(apv, ("plane", "chan"), ("a0", "a1", "a2"))
    a_counts = np.bincount(ev["ev"], minlength=n) if len(ev["ev"]) else np.zeros(n, int)
    s_ev = np.asarray(straw["ev"], np.int64)
    s_counts = np.bincount(s_ev, minlength=n) if len(s_ev) else np.zeros(n, int)
    events = ak.zip(
        {
            "apv": ak.unflatten(
                ak.zip({k: np.asarray(ev[k], np.int16) for k in ("plane", "chan", "a0", "a1", "a2")}), a_counts
            ),
            "straw": ak.unflatten(
                ak.zip(
                    {
                        "plane": np.asarray(straw["plane"], np.int16),
                        "tube": np.asarray(straw["tube"], np.int16),
                        "tdc": np.asarray(straw["tdc"], np.int32),
                    }
                ),
                s_counts,
            ),
        },
        depth_limit=1,
    )
    truth = {
        "p_in": pin / units.GeV,
        "p_out": pout / units.GeV,
        "coords": coords,
        "measured": measured,
        "pileup": has_pu,
    }
    return events, truth


def _merge(d, key_fields, sum_fields):
    """Sum digits with the same (event, key_fields); sorted by event."""
    ev = np.asarray(d["ev"], np.int64)
    if ev.size == 0:
        return {k: np.zeros(0, np.int64) for k in ("ev", *key_fields, *sum_fields)}
    keys = np.stack([ev] + [np.asarray(d[k], np.int64) for k in key_fields], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    out = {"ev": uniq[:, 0]}
    for i, k in enumerate(key_fields):
        out[k] = uniq[:, i + 1]
    for k in sum_fields:
        out[k] = np.clip(np.bincount(inv, weights=np.asarray(d[k], float), minlength=len(uniq)), -32768, 32767)
    return out


# ---------------------------------------------------------------------------------------
def test_generator_layout():
    events, truth = make_events(50, seed=3)
    assert len(events) == 50
    assert set(events.fields) == {"apv", "straw"}
    assert np.all(np.abs(truth["p_in"] / 160 - 1) < 0.15)
    s = load_setup("na64mu")
    plane = ak.flatten(events["apv"]["plane"]).to_numpy()
    assert set(np.unique(plane)) <= {p.index for p in s.planes if p.type != "straw"}
