"""The digitisation noise read from the pre-drawn pool (na64reco.sim.noise) against fresh
Gaussian draws (the previous model, ``pool=False``) and closed forms.

Checks, with tolerances from the statistics of each sample:
* the pool itself: antithetic (mean 0), unit variance, empirical CDF = Phi to 1/N
  (tails included), the same in every process;
* pedestal runs: per channel and sample parity, mean and variance of the written ADC
  samples equal those of ``rint(pedestal + noise * z)``, z ~ N(0, 1), computed exactly
  (the rounding included), for the pool and for fresh draws;
* MSADC amplitude resolution vs the true amplitude: the matched-filter amplitude of
  known pulses scatters by sqrt(noise^2 + 1/12) / |f|, pool and fresh;
* APV zero suppression: the number of written channels equals the closed form
  sum over touched channels of 1 - prod_j Phi((threshold - s_j) / noise) (s_j: their
  noiseless samples), pure-noise channels included, pool and fresh; and a simulated
  run writes as many APV digits per event with the pool as with fresh draws.
"""

from __future__ import annotations

import functools

import awkward as ak
import numpy as np
import pytest
from scipy.special import ndtr

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.pulse import msadc_shape
from na64reco.sim import digitize as dg
from na64reco.sim import generate, simulate
from na64reco.sim.noise import POOL_SIZE, gaussian_pool, window_starts

Z_MAX = 5.0  # no z-score of a correct model beyond this among the few hundred compared


def _rounded_gaussian_moments(mu, sigma, max_adc=4095):
    """Exact mean, variance and 4th central moment of clip(rint(mu + sigma z), 0, max_adc)."""
    k = np.arange(max(0, int(mu - 12 * sigma) - 1), min(max_adc, int(mu + 12 * sigma) + 2) + 1)
    p = ndtr((k + 0.5 - mu) / sigma) - ndtr((k - 0.5 - mu) / sigma)
    p[0] += ndtr((k[0] - 0.5 - mu) / sigma)
    p[-1] += 1.0 - ndtr((k[-1] + 0.5 - mu) / sigma)
    mean = (k * p).sum()
    var = ((k - mean) ** 2 * p).sum()
    m4 = ((k - mean) ** 4 * p).sum()
    return mean, var, m4


# ---- the pool --------------------------------------------------------------------------------
def test_pool_is_an_exact_gaussian_sample():
    pool = gaussian_pool()
    z = np.asarray(pool[:POOL_SIZE], float)
    assert pool.dtype == np.float32 and not pool.flags.writeable
    np.testing.assert_array_equal(pool[POOL_SIZE:], pool[: pool.size - POOL_SIZE])  # the padding
    assert abs(z.sum()) < 1e-6 * POOL_SIZE ** 0.5  # antithetic pairs cancel (float32 rounding aside)
    assert z.var() == pytest.approx(1.0, abs=1e-4)  # stratified: 1 + O(1/N), not 1 +- 7e-4 of N draws
    # stratified: the empirical CDF is Phi within one stratum everywhere, tails included
    zs = np.sort(z)
    ecdf = np.arange(1, POOL_SIZE + 1) / POOL_SIZE
    assert np.abs(ndtr(zs) - ecdf).max() < 2.0 / POOL_SIZE + 1e-6  # + float32 resolution
    for cut in (2.0, 3.0, 4.0):
        assert np.mean(z > cut) == pytest.approx(1 - ndtr(cut), abs=2.0 / POOL_SIZE)
    # no serial correlation (what a window of samples reads)
    assert abs(np.mean(z[1:] * z[:-1])) < Z_MAX / POOL_SIZE ** 0.5


def test_window_starts_blocks_of_adjacent_windows():
    rng = np.random.default_rng(5)
    start = window_starts(rng, 200, 32, size=1000, block=64)
    assert start.shape == (200,)
    for b in range(4):
        s = start[b * 64:(b + 1) * 64]
        np.testing.assert_array_equal(np.diff(s), 32)  # adjacent, never overlapping
        assert 0 <= s[0] < 1000


