"""Transport of all particles of a spill through the setup, element by element in z.

Elements (sorted by z): tracker planes (true crossings + multiple scattering), thin
counters and veto paddles (MIP deposits + scattering), magnets (thin kicks
``q * Magnet.kick(p)`` in the bend plane: a negative particle bends towards negative
coordinates, like the reference trajectory), the start of the K/pi decay regions at the
end of the incoming field (:mod:`na64reco.sim.decays`: each decay is applied before the first
element behind its point, a run of planes being cut there), and the thick detectors with
their physics (ECAL: target, muon energy loss, signal, tridents, showers; VHCAL; HCAL
modules; SRD).  Between elements
the particles fly straight and scatter in air (``air_x0_per_metre``) or in the gas of a
gas volume (``gas_volumes``: e.g. a helium bag in MS2).

Every step is vectorised over the particles; the Python loop runs over the ~25 elements
only.  Energy deposits and crossings go to a :class:`~na64reco.sim.tracks.Recorder`;
the true momenta at the stations and the signal/decay vertices go to ``truth``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc

from na64reco import constants
from na64reco.errors import ConfigError
from na64reco.geometry import Calorimeter, Magnet, Setup, TrackerPlane
from na64reco.io.raw import PROCESSES
from na64reco.sim import decays, hard_scatter, tridents
from na64reco.sim import interactions as phys
from na64reco.sim.biasing import forced_log_uniform, survival
from na64reco.sim.cells import cell_index
from na64reco.sim.params import SimParams
from na64reco.sim.punchthrough import lambda_ratios, punch_through
from na64reco.sim.signal import recoil_slopes, sample_signal_x
from na64reco.sim.tracks import (
    KIND_ELECTRON,
    KIND_KAON,
    KIND_MUON,
    KIND_PION,
    ROLE_PRIMARY,
    ROLE_SECONDARY,
    Recorder,
    Tracks,
    scatter_thick,
    scatter_thick_across_vertex,
    scatter_thin,
    thin_steps,
)

#: A muon slower than this stops (range out) in the thick detectors.
_STOP_MOMENTUM_FLOOR = 0.3 * constants.MUON_MASS


@dataclass(frozen=True)
class Element:
    z: float
    kind: str  # plane | counter | paddles | magnet | decay | ecal | vhcal | hcal | srd
    obj: object = None


_ELEMENTS: dict[int, tuple[Setup, tuple]] = {}


def elements(setup: Setup) -> tuple[Element, ...]:
    """The setup's elements in z order (with the decays' start at the end of the incoming field)."""
    cached = _ELEMENTS.get(id(setup))
    if cached is not None and cached[0] is setup:
        return cached[1]
    result = _elements(setup)
    _ELEMENTS[id(setup)] = (setup, result)
    return result


def _elements(setup: Setup) -> tuple[Element, ...]:
    out = [Element(p.z, "plane", p) for p in setup.planes]
    out += [Element(m.center_z, "magnet", m) for m in setup.magnets.values()]
    for det in setup.calorimeters.values():
        if det.kind in ("counter", "paddles"):
            out.append(Element(det.z, det.kind, det))
        elif det.name in ("ECAL", "VHCAL", "HCAL", "SRD"):
            out.append(Element(det.z, det.name.lower(), det))
    first = incoming_magnet(setup)
    out.append(Element(first.center_z + first.length / 2, "decay", None))  # decays.regions: the first starts here
    return tuple(sorted(out, key=lambda e: e.z))


#: elements with a depth: the transport leaves them at their back face
THICK = ("ecal", "vhcal", "hcal", "srd")


def after_element(el: Element) -> float:
    """Where a particle is after the transport handled element ``el`` (mm): its z, or the back
    face of a thick element."""
    return el.z + el.obj.depth if el.kind in THICK else el.z


def incoming_magnet(setup: Setup) -> Magnet:
    """The momentum station before the target (MS1 / MBPL): the first magnet in z."""
    return min(setup.magnets.values(), key=lambda m: m.center_z)


def outgoing_magnet(setup: Setup) -> Magnet | None:
    """The station measuring the scattered muon (MS2): a magnet after the ECAL, if any."""
    ecal_z = setup.detector("ECAL").z
    after = [m for m in setup.magnets.values() if m.center_z > ecal_z]
    return min(after, key=lambda m: m.center_z) if after else None


@dataclass
class Truth:
    """Per-event truth filled during transport (arrays over the spill's events)."""

    p_in: np.ndarray
    p_out: np.ndarray
    x: np.ndarray
    vertex_z: np.ndarray
    weight: np.ndarray  # probability of the forced process (biased runs), else 1

    @staticmethod
    def new(n: int) -> Truth:
        return Truth(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), np.full(n, np.nan), np.ones(n))


@dataclass
class Context:
    rng: np.random.Generator
    setup: Setup
    params: SimParams
    rec: Recorder
    truth: Truth
    signal_mass: float | None = None  # MeV
    #: biased sampling (single-process runs): rare processes are forced into the region that
    #: can reach the signal box and truth.weight gets the probability of what was forced
    biased: bool = False
    #: forced soft pile-up muons (:class:`na64reco.sim.forced_soft.SoftLosses`): their ECAL radiative
    #: losses conditioned on a hard one; None (default) changes nothing
    forced_soft: object = None
    #: forced single large-angle scattering (na64reco.sim.forced_scatter.ForcedScatter), else None
    forced_scatter: object = None
    #: natural single large-angle scatters of the primary muons (na64reco.sim.hard_scatter.Kinks), else None
    hard_kinks: object = None
    #: K/pi -> mu nu decays drawn and not yet reached (na64reco.sim.decays.Pending), else None
    decays: object = None


