"""Particles in flight as arrays, multiple scattering, and the collectors of true hits.

A :class:`Tracks` object holds every particle of a simulated spill that is at the same
z (the transport steps all of them together from element to element).  Several tracks
can belong to one event (``ev``): the beam particle, an in-time pile-up muon, the two
muons of a trident, noise is added later by the digitizers.

Units: positions mm, slopes rad (small-angle: tx = dx/dz), momenta MeV, times ns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numba
import numpy as np

from na64reco import constants, material
from na64reco.material import highland  # re-exported, the one implementation
from na64reco.sim.randoms import standard_normals

KIND_MUON, KIND_ELECTRON, KIND_PION, KIND_KAON = 0, 1, 2, 3
MASSES = np.array([constants.MUON_MASS, constants.ELECTRON_MASS, constants.PION_CHARGED_MASS,
                   constants.KAON_CHARGED_MASS])
ROLE_PRIMARY, ROLE_PILEUP, ROLE_SECONDARY = 0, 1, 2


@dataclass
class Tracks:
    """Struct of arrays; every field has one entry per track."""

    ev: np.ndarray  # event index inside the spill
    x: np.ndarray
    y: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    p: np.ndarray  # MeV
    q: np.ndarray  # charge, +-1 (int8)
    kind: np.ndarray  # KIND_* (int8)
    role: np.ndarray  # ROLE_* (int8)
    flag: np.ndarray  # process code of the event forcing special physics (int8)
    t: np.ndarray  # time offset relative to the triggering particle (ns)
    alive: np.ndarray  # bool

    @property
    def n(self) -> int:
        return len(self.ev)

    def take(self, idx) -> Tracks:
        return Tracks(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Tracks]) -> Tracks:
        return Tracks(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Tracks)})

    @staticmethod
    def empty() -> Tracks:
        z = np.zeros(0)
        i = np.zeros(0, np.int8)
        return Tracks(np.zeros(0, np.int64), z, z, z, z, z, i, i, i, i, z, np.zeros(0, bool))

    @property
    def mass(self) -> np.ndarray:
        return MASSES[self.kind]

    def drift(self, dz: float) -> None:
        """Straight line over ``dz`` (mm)."""
        self.x = self.x + self.tx * dz
        self.y = self.y + self.ty * dz


def scatter_thin(rng: np.random.Generator, tr: Tracks, x_over_x0, mask=None, drift: float = 0.0) -> None:
    """Random angular kicks for a thin scatterer (both projections, independent), after a
    straight flight over ``drift`` mm (:meth:`Tracks.drift`, with the slopes before the kicks).

    Every track draws its two N(0, 1) numbers, masked or not (the random stream does not
    depend on the mask).  A scalar ``x_over_x0`` (every call of the transport) goes through
    :func:`_thin_kernel`: the numbers of :func:`~na64reco.material.highland` and of the
    numpy steps, bit for bit, in one pass instead of ~15 temporaries (issue 11)."""
    if tr.n == 0:
        if drift:
            tr.drift(drift)
        return
    if np.ndim(x_over_x0) == 0:
        x = float(x_over_x0)
        z1 = standard_normals(rng, 2, tr.n)
        mask = np.ones(tr.n, np.bool_) if mask is None else np.asarray(mask, np.bool_)
        tr.x, tr.y, tr.tx, tr.ty = _thin_kernel(tr.x, tr.y, tr.tx, tr.ty, float(drift), *_highland_parts(tr, x),
                                                mask, z1, material.HIGHLAND_LOG)
        return
    if drift:
        tr.drift(drift)
    th = highland(tr.p, tr.mass, x_over_x0)
    if mask is not None:
        th = np.where(mask, th, 0.0)
    z1 = rng.standard_normal((2, tr.n))
    tr.tx = tr.tx + th * z1[0]
    tr.ty = tr.ty + th * z1[1]


def scatter_thick(rng: np.random.Generator, tr: Tracks, x_over_x0, length: float, mask=None) -> None:
    """Correlated angle and displacement at the exit of a thick scatterer of ``length`` mm.

    PDG eq. 34.19-34.20: y = z1 L theta0 / sqrt(12) + z2 L theta0 / 2, theta = z2 theta0.
    The straight-line part of the step (tx * L) is *not* applied here.  A scalar
    ``x_over_x0`` goes through :func:`_thick_kernel` (same numbers, one pass).
    """
    if tr.n == 0:
        return
    if np.ndim(x_over_x0) == 0:
        x = float(x_over_x0)
        z = standard_normals(rng, 4, tr.n)
        mask = np.ones(tr.n, np.bool_) if mask is None else np.asarray(mask, np.bool_)
        tr.x, tr.y, tr.tx, tr.ty = _thick_kernel(tr.x, tr.y, tr.tx, tr.ty, float(length), *_highland_parts(tr, x),
                                                 mask, z, material.HIGHLAND_LOG)
        return
    th = highland(tr.p, tr.mass, x_over_x0)
    if mask is not None:
        th = np.where(mask, th, 0.0)
    z = rng.standard_normal((4, tr.n))
    tr.x = tr.x + length * th * (z[0] / np.sqrt(12.0) + z[1] / 2.0)
    tr.tx = tr.tx + th * z[1]
    tr.y = tr.y + length * th * (z[2] / np.sqrt(12.0) + z[3] / 2.0)
    tr.ty = tr.ty + th * z[3]


def scatter_thick_across_vertex(rng: np.random.Generator, tr: Tracks, idx, x_front, l_front, p_front,
                                x_back, l_back) -> None:
    """:func:`scatter_thick` for tracks ``idx`` whose momentum changes inside the scatterer: the front
    part (``x_front`` radiation lengths, ``l_front`` mm, one per track) crossed at ``p_front``, the back
    part (``x_back``, ``l_back``) at the track's present momentum ``tr.p``.  Each part is a thick
    scatterer (PDG eq. 34.19-34.20); the front part's angle flies over the back part:

        dx = l1 th1 (z0/sqrt(12) + z1/2) + th1 z1 l2 + l2 th2 (z2/sqrt(12) + z3/2),  dtx = th1 z1 + th2 z3

    Var(dx) = th1^2 (l1^2/3 + l1 l2 + l2^2) + th2^2 l2^2/3.  Highland's log term is the whole
    scatterer's (PDG: the formula applies to the total thickness), th_i = theta0(p_i, x1 + x2)
    sqrt(x_i / (x1 + x2)), so that at one momentum the two parts are the whole scatterer exactly
    (th^2 proportional to the length: Var(dx) = th^2 L^2 / 3).  Eight normals per track.
    """
    idx = np.asarray(idx)
    if not idx.size:
        return
    mass = MASSES[tr.kind[idx]]
    x1, x2 = np.asarray(x_front, float), np.asarray(x_back, float)
    total = x1 + x2
    th1 = highland(np.asarray(p_front, float), mass, total) * np.sqrt(x1 / total)
    th2 = highland(tr.p[idx], mass, total) * np.sqrt(x2 / total)
    l1, l2 = np.asarray(l_front, float), np.asarray(l_back, float)
    z = rng.standard_normal((8, idx.size))
    for pos, slope, k in (("x", "tx", 0), ("y", "ty", 4)):
        a1 = th1 * z[k + 1]
        back = l2 * th2 * (z[k + 2] / np.sqrt(12.0) + z[k + 3] / 2.0)
        dx = l1 * th1 * z[k] / np.sqrt(12.0) + a1 * (l1 / 2.0 + l2) + back
        getattr(tr, pos)[idx] += dx
        getattr(tr, slope)[idx] += a1 + th2 * z[k + 3]


def _highland_parts(tr: Tracks, x: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The factors of :func:`~na64reco.material.highland` of every track for ``x`` radiation
    lengths: ``13.6 MeV / (beta p)``, ``log(x / beta^2)`` and ``sqrt(x)`` (zeros if ``x <= 0``:
    no material).  The logarithm is numpy's own: its vectorised ``log`` and the C library's,
    which a numba kernel calls, differ in the last bit for ~0.3 % of the arguments."""
    if not x > 0:
        zero = np.zeros(tr.n)
        return zero, zero, 0.0
    scale, beta2 = _highland_base(tr.p, tr.kind, MASSES, material.HIGHLAND_MEV)
    arg = np.divide(x, beta2, out=beta2)  # IEEE division: the kernel's x / (beta * beta) to the bit
    return scale, np.log(arg, out=arg), math.sqrt(x)