# ---- MSADC: pedestals (full simulation) ------------------------------------------------------
@functools.cache
def _pedestal_samples(pool: bool, tmp_dir: str):
    run, n = 42, 300
    path = f"{tmp_dir}/ped_{pool}.root"
    orig = generate.msadc_digits
    generate.msadc_digits = functools.partial(orig, pool=pool)
    try:
        simulate("na64mu", n, 3, run, path, process="pedestal")
    finally:
        generate.msadc_digits = orig
    with open_raw(path) as f:
        ev = f.events()
    det = ak.to_numpy(ak.flatten(ev.calo.det))
    chan = ak.to_numpy(ak.flatten(ev.calo.chan))
    adc = ak.to_numpy(ak.flatten(ev.calo.adc, axis=1)).astype(float)
    setup = load_setup("na64mu", run=run)
    tables = dg.CaloTables.of(setup, load_conditions(setup, run))
    return det, chan, adc, tables


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "fresh"])
def test_pedestal_mean_and_rms_match_the_rounded_gaussian(pool, tmp_path_factory):
    det, chan, adc, tables = _pedestal_samples(pool, str(tmp_path_factory.getbasetemp()))
    z_mean, z_var = [], []
    for d, c in set(zip(det.tolist(), chan.tolist(), strict=True)):
        sigma = tables.noise[d, c]
        if sigma < 0.3:  # noiseless channel: nothing to compare
            continue
        rows = adc[(det == d) & (chan == c)]
        for parity, ped in ((0, tables.ped_even[d, c]), (1, tables.ped_odd[d, c])):
            x = rows[:, parity::2].ravel()
            mean, var, m4 = _rounded_gaussian_moments(ped, sigma)
            z_mean.append((x.mean() - mean) / np.sqrt(var / x.size))
            z_var.append((x.var(ddof=1) - var) / np.sqrt((m4 - var**2) / x.size))
    z_mean, z_var = np.array(z_mean), np.array(z_var)
    assert z_mean.size > 100
    for z in (z_mean, z_var):
        assert np.abs(z).max() < Z_MAX
        assert np.mean(z**2) == pytest.approx(1.0, abs=Z_MAX * np.sqrt(2.0 / z.size))


# ---- MSADC: amplitude resolution ---------------------------------------------------------------
@pytest.mark.parametrize("pool", [True, False], ids=["pool", "fresh"])
def test_msadc_amplitude_resolution_vs_truth(pool):
    """Matched-filter amplitude of known pulses: unbiased, rms sqrt(sigma^2 + 1/12) / |f|."""
    rng = np.random.default_rng(11)
    n, ns, period, rise, decay, sigma = 20_000, 32, 12.5, 10.0, 20.0, 2.5
    t0 = np.full(n, 120.0)
    amp = rng.uniform(50, 2000, n)
    ped = rng.uniform(200, 400, n)
    noise, start = dg._msadc_noise(rng, n, ns, pool)
    adc = dg.msadc_waveforms(np.arange(n + 1), amp, np.zeros(n), t0, ped, ped, np.full(n, sigma), noise, period,
                             rise, decay, 4095, noise_start=start, n_samples=ns)
    f = msadc_shape(np.arange(ns) * period - 120.0, rise, decay)
    est = ((adc - ped[:, None]) @ f) / (f @ f)
    resid = est - amp
    expected_rms = np.sqrt(sigma**2 + 1 / 12) / np.sqrt(f @ f)
    assert resid.mean() == pytest.approx(0.0, abs=Z_MAX * expected_rms / np.sqrt(n))
    assert resid.std() == pytest.approx(expected_rms, rel=Z_MAX / np.sqrt(2 * n))


