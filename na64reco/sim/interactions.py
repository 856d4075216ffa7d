"""Physics of the fast simulation: energy-loss fluctuations, radiative losses, showers.

Each model is a small vectorised function of numpy arrays with its formula and source
in the docstring; parameters come from :class:`~na64reco.sim.params.SimParams` and the
setup, never from literals here.

* Ionisation fluctuations: the Moyal distribution (a closed-form approximation of the
  Landau distribution with the same most probable value, J.E. Moyal, Phil. Mag. 46
  (1955) 263): ``E = mpv + width * y``, ``y = -ln(z^2)``, ``z ~ N(0, 1)``; its mode is
  exactly ``mpv``.  The true Landau tail (~1/E^2) is lighter here; the hard part of the
  muon tail is produced explicitly by :class:`MuonLosses`.
* Muon discrete losses (knock-on electrons, bremsstrahlung, e+e- pair production) with
  v = E_loss / E > v_min, each process from its cross section
  (:mod:`na64reco.physics.muon_losses`), tabulated per absorber and muon energy
  (:class:`MuonLosses`); the number per muon is Poisson.
* EM showers: longitudinal Gamma profile dE/dt ~ t^(a-1) e^(-b t) (t in X0), with
  t_max = (a - 1)/b = ln(E/E_c) - 0.5 (PDG eq. 34.36); lateral profile: two Gaussians
  (core + tail) in Moliere radii; resolution sigma/E = s/sqrt(E/GeV) (+) c.
* Hadron showers: interaction depth ~ Exp(lambda_I); visible energy = f_vis E with the
  HCAL resolution; longitudinal Gamma(k) profile in lambda_I from the vertex; lateral
  Gaussian.
"""

from __future__ import annotations

import hepunits as u
import numpy as np
from scipy.special import gammainc, ndtr

from na64reco.physics.muon_losses import LossSpectrum, loss_spectrum
from na64reco.sim.randoms import standard_normal


def moyal(rng: np.random.Generator, mpv, width, n: int | None = None):
    """Moyal (Landau-like) energy-loss sample with most probable value ``mpv``."""
    if n is not None:
        z = standard_normal(rng, n)  # = rng.standard_normal(n), drawn in numba
        if np.ndim(mpv) == 0 and np.ndim(width) == 0:  # the same operations in place (issue 11, eighth pass)
            np.multiply(z, z, out=z)
            np.maximum(z, 1e-300, out=z)
            np.log(z, out=z)
            np.multiply(width, z, out=z)
            return np.subtract(mpv, z, out=z)
    else:
        z = rng.standard_normal(np.broadcast(np.asarray(mpv), np.asarray(width)).shape)
    return mpv - width * np.log(np.maximum(z * z, 1e-300))


# ---- muon discrete energy losses --------------------------------------------------------
_TABLE_ENERGY_MIN = 1.0 * u.GeV  # a muon below it uses this table (it stops in a few m of iron)


