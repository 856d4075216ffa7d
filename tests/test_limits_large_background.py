"""Upper limits for large backgrounds: P(n <= n_obs | b) underflows (b >~ 750), the CLs ratio must not be 0/0.

The references are independent of scipy's Poisson functions: the Poisson sums in exact
decimal arithmetic (50 digits), solved by bisection; for the one-bin model with a
background uncertainty, the profile of pyhf's normsys (``code1``: exponential
interpolation, unit Gaussian constraint) done here with a bounded 1-d minimisation.
"""

import json
import math
from decimal import Decimal, getcontext

import pytest
from scipy import optimize

from na64reco import cli
from na64reco.stats import limits

CL = 0.9
BACKGROUNDS = [0.0, 5.0, 500.0, 1000.0, 1e4]


def _log_cdf_exact(n: int, mean: float) -> Decimal:
    """log P(N <= n | mean) = -mean + log sum_{i<=n} mean^i / i!, in 50-digit decimals."""
    getcontext().prec = 50
    mean = Decimal(repr(float(mean)))
    term, total = Decimal(1), Decimal(1)
    for i in range(1, n + 1):
        term = term * mean / i
        total += term
    return -mean + total.ln()


def _bisect(f, lo: float, hi: float) -> float:
    """Root of the decreasing function ``f`` in [lo, hi]."""
    assert f(lo) > 0 > f(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _reference_cls(n: int, b: float) -> float:
    log_alpha = Decimal(1 - CL).ln()
    return _bisect(lambda s: _log_cdf_exact(n, s + b) - _log_cdf_exact(n, b) - log_alpha, 0.0, 10.0 + 10.0 * (n + b))


def _reference_classical(n: int, b: float) -> float:
    log_alpha = Decimal(1 - CL).ln()
    if _log_cdf_exact(n, b) <= log_alpha:
        return 0.0  # empty: even s = 0 is excluded
    return _bisect(lambda s: _log_cdf_exact(n, s + b) - log_alpha, 0.0, 10.0 + 10.0 * (n + b))


def _profiled_mean(mu: float, n: int, b: float, db: float) -> float:
    """mu + b f(theta) at the conditional ML theta of the one-bin model (normsys code1, constraint N(0, 1))."""
    hi, lo = 1.0 + db / b, max(1.0 - db / b, 1e-3)

    def mean(theta):
        return mu + b * (hi ** theta if theta >= 0 else lo ** (-theta))

    def nll(theta):
        lam = mean(theta)
        return lam - (n * math.log(lam) if n else 0.0) + 0.5 * theta * theta

    theta = optimize.minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded",
                                     options={"xatol": 1e-10}).x
    return mean(theta)


def _reference_profiled_cls(n: int, b: float, db: float) -> float:
    log_alpha = Decimal(1 - CL).ln()
    b0 = _profiled_mean(0.0, n, b, db)
    return _bisect(lambda mu: _log_cdf_exact(n, _profiled_mean(mu, n, b, db)) - _log_cdf_exact(n, b0) - log_alpha,
                   1e-3, 10.0 + 10.0 * (n + b))


@pytest.mark.parametrize("b", BACKGROUNDS)
def test_poisson_cls_zero_observed_is_minus_log_alpha_for_any_background(b):
    assert limits.poisson_upper_limit(0, b, CL) == pytest.approx(-math.log(1 - CL), rel=1e-9)


@pytest.mark.parametrize("b", BACKGROUNDS)
@pytest.mark.parametrize("n", [1, 5, 30])
def test_poisson_cls_matches_exact_sums(n, b):
    up = limits.poisson_upper_limit(n, b, CL)
    assert math.isfinite(up)
    assert up == pytest.approx(_reference_cls(n, b), rel=1e-7)


@pytest.mark.parametrize("b", BACKGROUNDS)
@pytest.mark.parametrize("n", [0, 5])
def test_poisson_classical_matches_exact_sums(n, b):
    up = limits.poisson_upper_limit(n, b, CL, method="classical")
    assert up == pytest.approx(_reference_classical(n, b), rel=1e-7, abs=1e-9)


def test_log_poisson_cdf_where_the_cdf_underflows():
    for n, mean in [(0, 1000.0), (5, 1e4), (100, 2e4), (3, 1e6)]:
        assert limits.log_poisson_cdf(n, mean) == pytest.approx(float(_log_cdf_exact(n, mean)), rel=1e-12)
    assert limits.log_poisson_cdf(0, 1000.0) == pytest.approx(-1000.0, rel=1e-15)
    # (and where it does not: the same as the exact sums)
    assert limits.log_poisson_cdf(5, 4.0) == pytest.approx(float(_log_cdf_exact(5, 4.0)), rel=1e-12)


@pytest.mark.parametrize("b", BACKGROUNDS)
def test_pyhf_cls_without_uncertainty_matches_exact_sums(b):
    for n in (0, 5):
        assert limits.cls_upper_limit(n, b, 0.0, CL) == pytest.approx(_reference_cls(n, b), rel=1e-5)


@pytest.mark.parametrize("b", [5.0, 500.0, 1000.0, 1e4])
def test_pyhf_cls_with_uncertainty_zero_observed(b):
    # n_obs = 0: the background's profiled value does not depend on mu, so CLs = e^-mu
    assert limits.cls_upper_limit(0, b, 0.1 * b, CL) == pytest.approx(-math.log(1 - CL), rel=1e-5)


@pytest.mark.parametrize("b", [5.0, 500.0, 1000.0, 1e4])
def test_pyhf_cls_with_uncertainty_matches_own_profile(b):
    up = limits.cls_upper_limit(5, b, 0.1 * b, CL)
    assert up == pytest.approx(_reference_profiled_cls(5, b, 0.1 * b), rel=1e-3)


def test_cli_limit_large_background(capsys):
    for b in ("1000", "1e4"):
        rc = cli.main(["limit", "--mot", "1e10", "--efficiency", "0.5", "--masses", "0.1",
                       "--background", b, "--observed", "0", "--json"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert "NaN" not in captured.out
        out = json.loads(captured.out)
        assert out["n_up"] == pytest.approx(-math.log(0.1), rel=1e-6)
        assert out["n_up_poisson"] == pytest.approx(-math.log(0.1), rel=1e-9)
        assert math.isfinite(out["limits"][0]["g90"])