# Highland's constants (na64reco.material) reach the kernels as arguments, read when they are called:
# a constant a kernel reads as a global is frozen into its on-disk cache, keyed on this file alone, so
# an edit of material.py would be ignored until this file changed (stop 47's test review).
@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _theta0(scale, sqrt_x, log_arg, on, c_log):
    """Highland's theta0 from its factors, in the order of :func:`~na64reco.material.highland`,
    clipped at 0 (a NaN stays NaN, like ``np.clip``); 0 where not ``on``; ``c_log`` its log coefficient."""
    theta = scale * sqrt_x * (1.0 + c_log * log_arg)
    theta = 0.0 if theta < 0.0 else theta
    return theta if on else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _thin_kernel(x0, y0, tx0, ty0, drift, scale, log_arg, sqrt_x, mask, z, c_log):
    # no slice assignment (``x1[:] = x0``): its shape check compiles numba's string formatting
    # of the error message, 2.2 of the simulation's ~10 s of cold compilation (issue 11)
    n = x0.size
    x1, y1, tx1, ty1 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        x1[i] = x0[i] + tx0[i] * drift if drift != 0.0 else x0[i]
        y1[i] = y0[i] + ty0[i] * drift if drift != 0.0 else y0[i]
    for i in range(n):
        th = _theta0(scale[i], sqrt_x, log_arg[i], mask[i], c_log)
        tx1[i] = tx0[i] + th * z[0, i]
        ty1[i] = ty0[i] + th * z[1, i]
    return x1, y1, tx1, ty1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _thick_kernel(x0, y0, tx0, ty0, length, scale, log_arg, sqrt_x, mask, z, c_log):
    n = x0.size
    x1, y1, tx1, ty1 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    r12 = math.sqrt(12.0)
    for i in range(n):
        th = _theta0(scale[i], sqrt_x, log_arg[i], mask[i], c_log)
        lth = length * th
        x1[i] = x0[i] + lth * (z[0, i] / r12 + z[1, i] / 2.0)
        tx1[i] = tx0[i] + th * z[1, i]
        y1[i] = y0[i] + lth * (z[2, i] / r12 + z[3, i] / 2.0)
        ty1[i] = ty0[i] + th * z[3, i]
    return x1, y1, tx1, ty1