class MuonLosses:
    """The discrete losses (knock-on electrons, bremsstrahlung, e+e- pairs) with v = eps/E above
    ``v_min`` of muons crossing ``thickness`` g/cm2 of one absorber
    (:func:`na64reco.physics.muon_losses.loss_spectrum`; softer losses are the MIP part).

    The spectrum depends on the muon's energy: it is tabulated at energies ``e_ref * 2^(k/8)``
    (integer k) and a muon uses the table nearest to its energy (within +-4.4 %; at ``e_ref``,
    the beam energy, exactly).
    """

    _STEP = 2.0 ** 0.125

    def __init__(self, absorber: str, thickness: float, v_min: float, e_ref: float):
        self.absorber, self.thickness, self.v_min, self.e_ref = absorber, float(thickness), float(v_min), float(e_ref)

    def table(self, energy: float) -> LossSpectrum:
        """The spectrum at the tabulated energy nearest to ``energy`` (MeV; below 1 GeV, 1 GeV's)."""
        return self._table(int(self._index(np.asarray(energy, float))))

    def _index(self, energy: np.ndarray) -> np.ndarray:
        return np.rint(np.log(np.maximum(energy, _TABLE_ENERGY_MIN) / self.e_ref) / np.log(self._STEP)).astype(np.int64)

    def _table(self, k: int) -> LossSpectrum:
        return loss_spectrum(self.absorber, self.e_ref * self._STEP**k, self.thickness, self.v_min)

    def sample(self, rng: np.random.Generator, energy, frac_lo, frac_hi):
        """The losses of muons of ``energy`` (MeV, one per track) crossing the fraction
        ``[frac_lo, frac_hi]`` of the thickness (scalars or one per track).

        Returns ``(track_index, v, depth)``: one entry per loss (Poisson number per track, most
        none), ``depth`` uniform in the track's fraction.
        """
        energy = np.asarray(energy, float)
        lo = np.broadcast_to(np.asarray(frac_lo, float), energy.shape)
        hi = np.broadcast_to(np.asarray(frac_hi, float), energy.shape)
        kk = self._index(energy)
        idx_parts, v_parts = [], []
        k_lo = int(kk.min()) if kk.size else 0
        used = np.flatnonzero(np.bincount(kk - k_lo)) + k_lo  # the tables used, ascending
        for k in used:
            tab = self._table(int(k))
            sel = np.flatnonzero(kk == k) if used.size > 1 else np.arange(kk.size)
            counts = rng.poisson(tab.cumulative[-1] * np.clip(hi[sel] - lo[sel], 0.0, None))
            idx = np.repeat(sel, counts)
            idx_parts.append(idx)
            v_parts.append(tab.quantile(rng.random(idx.size)))
        if not idx_parts:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        idx, v = np.concatenate(idx_parts), np.concatenate(v_parts)
        depth = lo[idx] + rng.random(idx.size) * (hi[idx] - lo[idx])
        return idx, v, depth


# ---- EM showers ------------------------------------------------------------------------
def em_profile_fluctuated(rng, energy, critical_energy: float, b: float, log_tmax, log_alpha, rho):
    """Per-shower Gamma-profile parameters (a, b) with correlated log-normal fluctuations.

    Mean profile: T = t_max = ln y - 0.5, a = b T + 1 (y = E/E_c).  Fluctuations as in
    GFlash (Grindhammer & Peters, hep-ex/0001020): ln T and ln a get Gaussian shifts with
    sigma(ln T) = 1/(t0 + t1 ln y), sigma(ln a) = 1/(a0 + a1 ln y) and correlation
    rho = r0 + r1 ln y (sigmas capped at 1 for very soft showers).  Returns (a, b) arrays.
    """
    energy = np.asarray(energy, float)
    ln_y = np.log(np.maximum(energy / critical_energy, 1.0 + 1e-9))
    tmax = np.clip(ln_y - 0.5, 0.1, None)
    a_mean = b * tmax + 1.0

    def inv(c):
        den = c[0] + c[1] * ln_y
        return np.where(den > 1.0, 1.0 / np.where(den > 1.0, den, 1.0), 1.0)

    s_t, s_a = inv(log_tmax), inv(log_alpha)
    r = np.clip(rho[0] + rho[1] * ln_y, -1.0, 1.0)
    z1, z2 = rng.standard_normal((2, energy.size))
    c1, c2 = np.sqrt((1 + r) / 2), np.sqrt((1 - r) / 2)
    t_f = tmax * np.exp(s_t * (c1 * z1 + c2 * z2))
    a_f = np.maximum(a_mean * np.exp(s_a * (c1 * z1 - c2 * z2)), 1.0 + 1e-6)
    return a_f, (a_f - 1.0) / t_f


def em_resolution(energy, stochastic: float, constant: float):
    """sigma_E / E = stochastic / sqrt(E/GeV) (+) constant (in quadrature)."""
    e_gev = np.maximum(np.asarray(energy, float) / u.GeV, 1e-6)
    return np.hypot(stochastic / np.sqrt(e_gev), constant)


