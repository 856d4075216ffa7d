"""Calorimeter cell look-up of the simulation's tracks in one numba pass.

:func:`cell_index` is :meth:`na64reco.geometry.Calorimeter.cell_index` for the transport: on
float64 arrays, :func:`cell_index_kernel` does the numpy expression's ~16 passes over the
tracks (~25 calls per 10k-MOT spill: counters, ECAL, VHCAL, HCAL deposits) in one, with the
same operations in the same order, so the same cells bit for bit (issue 11, eighth pass;
``tests/test_sim_transport_kernels.py``).
"""

from __future__ import annotations

import math

import numba
import numpy as np


def cell_index(det, x, y):
    """``det.cell_index(x, y)`` (a :class:`~na64reco.geometry.Calorimeter`): ``(ix, iy, inside)``."""
    if (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == np.float64 and y.dtype == np.float64
            and x.ndim == 1 and x.shape == y.shape):
        return cell_index_kernel(x, y, float(det.center[0]), float(det.center[1]), float(det.offset_y),
                                 float(det.cell_size[0]), float(det.cell_size[1]), int(det.nx), int(det.ny),
                                 float(det.hole[0]), float(det.hole[1]))
    return det.cell_index(x, y)


@numba.njit(cache=True, nogil=True)
def cell_index_kernel(x, y, cx, cy, offset_y, size_x, size_y, nx, ny, hole_x, hole_y):
    """``(ix, iy, inside)`` as ``Calorimeter.cell_index``: ``ix = floor((x - cx) / size_x + nx / 2)``
    (int64; ``iy`` from ``y - cy - offset_y``), inside the ``nx x ny`` cells and not in the central
    hole (``hole_x > 0``: ``|lx| < hole_x / 2`` and ``|ly| < hole_y / 2``), indices clipped to the cells."""
    n = x.size
    ix = np.empty(n, np.int64)
    iy = np.empty(n, np.int64)
    inside = np.empty(n, np.bool_)
    hx = nx / 2
    hy = ny / 2
    half_x = hole_x / 2
    half_y = hole_y / 2
    for i in range(n):
        lx = x[i] - cx
        ly = (y[i] - cy) - offset_y
        a = np.int64(math.floor(lx / size_x + hx))
        b = np.int64(math.floor(ly / size_y + hy))
        ok = (a >= 0) & (a < nx) & (b >= 0) & (b < ny)
        if hole_x > 0:
            ok = ok & ~((abs(lx) < half_x) & (abs(ly) < half_y))
        inside[i] = ok
        ix[i] = min(max(a, 0), nx - 1)
        iy[i] = min(max(b, 0), ny - 1)
    return ix, iy, inside
