"""Electronics noise of the digitisation from a pre-drawn pool of standard-normal numbers.

Drawing a fresh Gaussian number for each of the 32 MSADC samples of every written channel,
and for the 3 APV samples of every touched channel, was 17 % of the simulation's CPU
time (0.54 of 3.25 s per 100k MOT with the calibration trigger, issue 11), and more
through the memory traffic of the arrays.  Instead, one *pool* of :data:`POOL_SIZE` standard-normal numbers is
made once per process, and a channel takes the consecutive numbers of a window in it
(:func:`window_starts`): the windows of :data:`BLOCK` consecutive channels are adjacent,
each block of windows starts at a random offset (one random integer per 64 channels
instead of one Gaussian per sample, and reads that stream through memory instead of
jumping around a 16 MB pool for every channel).

The pool is *stratified* and *antithetic*: for ``k = 0 .. H-1`` (``H = POOL_SIZE / 2``)
``z_k = Phi^-1(1/2 + (k + v_k) / (2 H))`` with ``v_k`` uniform in [0, 1), the pool holds
``+z_k`` and ``-z_k``, in a random order.  Hence

* a number read at a uniformly random position is *exactly* N(0, 1) distributed (it falls
  in each of the ``POOL_SIZE`` quantile bins with probability ``1 / POOL_SIZE`` and is
  uniform in the bin's quantiles), and the numbers of one block of windows are
  independent draws (distinct positions of a random permutation);
* the pool's own empirical distribution is the Gaussian CDF to within ``1 / POOL_SIZE``
  everywhere (tails included: e.g. the fraction above 3 sigma is 0.00135 to 2e-7, where a
  pool of independent draws would be off by ~1 % of it), its mean is 0 (the pairs
  cancel) and its variance 1 to O(1 / POOL_SIZE): averages over many channels, such as a
  pedestal or a noise-occupancy measurement, converge to the values of fresh draws;
* what differs from fresh draws: a stretch of numbers recurs wherever two blocks of
  windows overlap (random offsets, so in other channels and events); each pool number is
  read (samples drawn) / ``POOL_SIZE`` times on average, e.g. ~24 times in the 3 x 10^8
  MSADC samples of 10^7 events.  Only an estimator that correlates the noise of
  different channels sample by sample, across blocks, could see it; the noise of two
  given channels over many events is uncorrelated as with fresh draws.

The pool does not depend on the seed (it is the same in every process, built from the
fixed :data:`POOL_SEED`); the offsets come from the random stream of each spill, so the
output still depends only on (seed, setup, conditions, options) and not on how the run is
cut into files or workers.  ``tests/test_sim_noise.py`` compares the output of the pool
with fresh draws and with the closed forms (pedestal mean and RMS after rounding,
noise occupancy above an APV threshold, amplitude resolution).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import ndtri

#: numbers in the pool (2^22: 16 MB of float32, ~0.3 s to build once per process)
POOL_SIZE = 1 << 22
#: the pool's own fixed random stream (stratum positions and order); not a user seed
POOL_SEED = 0x4E413634  # "NA64"
#: channels whose windows are adjacent in the pool (one random offset per block)
BLOCK = 64
#: the pool array carries a copy of its first ``WINDOW_PAD`` numbers after its end, so
#: that a block of windows of up to ``WINDOW_PAD / BLOCK`` numbers (the 32 MSADC samples
#: of a channel) starting anywhere in [0, POOL_SIZE) is contiguous
WINDOW_PAD = 64 * BLOCK


@functools.lru_cache(maxsize=2)
def gaussian_pool(size: int = POOL_SIZE) -> np.ndarray:
    """The stratified, antithetic pool of ``size`` N(0, 1) numbers (float32), followed by a
    copy of its first :data:`WINDOW_PAD` numbers (see the module docstring).  Read-only."""
    if size < 2 or size % 2:
        raise ValueError(f"noise pool size must be an even number >= 2, got {size}")
    rng = np.random.default_rng(POOL_SEED)
    half = size // 2
    upper = ndtri(0.5 + 0.5 * (np.arange(half) + rng.random(half)) / half).astype(np.float32)
    pool = np.concatenate([upper, -upper])
    rng.shuffle(pool)
    out = np.concatenate([pool, pool[:WINDOW_PAD]])
    out.flags.writeable = False
    return out


def window_starts(rng: np.random.Generator, n: int, width: int, size: int = POOL_SIZE,
                  block: int = BLOCK) -> np.ndarray:
    """Offsets (int64) of ``n`` windows of ``width`` numbers in a pool of ``size``: window i
    starts at ``base[i // block] + width * (i % block)``, ``base`` uniform in [0, size).

    The windows of a block are adjacent (never overlap); a block may run past ``size``
    (into the pool's padding, or, for a reader that wraps around, to its start).
    """
    base = rng.integers(0, size, -(-n // block), dtype=np.int64)
    return (base[:, None] + width * np.arange(block, dtype=np.int64)).reshape(-1)[:n]  # no integer division