def smear_energy(rng, energy, stochastic: float, constant: float):
    """Energy with Gaussian resolution, clipped at 0."""
    energy = np.asarray(energy, float)
    return np.clip(energy * (1.0 + em_resolution(energy, stochastic, constant)
                             * rng.standard_normal(energy.shape)), 0.0, None)


def _edges(n: int, size: float):
    return (np.arange(n + 1) - n / 2.0) * size


def cell_fractions(dx, dy, nx: int, ny: int, cell: tuple[float, float], sigmas, weights):
    """Fractions (n, nx, ny) of a 2D Gaussian-mixture spot in each cell of a grid.

    ``dx, dy``: spot centres relative to the grid centre (mm, arrays of n).
    ``sigmas``/``weights``: the mixture (mm, weights summing to 1).  Separable per
    component:  f_ij = Sum_k w_k [Phi((x_i+1 - dx)/s_k) - Phi((x_i - dx)/s_k)] [same in y].
    """
    ex, ey = _edges(nx, cell[0]), _edges(ny, cell[1])
    out = 0.0
    for s, w in zip(sigmas, weights, strict=True):
        fx = np.diff(ndtr((ex[None, :] - np.asarray(dx)[:, None]) / s), axis=1)
        fy = np.diff(ndtr((ey[None, :] - np.asarray(dy)[:, None]) / s), axis=1)
        out = out + w * fx[:, :, None] * fy[:, None, :]
    return out


# ---- hadron showers --------------------------------------------------------------------
def hadron_fraction_before(depth_lambda, shape: float):
    """Fraction of a hadron shower within ``depth_lambda`` interaction lengths of its vertex."""
    return gammainc(shape, np.clip(np.asarray(depth_lambda, float), 0.0, None))


# ---- two-body decay in flight ----------------------------------------------------------
def two_body_decay(rng, p_parent, m_parent: float, m_daughter: float, m_other: float = 0.0):
    """Lab momentum and polar angle of a daughter of an isotropic two-body decay in flight.

    Rest frame: p* = sqrt((M^2 - (m1+m2)^2)(M^2 - (m1-m2)^2)) / 2M, cos theta* uniform.
    Lab: p_par = gamma (p* cos + beta E*), p_T = p* sin.  Returns (p_lab, theta_lab, phi).
    """
    p_parent = np.asarray(p_parent, float)
    big_m = m_parent
    pstar = np.sqrt((big_m**2 - (m_daughter + m_other) ** 2) * (big_m**2 - (m_daughter - m_other) ** 2)) / (2 * big_m)
    estar = np.sqrt(pstar**2 + m_daughter**2)
    e_parent = np.sqrt(p_parent**2 + big_m**2)
    gamma, beta = e_parent / big_m, p_parent / e_parent
    cos = rng.uniform(-1.0, 1.0, p_parent.shape)
    sin = np.sqrt(1.0 - cos**2)
    p_par = gamma * (pstar * cos + beta * estar)
    p_t = pstar * sin
    return np.hypot(p_par, p_t), np.arctan2(p_t, p_par), rng.uniform(0, 2 * np.pi, p_parent.shape)


def two_body_momentum_range(p_parent, m_parent: float, m_daughter: float, m_other: float = 0.0):
    """(min, max) lab momentum of the daughter (closed form, for tests)."""
    big_m = m_parent
    pstar = np.sqrt((big_m**2 - (m_daughter + m_other) ** 2) * (big_m**2 - (m_daughter - m_other) ** 2)) / (2 * big_m)
    estar = np.sqrt(pstar**2 + m_daughter**2)
    e_parent = np.sqrt(np.asarray(p_parent, float) ** 2 + big_m**2)
    gamma, beta = e_parent / big_m, np.asarray(p_parent, float) / e_parent
    return gamma * (beta * estar - pstar), gamma * (beta * estar + pstar)
