"""Statistics: upper limits on signal counts and couplings."""

from na64reco.stats.limits import cls_upper_limit, coupling_limit, poisson_upper_limit

__all__ = ["poisson_upper_limit", "cls_upper_limit", "coupling_limit"]