# ----------------------------------------------------------------------------------------
def follow(ctx: Context, tr: Tracks, last_z: float | None = None) -> Tracks:
    """Transport ``tr`` from ``beam.start_z`` through every element (up to and including
    the elements at ``z <= last_z`` if given: the rest are not reached, and draw no random
    numbers); returns the survivors."""
    z = ctx.setup.beam.start_z
    gas = ctx.setup.readout  # x0_between: air, or the gas of a gas volume
    els = elements(ctx.setup)
    if last_z is not None:
        els = tuple(e for e in els if e.z <= last_z)
    if ctx.forced_scatter is not None:  # biased sampling: adds the kink steps (kind "kink")
        from na64reco.sim import forced_scatter

        els = forced_scatter.prepare(ctx, els)
    kinks = ctx.hard_kinks
    at = kinks.by_element(els) if kinks is not None and kinks.ev.size else {}
    k = 0
    while k < len(els):
        el = els[k]
        due = ctx.decays.next_z if ctx.decays is not None else np.inf
        if due < el.z:  # decays in flight before this element (the tracks are at z)
            ctx.decays.apply_before(ctx, tr, z, el.z)
            due = ctx.decays.next_z
        if el.kind == "plane":  # a station's planes and their air gaps in one kernel
            end = k + 1
            while end < len(els) and els[end].kind == "plane" and els[end].z <= due:  # a run stops at a decay
                end += 1
            # a natural kink after a plane inside the run: applied before the run (at z) and taken
            # back from the crossings of the planes up to it (hard_scatter.apply doc)
            undo = [(i - k, *t) for i in range(k, end - 1) if i in at
                    for t in hard_scatter.apply(tr, kinks, at[i], z)]
            z = _planes(ctx, els[k:end], tr, z, gas, undo)
            if end - 1 in at:
                hard_scatter.apply(tr, kinks, at[end - 1], z)
            k = end
            continue
        dz = el.z - z
        if dz > 0 and el.kind != "decay":  # straight flight and the scattering in air (or a gas volume), in one
            # pass; the decays' start is no material and leaves the flight to the next element whole
            scatter_thin(ctx.rng, tr, gas.x0_between(z, el.z), tr.alive, drift=dz)
            z = el.z
        tr = _HANDLERS[el.kind](ctx, el, tr)
        if el.kind in THICK:
            z = after_element(el)
            tr = tr.take(tr.alive)
        if k in at:  # natural single large-angle scatters after this element
            hard_scatter.apply(tr, kinks, at[k], z)
        k += 1
    return tr


def _planes(ctx: Context, run: tuple[Element, ...], tr: Tracks, z: float, gas, undo=()) -> float:
    """Consecutive tracker planes: for each, the flight and air scattering (``gas.x0_between``,
    a :class:`~na64reco.geometry.TrackerReadout`) from ``z`` (if it
    is upstream), then :func:`_plane`, by :func:`~na64reco.sim.tracks.thin_steps` (the same
    numbers); returns the z of the last plane.  ``undo``: natural kinks applied before the run
    that belong after its plane ``r`` (``(r, tracks, theta_x, theta_y, z_kink)``): the crossings of
    planes 0..r are moved back by ``theta (z_plane - z_kink)``, which the kink had added."""
    drift, x, record = [], [], []
    for el in run:
        dz = el.z - z
        if dz > 0:
            drift.append(dz)
            x.append(gas.x0_between(z, el.z))
            record.append(-1)
            z = el.z
        drift.append(0.0)
        x.append(el.obj.x0_fraction)
        record.append(0 if el.obj.measures == "x" else 1)
    m = tr.alive
    coords = thin_steps(ctx.rng, tr, drift, x, record, m)
    for r, idx, tx, ty, z_k in undo:
        for el, coord in zip(run[:r + 1], coords, strict=False):
            coord[idx] -= (tx if el.obj.measures == "x" else ty) * (el.z - z_k)
    every = bool(m.all())  # the usual case (the thick elements drop the dead tracks): no masked copies
    for el, coord in zip(run, coords, strict=True):
        if every:  # the recorder concatenates (copies) its arrays; these are not changed in place
            ctx.rec.hit(tr.ev, el.obj.index, coord, tr.t)
        else:
            ctx.rec.hit(tr.ev[m], el.obj.index, coord[m], tr.t[m])
    return z