def thin_steps(rng: np.random.Generator, tr: Tracks, drift, x_over_x0, record, mask) -> np.ndarray:
    """A sequence of thin steps, each ``scatter_thin(rng, tr, x_over_x0[s], mask, drift=drift[s])``
    (scalar material) with, for ``record[s]`` 0 / 1, the track's x / y after the flight and
    before the kick recorded; returns those coordinates, one row per recording step.

    The same numbers as the calls one by one (tracker stations: air gap, plane, air gap, plane,
    ...), in one kernel: the momenta do not change along the steps, so Highland's
    ``13.6 MeV / (beta p)`` and ``beta^2`` are computed once, the logarithms of all steps in
    one numpy call (numpy's, see :func:`_highland_parts`), and the normals of all steps drawn in
    the kernel, in the order of the calls (issue 11, fourth and eighth passes)."""
    drift = np.asarray(drift, float)
    x = np.asarray(x_over_x0, float)
    record = np.asarray(record, np.int64)
    n_rec = int(np.count_nonzero(record >= 0))
    if tr.n == 0:
        tr.drift(float(drift.sum()))
        return np.zeros((n_rec, 0))
    rows = np.cumsum(x > 0) - 1  # row of each step with material in the logarithms
    scale, beta2 = _highland_base(tr.p, tr.kind, MASSES, material.HIGHLAND_MEV)
    log_arg = x[x > 0][:, None] / beta2[None, :]  # a numpy division: no kernel to compile (issue 11)
    log_arg = np.log(log_arg, out=log_arg)
    sqrt_x = np.sqrt(np.where(x > 0, x, 0.0))  # math.sqrt of each positive x (correctly rounded both)
    tr.x, tr.y, tr.tx, tr.ty, coords = _steps_kernel(rng, tr.x, tr.y, tr.tx, tr.ty, drift, x > 0,
                                                     np.where(x > 0, rows, -1), sqrt_x, record, n_rec, scale, log_arg,
                                                     np.asarray(mask, np.bool_), material.HIGHLAND_LOG)
    return coords


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _highland_base(p, kind, masses, c_mev):
    """``13.6 MeV / (beta p)`` and ``beta^2`` of every track (``x / beta^2`` then by numpy's
    division, correctly rounded like the kernel's: one kernel less to compile, issue 11)."""
    # the mass of each track by a select over the four kinds (KIND_*) instead of a gather
    # ``masses[kind[i]]``: the same numbers, 2x faster (42 -> 21 us for 10.5k tracks, issue 11 ninth pass)
    scale = np.empty(p.size)
    beta2 = np.empty(p.size)
    m0, m1, m2, m3 = masses[0], masses[1], masses[2], masses[3]
    for i in range(p.size):
        k = kind[i]
        m = m0 if k == 0 else (m1 if k == 1 else (m2 if k == 2 else m3))
        beta = p[i] / math.sqrt(p[i] * p[i] + m * m)
        scale[i] = c_mev / (beta * p[i])
        beta2[i] = beta * beta
    return scale, beta2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _steps_kernel(rng, x0, y0, tx0, ty0, drift, material, row, sqrt_x, record, n_rec, scale, log_arg, mask, c_log):
    """The steps one after the other, each drawing its normals as ``rng.standard_normal((2, n))``
    did for all steps at once (row 2 s: the x kicks of step s, row 2 s + 1: the y kicks; the same
    numbers in the same order) into two rows reused from step to step, instead of a (2 steps, n)
    array written and read again (issue 11, eighth pass); per track the same arithmetic."""
    n = x0.size
    x, y, tx, ty = x0.copy(), y0.copy(), tx0.copy(), ty0.copy()
    coords = np.empty((n_rec, n))
    zx = np.empty(n)
    zy = np.empty(n)
    k = 0
    for s in range(drift.size):
        for i in range(n):
            zx[i] = rng.standard_normal()
        for i in range(n):
            zy[i] = rng.standard_normal()
        d = drift[s]
        rec = record[s]
        for i in range(n):
            xi, yi = x[i], y[i]
            if d != 0.0:
                xi = xi + tx[i] * d
                yi = yi + ty[i] * d
                x[i], y[i] = xi, yi
            if rec == 0:
                coords[k, i] = xi
            elif rec == 1:
                coords[k, i] = yi
            if material[s]:
                th = _theta0(scale[i], sqrt_x[s], log_arg[row[s], i], mask[i], c_log)
            else:
                th = _theta0(0.0, 0.0, 0.0, mask[i], c_log)
            tx[i] = tx[i] + th * zx[i]
            ty[i] = ty[i] + th * zy[i]
        if rec >= 0:
            k += 1
    return x, y, tx, ty, coords


