"""Imported once by the fork server that :func:`na64reco.runner.local_cluster` starts its
workers from: the analysis modules and numba's start-up, inherited by every worker."""

from na64reco.dask_worker import import_modules, start_numba

import_modules()
start_numba()