# ---- APV zero suppression ---------------------------------------------------------------------
def _apv_inputs(rng, n):
    setup = load_setup("na64mu")
    planes = [p for p in setup.planes if p.type != "straw"]
    n_strips = np.array([p.n_strips for p in setup.planes])
    is_mm = np.array([p.type == "MM" for p in setup.planes])
    dead = np.zeros((len(setup.planes), n_strips.max() + 1), bool)
    mm_chan = setup.readout.mm_channel_of_strip(np.arange(dead.shape[1]) % 320).astype(np.int64)
    ev = np.sort(rng.integers(0, n // 3, n))
    plane = rng.choice([p.index for p in planes], n)
    order = np.argsort(ev * 64 + plane, kind="stable")
    ev, plane = ev[order], plane[order]
    c = rng.uniform(0, n_strips[plane] - 1)
    # charges from 0 (pure noise) to a few times the threshold: the zero suppression decides
    amp = np.where(rng.random(n) < 0.3, 0.0, np.minimum(rng.exponential(40.0, n), 400.0))
    shape3 = rng.uniform(0.2, 1.0, (n, 3))
    return ev, plane, c, amp, shape3, n_strips, is_mm, dead, mm_chan, 0.6, dg.APV_HALF_WIDTH


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "fresh"])
def test_apv_zero_suppression_occupancy_closed_form(pool):
    rng = np.random.default_rng(3)
    n, sigma, threshold = 60_000, 4.0, 12.0
    args = _apv_inputs(rng, n)
    noise, start = dg._apv_noise(rng, n, dg.APV_HALF_WIDTH, pool)
    # the noiseless samples of every touched channel (no threshold), x 64 so that their
    # rounding to int16 (+-0.008 ADC after scaling back) does not move the closed form
    scaled = list(args)
    scaled[3] = 64.0 * args[3]
    _, _, _, quiet = dg._apv_kernel(*scaled, np.zeros(3, np.float32), np.zeros(n, np.int64), 0.0, -np.inf)
    _, _, _, noisy = dg._apv_kernel(*args, noise, start, sigma, threshold)
    p = 1.0 - np.prod(ndtr((threshold - quiet / 64.0) / sigma), axis=1)
    assert np.mean(p < 0.01) > 0.3 and np.mean(p > 0.99) > 0.05  # both kinds of channels are there
    expected, err = p.sum(), np.sqrt((p * (1 - p)).sum())
    assert len(noisy) == pytest.approx(expected, abs=Z_MAX * err)


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "fresh"])
def test_apv_pure_noise_occupancy(pool):
    """Channels without charge: written with probability 1 - Phi(threshold / sigma)^3."""
    rng = np.random.default_rng(4)
    n, sigma, threshold = 100_000, 4.0, 12.0
    args = list(_apv_inputs(rng, n))
    args[3] = np.zeros(n)  # no charge anywhere
    noise, start = dg._apv_noise(rng, n, dg.APV_HALF_WIDTH, pool)
    _, _, _, touched = dg._apv_kernel(*args, np.zeros(3, np.float32), np.zeros(n, np.int64), 0.0, -np.inf)
    _, _, _, written = dg._apv_kernel(*args, noise, start, sigma, threshold)
    p0 = 1 - ndtr(threshold / sigma) ** 3
    m = len(touched)
    assert len(written) == pytest.approx(m * p0, abs=Z_MAX * np.sqrt(m * p0 * (1 - p0)))
    # and their samples are N(0, sigma) above the threshold: the maximum exceeds it
    assert np.all(written.max(axis=1) >= threshold)  # > threshold before rounding


def test_simulated_apv_digits_per_event_pool_vs_fresh(tmp_path):
    """The same beam run with the pool and with fresh draws: APV digits per event agree."""
    counts = {}
    orig = generate.apv_digits
    for pool in (True, False):
        path = tmp_path / f"b{pool}.root"
        generate.apv_digits = functools.partial(orig, pool=pool)
        try:
            simulate("na64mu", 3000, 9, 42, path, process="beam", trigger="calibration")
        finally:
            generate.apv_digits = orig
        with open_raw(path) as f:
            counts[pool] = ak.to_numpy(ak.num(f.events().apv)).astype(float)
    a, b = counts[True], counts[False]
    assert a.size == b.size > 2000  # the same events (noise does not enter the trigger)
    # same signals (same random stream up to the noise): the difference is the noise's
    diff = a - b
    assert diff.mean() == pytest.approx(0.0, abs=Z_MAX * diff.std() / np.sqrt(diff.size) + 1e-9)