def _as_column(a, dtype, n: int):
    """``np.broadcast_to(np.asarray(a, dtype), n)``; an array that already is one (the usual case)
    as it is (the same values; ``broadcast_to``'s Python overhead ~10 us per call, issue 11)."""
    if type(a) is np.ndarray and a.dtype == dtype and a.shape == (n,):
        return a
    return np.broadcast_to(np.asarray(a, dtype), n)


class Recorder:
    """Collects true energy deposits and tracker crossings of one spill as flat arrays."""

    def __init__(self, n_events: int):
        self.n_events = n_events
        self._dep: list[tuple] = []
        self._hits: list[tuple] = []

    def deposit(self, ev, det_id: int, chan, energy, t) -> None:
        ev = np.asarray(ev, np.int64)
        if ev.size == 0:
            return
        n = ev.size
        self._dep.append((ev, np.full(n, det_id, np.int16), _as_column(chan, np.int16, n), _as_column(energy, float, n),
                          _as_column(t, float, n)))

    def hit(self, ev, plane: int, coord, t) -> None:
        ev = np.asarray(ev, np.int64)
        if ev.size == 0:
            return
        n = ev.size
        self._hits.append((ev, np.full(n, plane, np.int16), np.asarray(coord, float), _as_column(t, float, n)))

    @staticmethod
    def _cat(parts, dtypes):
        if not parts:
            return tuple(np.zeros(0, d) for d in dtypes)
        return tuple(np.concatenate([p[i] for p in parts]).astype(d, copy=False) for i, d in enumerate(dtypes))

    def deposits(self):
        """(ev, det_id, chan, energy MeV, t ns) of every deposit, unsorted."""
        return self._cat(self._dep, (np.int64, np.int16, np.int16, float, float))

    def hits(self):
        """(ev, plane index, measured global coordinate mm, t ns) of every crossing."""
        return self._cat(self._hits, (np.int64, np.int16, float, float))


def written_hits(new_index, hits, extra):
    """The crossings ``hits = (ev, plane, coord, t)`` of the written events, their events
    renumbered by ``new_index`` (-1: not written), followed by ``extra`` (crossings already in
    written-event numbers, e.g. the pile-up muons'); plane as int64.  The same arrays as the
    mask, gathers, concatenation and cast they replace, in one pass (issue 11, fifth pass)."""
    ev, plane, coord, t = hits
    o_ev, o_plane, o_coord, o_t = extra
    return _written_hits(np.asarray(new_index, np.int64), np.asarray(ev, np.int64), np.asarray(plane, np.int16),
                         np.asarray(coord, float), np.asarray(t, float), np.asarray(o_ev, np.int64),
                         np.asarray(o_plane, np.int16), np.asarray(o_coord, float), np.asarray(o_t, float))


@numba.njit(cache=True, nogil=True)
def _written_hits(new_index, ev, plane, coord, t, o_ev, o_plane, o_coord, o_t):
    k = 0
    for i in range(ev.size):
        k += new_index[ev[i]] >= 0
    n = k + o_ev.size
    r_ev = np.empty(n, np.int64)
    r_plane = np.empty(n, np.int64)
    r_coord = np.empty(n)
    r_t = np.empty(n)
    k = 0
    for i in range(ev.size):
        e = new_index[ev[i]]
        if e >= 0:
            r_ev[k], r_plane[k], r_coord[k], r_t[k] = e, plane[i], coord[i], t[i]
            k += 1
    for i in range(o_ev.size):
        r_ev[k], r_plane[k], r_coord[k], r_t[k] = o_ev[i], o_plane[i], o_coord[i], o_t[i]
        k += 1
    return r_ev, r_plane, r_coord, r_t