def _plane(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    p: TrackerPlane = el.obj
    m = tr.alive
    coord = tr.x if p.measures == "x" else tr.y
    ctx.rec.hit(tr.ev[m], p.index, coord[m], tr.t[m])
    scatter_thin(ctx.rng, tr, p.x0_fraction, m)
    return tr


def _counter(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    det: Calorimeter = el.obj
    ix, _, inside = cell_index(det, tr.x, tr.y)
    hit = inside & tr.alive
    n = int(hit.sum())
    if n:
        e = np.clip(phys.moyal(ctx.rng, det.mip_mpv, det.mip_width, n), 0.0, None)
        if det.kind == "paddles":  # both PMTs of the paddle see the paddle's deposit
            ev, t = tr.ev[hit], tr.t[hit]
            ctx.rec.deposit(ev, det.id, 2 * ix[hit], e, t)
            ctx.rec.deposit(ev, det.id, 2 * ix[hit] + 1, e, t)
        else:
            ctx.rec.deposit(tr.ev[hit], det.id, 0, e, tr.t[hit])
    scatter_thin(ctx.rng, tr, det.x0_fraction, hit)
    return tr


def _magnet(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    mag: Magnet = el.obj
    prim = tr.alive & (tr.role == ROLE_PRIMARY)
    if mag.name == incoming_magnet(ctx.setup).name:
        ctx.truth.p_in[tr.ev[prim]] = tr.p[prim]
    out = outgoing_magnet(ctx.setup)
    if out is not None and mag.name == out.name:
        mu = prim & (tr.kind == KIND_MUON)
        ctx.truth.p_out[tr.ev[mu]] = tr.p[mu]
    kick = np.where(tr.alive, tr.q * mag.kick(np.maximum(tr.p, 1e-9)), 0.0)
    if mag.bend_plane == "x":
        tr.tx = tr.tx + kick
    else:
        tr.ty = tr.ty + kick
    return tr


def _decay(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    """The start of the K/pi -> mu nu decay regions: the decay points are drawn here
    (:func:`~na64reco.sim.decays.schedule`) and applied when reached (``follow``)."""
    ctx.decays = decays.schedule(ctx, tr)
    return tr


# ---- ECAL: the active target -----------------------------------------------------------
def _ecal_sections(det: Calorimeter):
    """(depth mm, radiation lengths) per section from the setup's raw YAML."""
    secs = det.params.get("sections", [])
    x0 = [float(s.get("radiation_lengths", 0.0)) for s in secs]
    if len(x0) != len(det.section_depths) or sum(x0) <= 0:
        total = det.x0_fraction or 1.0
        x0 = [total * d / det.depth for d in det.section_depths]
    return np.asarray(det.section_depths, float), np.asarray(x0, float)


def _mm_of_x0(det: Calorimeter, t_x0):
    """Physical depth (mm from the front) of a depth in radiation lengths."""
    depths, x0 = _ecal_sections(det)
    return np.interp(t_x0, np.concatenate([[0.0], np.cumsum(x0)]), np.concatenate([[0.0], np.cumsum(depths)]))


def _vertex_depths(rng, det: Calorimeter, n: int):
    """(mm from the front, fraction of the radiation lengths in front) of ``n`` interaction vertices
    in the ECAL, uniform in the lead crossed (radiation lengths), not in millimetres: the sections
    sample lead at different densities (NA64mu: 4 X0 in the 80 mm preshower, 36 X0 in the 450 mm
    main section), and the signal's, the tridents' and the leading hadrons' rates go with the
    nuclei crossed.  One uniform number per vertex."""
    _, x0 = _ecal_sections(det)
    total = float(x0.sum())
    t = rng.uniform(0.0, total, n)
    return _mm_of_x0(det, t), t / total


def _x0_of_mm(det: Calorimeter, z_mm):
    """Depth in radiation lengths of a physical depth (mm from the front); inverse of :func:`_mm_of_x0`."""
    depths, x0 = _ecal_sections(det)
    return np.interp(z_mm, np.concatenate([[0.0], np.cumsum(depths)]), np.concatenate([[0.0], np.cumsum(x0)]))


def _deposit_cells(ctx: Context, det: Calorimeter, section, ev, x, y, energy, t):
    """Single-cell deposits at global (x, y) in ``section`` (array or int); outside -> lost."""
    ix, iy, inside = cell_index(det, x, y)
    keep = inside & (np.asarray(energy) > 0)
    if np.any(keep):
        sec = np.broadcast_to(np.asarray(section), keep.shape)[keep]
        ctx.rec.deposit(ev[keep], det.id, det.channel(sec, ix[keep], iy[keep]),
                        np.asarray(energy)[keep], np.asarray(t)[keep])


def _spread_fractions(det: Calorimeter, x, y, sigmas, weights) -> np.ndarray:
    """(n, nx, ny) fractions of spots at (x, y) in the cells of a section (Gaussian mixture)."""
    cx, cy = det.cell_center((det.nx - 1) / 2, (det.ny - 1) / 2)
    return phys.cell_fractions(np.asarray(x) - cx, np.asarray(y) - cy, det.nx, det.ny, det.cell_size, sigmas, weights)


def _deposit_spread(ctx: Context, det: Calorimeter, section: int, ev, x, y, energy, t, sigmas, weights,
                    min_energy: float = 0.05, frac: np.ndarray | None = None):
    """Deposits of spots spread over the cells of one section (Gaussian mixture; ``frac``: the spots'
    :func:`_spread_fractions` if already computed, e.g. for another section)."""
    if len(ev) == 0:
        return
    if frac is None:
        frac = _spread_fractions(det, x, y, sigmas, weights)
    e = np.asarray(energy)[:, None, None] * frac
    k, ix, iy = np.nonzero(e > min_energy)
    if k.size:
        ctx.rec.deposit(np.asarray(ev)[k], det.id, det.channel(section, ix, iy), e[k, ix, iy], np.asarray(t)[k])


def _em_shower(ctx: Context, det: Calorimeter, ev, x, y, energy, t_start_x0, t):
    """EM showers starting at depth ``t_start_x0`` (X0): resolution, preshower/main split, lateral."""
    prm, rm = ctx.params, _moliere(det)
    e = phys.smear_energy(ctx.rng, energy, float(det.params.get("resolution_stochastic", 0.0)),
                          float(det.params.get("resolution_constant", 0.0)))
    _, x0 = _ecal_sections(det)
    a, b = phys.em_profile_fluctuated(ctx.rng, e, prm.critical_energy, prm.profile_b, prm.fluct_log_tmax,
                                      prm.fluct_log_alpha, prm.fluct_rho)
    depth = np.clip(x0[0] - np.asarray(t_start_x0, float), 0.0, None)
    f_ps = np.where(depth > 0, gammainc(a, b * depth), 0.0)
    sig = (prm.core_sigma * rm, prm.tail_sigma * rm)
    w = (prm.core_fraction, 1.0 - prm.core_fraction)
    if len(x0) > 1:  # the same lateral spread in both sections: its fractions computed once
        frac = _spread_fractions(det, x, y, sig, w) if len(ev) else None
        _deposit_spread(ctx, det, 0, ev, x, y, e * f_ps, t, sig, w, frac=frac)
        _deposit_spread(ctx, det, 1, ev, x, y, e * (1 - f_ps), t, sig, w, frac=frac)
    else:
        _deposit_spread(ctx, det, 0, ev, x, y, e, t, sig, w)


@functools.lru_cache(maxsize=8)
def _moliere_cached(text: str) -> float:
    from na64reco.units import parse_quantity

    return parse_quantity(text, "length")


def _moliere(det: Calorimeter) -> float:
    value = det.params.get("moliere_radius")
    if value is None:
        return det.cell_size[0]
    return _moliere_cached(str(value))


def _mip_split(ctx: Context, det: Calorimeter, n: int):
    """Total MIP deposit and its preshower share (Beta-distributed around the X0 share)."""
    rng = ctx.rng
    total = np.clip(phys.moyal(rng, det.mip_mpv, det.mip_width, n), 0.0, None)
    depths, x0 = _ecal_sections(det)
    share = x0[0] / x0.sum()
    kappa = 100.0  # concentration: sd of the share = sqrt(f (1 - f) / 101) (assumed)
    f = rng.beta(share * kappa, (1 - share) * kappa, n) if len(x0) > 1 else np.ones(n)
    return total, f


def _ecal(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    det: Calorimeter = el.obj
    rng, prm = ctx.rng, ctx.params
    depths, x0 = _ecal_sections(det)
    total_x0, length = float(x0.sum()), det.depth
    _, _, inside = cell_index(det, tr.x, tr.y)
    inside &= tr.alive
    new_tracks: list[Tracks] = []
    mid = np.cumsum(depths) - depths / 2  # section mid-depths (mm)

    # ---- muons -------------------------------------------------------------------------
    mu = np.flatnonzero(inside & (tr.kind == KIND_MUON))
    across = None  # the muons with a signal or trident vertex: (index, X0 fraction, mm, momentum before)
    pair_scatter: list = []  # a trident's muon pair: (tracks, radiation lengths and mm behind the vertex)
    if mu.size:
        p = tr.p[mu].copy()
        p_front = p.copy()
        f_vertex = np.ones(mu.size)  # depth of a signal or trident vertex in radiation lengths / total (1: none)
        z_vertex = np.full(mu.size, length)  # and in mm
        ev, t = tr.ev[mu], tr.t[mu]
        # signal: dark bremsstrahlung
        sig = np.flatnonzero((tr.flag[mu] == PROCESSES["signal"]) & (tr.role[mu] == ROLE_PRIMARY))
        if sig.size and ctx.signal_mass is not None:
            xs = sample_signal_x(rng, sig.size, ctx.setup.beam.energy, ctx.signal_mass, constants.MUON_MASS)
            zv, fv = _vertex_depths(rng, det, sig.size)
            p[sig] = p[sig] * (1.0 - xs)
            dtx, dty = recoil_slopes(rng, p[sig], xs, ctx.setup.beam.energy, ctx.signal_mass, constants.MUON_MASS)
            j = mu[sig]
            _kink(tr, j, dtx, dty, zv)
            ctx.truth.x[ev[sig]] = xs
            ctx.truth.vertex_z[ev[sig]] = det.z + zv
            f_vertex[sig], z_vertex[sig] = fv, zv
        # tridents mu N -> mu N mu+ mu- (na64reco.sim.tridents: the spacelike and the timelike part)
        dim = np.flatnonzero((tr.flag[mu] == PROCESSES["dimuon"]) & (tr.role[mu] == ROLE_PRIMARY))
        if dim.size:
            # forced (biased runs) into the pair fractions that can put the muon in the box
            v, legs, (rtx, rty), w = tridents.draw(rng, p[dim], ctx.setup.beam.energy, prm, ctx.biased)
            if ctx.biased:
                ctx.truth.weight[ev[dim]] *= w
            zv, fv = _vertex_depths(rng, det, dim.size)
            f_vertex[dim], z_vertex[dim] = fv, zv
            p[dim] -= v * p[dim]
            ctx.truth.vertex_z[ev[dim]] = det.z + zv
            j = mu[dim]
            rest = length - zv
            xv, yv = tr.x[j] + tr.tx[j] * zv, tr.y[j] + tr.ty[j] * zv
            pair = []
            for charge, (pm, dtx, dty) in zip((+1, -1), legs, strict=True):
                ntx, nty = tr.tx[j] + dtx, tr.ty[j] + dty
                pair.append(Tracks(
                    ev=ev[dim].copy(), x=xv + ntx * rest - ntx * length, y=yv + nty * rest - nty * length,
                    tx=ntx, ty=nty, p=pm.copy(), q=np.full(dim.size, charge, np.int8),
                    kind=np.full(dim.size, KIND_MUON, np.int8), role=np.full(dim.size, ROLE_SECONDARY, np.int8),
                    flag=tr.flag[j].copy(), t=t[dim].copy(), alive=pm > _STOP_MOMENTUM_FLOOR))
                # their ionisation over the remaining material, the share of the ECAL's lead behind the
                # vertex (main section cell at the exit)
                e_ion = np.clip(phys.moyal(rng, det.mip_mpv, det.mip_width, dim.size), 0, None) * (1.0 - f_vertex[dim])
                _deposit_cells(ctx, det, len(depths) - 1, ev[dim], xv + ntx * rest, yv + nty * rest, e_ion, t[dim])
                # and their discrete losses behind the vertex, showering where they happen (stop 43)
                pair[-1].p -= e_ion + _pair_losses(ctx, det, ev[dim], t[dim], xv, yv, ntx, nty, zv, f_vertex[dim], pm)
                pair[-1].alive &= pair[-1].p > _STOP_MOMENTUM_FLOOR
            _kink(tr, j, rtx, rty, zv)  # the primary's recoil
            # the pair is scattered over the depth behind the vertex at the ECAL's exit (below)
            pair_scatter += [(nt, total_x0 * (1.0 - f_vertex[dim]), rest) for nt in pair]
            new_tracks += pair  # positions are given at the ECAL *front* plane like the others
        # leading neutral hadron mu N -> mu X h, punching through everything behind it
        lead = np.flatnonzero((tr.flag[mu] == PROCESSES["punchthrough"]) & (tr.role[mu] == ROLE_PRIMARY))
        if lead.size:
            _leading_hadron(ctx, det, tr, mu[lead], p, lead)
        # ionisation (MIP), split preshower / main, one cell per section at mid-depth
        total, f_ps = _mip_split(ctx, det, mu.size)
        for s in range(len(depths)):
            e_s = total * (f_ps if s == 0 else (1 - f_ps)) if len(depths) > 1 else total
            _deposit_cells(ctx, det, s, ev, tr.x[mu] + tr.tx[mu] * mid[s], tr.y[mu] + tr.ty[mu] * mid[s], e_s, t)
        # discrete losses (knock-ons, bremsstrahlung, pairs), showering where they happen: at the
        # energy before a signal or trident vertex in front of it, at the energy after it behind
        k, v, depth, e_at = _discrete_losses(ctx, mu.size, p_front, p, f_vertex)
        if ctx.forced_soft is not None:
            k, v, depth, e_at = ctx.forced_soft.losses(rng, ev, k, v, depth, e_at, p)
        if k.size:
            e_loss = v * e_at
            tv = depth * total_x0
            zv = _mm_of_x0(det, tv)
            j = mu[k]
            _em_shower(ctx, det, ev[k], tr.x[j] + tr.tx[j] * zv, tr.y[j] + tr.ty[j] * zv, e_loss, tv, t[k])
            # a loss in front of a vertex lowers the energy the vertex's fraction is taken of
            np.subtract.at(p, k, v * p[k])
        p -= total
        tr.p[mu] = p
        tr.alive[mu] = p > _STOP_MOMENTUM_FLOOR
        vertex = f_vertex < 1.0
        across = (mu[vertex], f_vertex[vertex], z_vertex[vertex], p_front[vertex])

    # ---- electrons: full EM shower (and the dark photon signal) -------------------------
    el_idx = np.flatnonzero(inside & (tr.kind == KIND_ELECTRON))
    if el_idx.size:
        e = tr.p[el_idx].copy()
        ev, t = tr.ev[el_idx], tr.t[el_idx]
        sig = np.flatnonzero((tr.flag[el_idx] == PROCESSES["signal"]) & (tr.role[el_idx] == ROLE_PRIMARY))
        start = np.zeros(el_idx.size)
        if sig.size and ctx.signal_mass is not None:
            xs = sample_signal_x(rng, sig.size, ctx.setup.beam.energy, ctx.signal_mass, constants.ELECTRON_MASS)
            # the vertex uniform over the primary's production depth, as the yield integrates it
            # (physics/yields.py: the slices of ELECTRON_SIGNAL_DEPTH_X0); the primary reaches it with its mean
            # energy E0 exp(-t): the rest went to bremsstrahlung photons, which shower from the front; the X takes
            # x E(t), the recoil's (1 - x) E(t) showers from the vertex (before: a depth drawn Exp(1 X0) over the
            # whole ECAL for the truth only, x E0 missing and nothing in front of the recoil's shower)
            u01 = rng.random(sig.size)
            tv = u01 * min(constants.ELECTRON_SIGNAL_DEPTH_X0, total_x0)
            e_vertex = e[sig] * np.exp(-tv)
            radiated = e[sig] - e_vertex
            e[sig] = (1.0 - xs) * e_vertex
            start[sig] = tv
            ctx.truth.x[ev[sig]] = xs
            ctx.truth.vertex_z[ev[sig]] = det.z + _mm_of_x0(det, tv)
            j = el_idx[sig]
            _em_shower(ctx, det, ev[sig], tr.x[j], tr.y[j], radiated, np.zeros(sig.size), t[sig])
        _em_shower(ctx, det, ev, tr.x[el_idx], tr.y[el_idx], e, start, t)
        tr.alive[el_idx] = False

    # ---- hadrons: interaction (shower shared with the HCAL) or MIP ------------------------
    had = np.flatnonzero(inside & ((tr.kind == KIND_PION) | (tr.kind == KIND_KAON)))
    if had.size:
        ev, t = tr.ev[had], tr.t[had]
        # depth of the interaction in nucleon interaction lengths (a pion's or kaon's is lambda_ratio
        # times longer); a parent whose decay lies behind the ECAL was drawn to cross it (decays module)
        d = rng.exponential(1.0, had.size) * lambda_ratios(prm.punch, tr.kind[had])
        inter = d < prm.hadron_ecal_lambda
        if ctx.decays is not None:
            inter &= ~((tr.role[had] == ROLE_PRIMARY) & ctx.decays.holds(ev))
        total, f_ps = _mip_split(ctx, det, had.size)
        frac_before = np.where(inter, d / max(prm.hadron_ecal_lambda, 1e-9), 1.0)
        for s in range(len(depths)):
            e_s = total * frac_before * (f_ps if s == 0 else (1 - f_ps)) if len(depths) > 1 else total * frac_before
            _deposit_cells(ctx, det, s, ev, tr.x[had] + tr.tx[had] * mid[s], tr.y[had] + tr.ty[had] * mid[s], e_s, t)
        tr.p[had] -= total * frac_before
        j = had[inter]
        if j.size:
            _hadron_shower_from_ecal(ctx, det, tr, j, d[inter])
            tr.alive[j] = False

    # ---- all survivors: multiple scattering in the ECAL and straight flight ------------
    tr.drift(length)  # straight line with the incoming slopes, then the scattering at the exit
    _ecal_scattering(rng, tr, det.x0_fraction, length, tr.alive & inside, across)
    if new_tracks:
        for nt in new_tracks:
            nt.drift(length)
        for nt, x_rest, rest in pair_scatter:
            scatter_thick(rng, nt, x_rest, rest, nt.alive)
        tr = Tracks.concat([tr] + new_tracks)
    return tr


def _kink(tr: Tracks, j, dtx, dty, zv) -> None:
    """Tracks ``j`` (lines given at the element's front) turned by ``(dtx, dty)`` at depth ``zv`` mm: the
    line is shifted so that it still passes through the vertex."""
    tr.x[j] -= dtx * zv
    tr.y[j] -= dty * zv
    tr.tx[j] += dtx
    tr.ty[j] += dty


def _pair_losses(ctx: Context, det: Calorimeter, ev, t, xv, yv, tx, ty, zv, f_vertex, p) -> np.ndarray:
    """The ECAL's discrete losses of muons made at a vertex (a trident's pair: at ``(xv, yv)``, depth
    ``zv`` mm and X0 fraction ``f_vertex``, slopes ``tx, ty``, momentum ``p``) over the depth behind
    it, each showering where it happens; returns the energy each muon lost to them."""
    total_x0 = float(_ecal_sections(det)[1].sum())
    k, v, depth = ctx.params.ecal_losses.sample(ctx.rng, p, f_vertex, 1.0)
    lost = np.zeros(p.size)
    if k.size:
        tv = depth * total_x0
        dz = _mm_of_x0(det, tv) - zv[k]
        _em_shower(ctx, det, ev[k], xv[k] + tx[k] * dz, yv[k] + ty[k] * dz, v * p[k], tv, t[k])
        np.add.at(lost, k, v * p[k])
    return lost


def _ecal_scattering(rng, tr: Tracks, x0: float, length: float, live, across) -> None:
    """The ECAL's multiple scattering at its exit (``x0`` radiation lengths over ``length`` mm) of the
    ``live`` tracks; a muon with a signal or trident vertex (``across``: track indices, the vertex's
    X0 fraction and depth in mm, the momentum before it) is scattered over the part in front of the
    vertex at its momentum before and over the rest at its momentum now, once."""
    if across is None or not across[0].size:
        scatter_thick(rng, tr, x0, length, live)
        return
    j, f, zv, p_in = across
    keep = live[j]
    rest = live.copy()
    rest[j] = False
    scatter_thick(rng, tr, x0, length, rest)
    scatter_thick_across_vertex(rng, tr, j[keep], x0 * f[keep], zv[keep], p_in[keep], x0 * (1.0 - f[keep]),
                                length - zv[keep])


def _discrete_losses(ctx: Context, n: int, p_front, p_back, f_vertex):
    """The ECAL's discrete losses of ``n`` muons: ``(k, v, depth, energy)`` per loss (track index,
    fraction of the energy, depth fraction, the energy it is a fraction of).  A muon with a vertex
    at depth fraction ``f_vertex < 1`` crosses the part in front of it at ``p_front`` and the rest
    at ``p_back``; the others cross it all at ``p_back`` (which a leading-hadron muon has lowered
    already: its vertex is not split, the losses are drawn at its energy after it)."""
    losses = ctx.params.ecal_losses
    k, v, depth = losses.sample(ctx.rng, np.where(f_vertex < 1.0, p_front, p_back), 0.0, f_vertex)
    after = np.flatnonzero(f_vertex < 1.0)
    if not after.size:
        return k, v, depth, p_back[k]
    k2, v2, d2 = losses.sample(ctx.rng, p_back[after], f_vertex[after], 1.0)
    k2 = after[k2]
    k, v, depth = np.concatenate([k, k2]), np.concatenate([v, v2]), np.concatenate([depth, d2])
    e_at = np.where((f_vertex[k] < 1.0) & (depth < f_vertex[k]), p_front[k], p_back[k])
    return k, v, depth, e_at


def _leading_hadron(ctx: Context, det: Calorimeter, tr: Tracks, j, p, k):
    """mu N -> mu X h in the target with a leading neutral hadron (process ``punchthrough``).

    ``j``: track indices of the muons, ``p[k]`` their momenta (updated here).  Vertex
    uniform in the ECAL's radiation lengths (:func:`_vertex_depths`); energy transfer nu = v p,
    dN/dv ~ 1/v on [leading v_min, 1];
    the leading hadron (neutral, a neutron) takes z nu, z ~ U(0, 1); the rest (1 - z) nu
    showers at the vertex with the visible fraction.  Forced, each with its probability in
    the weight of biased runs: v in [biasing v_min, 1] (the box), the hadron neutral, a
    visible ECAL shower below ``biasing.ecal_visible_max``, no interaction of the hadron in
    the rest of the ECAL (exp(-lambda_rest)), punch-through of every HCAL module
    (:func:`~na64reco.sim.punchthrough.punch_through`, biased estimator); times the rate of
    leading hadrons per muon.  Unbiased (mixture) runs use the same forced kinematics with
    weight 1 (``mixture.punchthrough`` is the rate per MOT).  The neutral hadron is not
    tracked: it flies along the beam through the VHCAL hole and leaves less than the neutral
    cut in the HCAL (assumed; the forcing).
    """
    rng, prm = ctx.rng, ctx.params
    n = j.size
    ev, t = tr.ev[j], tr.t[j]
    v, w = forced_log_uniform(rng, n, prm.need("leading_v_min"), 1.0, prm.need("bias_v_min"), 1.0)
    w = w * prm.leading_rate * prm.leading_neutral_fraction
    nu = v * p[k]
    fvis = prm.hadron_visible_fraction
    budget = np.clip(prm.need("bias_ecal_visible_max") / np.maximum(nu * fvis, 1e-9), 0.0, 1.0)
    z = 1.0 - budget * rng.random(n)  # U(1 - budget, 1): visible (1 - z) nu f_vis below the max
    w = w * budget
    zv, fv = _vertex_depths(rng, det, n)
    ratio = prm.punch.lambda_ratio.get("neutron", 1.0) if prm.punch is not None else 1.0
    # the interaction lengths behind the vertex: the ECAL's, in the share of its lead left behind
    w = w * survival(prm.hadron_ecal_lambda * (1.0 - fv), ratio)
    hcal = ctx.setup.calorimeters.get("HCAL")
    if hcal is not None and prm.punch is not None:
        w = w * punch_through(rng, prm.punch, "neutron", z * nu, hcal.n_sections, biased=True)
    e_vis = (1.0 - z) * nu * fvis
    xv, yv = tr.x[j] + tr.tx[j] * zv, tr.y[j] + tr.ty[j] * zv
    section = np.searchsorted(np.cumsum(det.section_depths), zv, side="right")
    section = np.minimum(section, len(det.section_depths) - 1)
    for sec in np.unique(section):
        m = section == sec
        _deposit_spread(ctx, det, int(sec), ev[m], xv[m], yv[m], e_vis[m], t[m], (prm.hadron_lateral_sigma,), (1.0,))
    p[k] = p[k] - nu
    ctx.truth.vertex_z[ev] = det.z + zv
    if ctx.biased:
        ctx.truth.weight[ev] *= w


def _hadron_shower_from_ecal(ctx: Context, ecal: Calorimeter, tr: Tracks, j, d_lambda):
    """Hadron interacting at depth ``d_lambda`` of the ECAL: ECAL / VETO / HCAL deposits."""
    rng, prm, setup = ctx.rng, ctx.params, ctx.setup
    hcal = setup.calorimeters.get("HCAL")
    e_vis = tr.p[j] * prm.hadron_visible_fraction
    if hcal is None:
        raise ConfigError(f"setup {setup.name}: a hadron showering in the ECAL needs the HCAL's hadronic energy "
                          "resolution, and the setup has no HCAL")
    stoch, const = hcal.number("resolution_stochastic"), hcal.number("resolution_constant")
    e_vis = phys.smear_energy(rng, e_vis, stoch, const)
    ev, t = tr.ev[j], tr.t[j]
    lam = prm.hadron_ecal_lambda
    rem = lam - d_lambda  # interaction lengths left in the ECAL
    f_ecal = phys.hadron_fraction_before(rem, prm.hadron_profile_shape)
    # the preshower's share of the interaction lengths is taken as its share of the depth (15 %); with the
    # Pb/Sc fractions of the two sections the materials give ~12 % (the scintillator weighs more in lambda
    # than in X0: the X0 share is 10 %), and the NA64e hadron trigger (preshower > 0.3 GeV) is steep in it:
    # 7.6 % of 100 GeV pions at 15 %, 1.3 % at 10 % (stop 47, 5000 pions)
    depths, _ = _ecal_sections(ecal)
    ps_lambda = lam * depths[0] / depths.sum()
    f_ps = np.where(d_lambda < ps_lambda,
                    phys.hadron_fraction_before(ps_lambda - d_lambda, prm.hadron_profile_shape), 0.0)
    sig = (prm.hadron_lateral_sigma,)
    zv = d_lambda / lam * ecal.depth
    xv, yv = tr.x[j] + tr.tx[j] * zv, tr.y[j] + tr.ty[j] * zv
    if len(depths) > 1:
        _deposit_spread(ctx, ecal, 0, ev, xv, yv, e_vis * f_ps, t, sig, (1.0,))
        _deposit_spread(ctx, ecal, 1, ev, xv, yv, e_vis * (f_ecal - f_ps), t, sig, (1.0,))
    else:
        _deposit_spread(ctx, ecal, 0, ev, xv, yv, e_vis * f_ecal, t, sig, (1.0,))
    veto = setup.calorimeters.get("VETO")
    if veto is not None and prm.hadron_veto_leak_mips > 0:
        n_mip = rng.poisson(prm.hadron_veto_leak_mips, j.size)
        zz = veto.z - ecal.z
        ix, _, ins = cell_index(veto, tr.x[j] + tr.tx[j] * zz, tr.y[j] + tr.ty[j] * zz)
        k = ins & (n_mip > 0)
        if np.any(k):
            e = n_mip[k] * np.clip(phys.moyal(rng, veto.mip_mpv, veto.mip_width, int(k.sum())), 0, None)
            ctx.rec.deposit(ev[k], veto.id, 2 * ix[k], e, t[k])
            ctx.rec.deposit(ev[k], veto.id, 2 * ix[k] + 1, e, t[k])
    lam_mod = hcal.number("interaction_lengths_per_module")
    zz = hcal.z - ecal.z
    xh, yh = tr.x[j] + tr.tx[j] * zz, tr.y[j] + tr.ty[j] * zz
    for m in range(hcal.n_sections):
        f = (phys.hadron_fraction_before(rem + (m + 1) * lam_mod, prm.hadron_profile_shape)
             - phys.hadron_fraction_before(rem + m * lam_mod, prm.hadron_profile_shape))
        _deposit_spread(ctx, hcal, m, ev, xh, yh, e_vis * f, t, sig, (1.0,))


# ---- VHCAL, HCAL, SRD ------------------------------------------------------------------
def _vhcal(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    det: Calorimeter = el.obj
    zmid = det.depth / 2
    hit = tr.alive & cell_index(det, tr.x + tr.tx * zmid, tr.y + tr.ty * zmid)[2]
    if np.any(hit):
        e = np.clip(phys.moyal(ctx.rng, det.mip_mpv, det.mip_width, int(hit.sum())), 0, None)
        _deposit_cells(ctx, det, 0, tr.ev[hit], (tr.x + tr.tx * zmid)[hit], (tr.y + tr.ty * zmid)[hit], e, tr.t[hit])
    tr.drift(det.depth)
    return tr


def _hcal(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    det: Calorimeter = el.obj
    rng, prm = ctx.rng, ctx.params
    mod = det.section_depths[0]
    lam_mod = det.number("interaction_lengths_per_module")
    _, _, inside = cell_index(det, tr.x, tr.y)
    inside &= tr.alive
    is_had = (tr.kind == KIND_PION) | (tr.kind == KIND_KAON)
    # hadrons: interaction depth from the HCAL front, in nucleon interaction lengths (a pion or
    # kaon interaction length is lambda_ratio times longer, simulation.hadron.punchthrough)
    d = rng.exponential(1.0, tr.n) * lambda_ratios(prm.punch, tr.kind)
    had = inside & is_had
    e_vis = np.zeros(tr.n)
    shower = had & (d < det.n_sections * lam_mod)
    if np.any(shower):
        stoch, const = det.number("resolution_stochastic"), det.number("resolution_constant")
        e_vis[shower] = phys.smear_energy(rng, tr.p[shower] * prm.hadron_visible_fraction, stoch, const)
    sig = (prm.hadron_lateral_sigma,)
    for m in range(det.n_sections):
        zmid = mod / 2
        xm, ym = tr.x + tr.tx * zmid, tr.y + tr.ty * zmid
        # charged particles crossing the whole module: MIP (muons, hadrons before interacting)
        crossing = tr.alive & inside & (~is_had | (d > (m + 1) * lam_mod))
        partial = tr.alive & inside & is_had & (d > m * lam_mod) & (d <= (m + 1) * lam_mod)
        n = int((crossing | partial).sum())
        if n:
            sel = crossing | partial
            e = np.clip(phys.moyal(rng, det.mip_mpv, det.mip_width, n), 0, None)
            frac = np.where(partial[sel], (d[sel] - m * lam_mod) / lam_mod, 1.0)
            _deposit_cells(ctx, det, m, tr.ev[sel], xm[sel], ym[sel], e * frac, tr.t[sel])
        sh = shower & (d < (m + 1) * lam_mod)
        if np.any(sh):
            f = (phys.hadron_fraction_before((m + 1) * lam_mod - d[sh], prm.hadron_profile_shape)
                 - phys.hadron_fraction_before(m * lam_mod - d[sh], prm.hadron_profile_shape))
            _deposit_spread(ctx, det, m, tr.ev[sh], xm[sh], ym[sh], e_vis[sh] * f, tr.t[sh], sig, (1.0,))
        # energy loss of muons, scattering, end of hadron tracks that showered
        mu = tr.alive & inside & (tr.kind == KIND_MUON)
        tr.p = np.where(mu, tr.p - prm.hcal_module_energy_loss, tr.p)
        tr.alive = tr.alive & ~(mu & (tr.p < _STOP_MOMENTUM_FLOOR)) & ~(shower & (d < (m + 1) * lam_mod))
        tr.drift(mod)
        scatter_thick(rng, tr, prm.hcal_module_x0, mod, tr.alive & inside)
    return tr


def _srd(ctx: Context, el: Element, tr: Tracks) -> Tracks:
    """Synchrotron photons of electrons (the SRD sits beside the beam: only SR hits it)."""
    det: Calorimeter = el.obj
    from na64reco.units import parse_quantity

    mean = parse_quantity(str(det.params.get("synchrotron_mean", "0 MeV")), "energy")
    e_sel = tr.alive & (tr.kind == KIND_ELECTRON)
    n = int(e_sel.sum())
    if n and mean > 0:
        total = np.zeros(n)
        for m in range(det.n_sections):
            e = ctx.rng.exponential(mean, n)
            total += e
            ctx.rec.deposit(tr.ev[e_sel], det.id, det.channel(m, 0, 0), e, tr.t[e_sel])
        tr.p[e_sel] = tr.p[e_sel] - total
    tr.drift(det.depth)
    return tr


_HANDLERS = {"plane": _plane, "counter": _counter, "paddles": _counter, "magnet": _magnet,
             "decay": _decay, "ecal": _ecal, "vhcal": _vhcal, "hcal": _hcal, "srd": _srd,
             "kink": lambda ctx, el, tr: el.obj.apply(ctx, tr)}
