"""Muon four-momenta as scikit-hep ``vector`` records: the awkward layer over the track fits.

:func:`~na64reco.reco.event.reconstruct` adds, for muon setups, ``mu_in`` (incoming muon)
and ``mu_out`` (outgoing muon) to every event: ``Momentum4D`` records with ``px``, ``py``,
``pz`` (GeV, the lab frame of the setup: z along the beam line) and ``mass`` (the muon mass,
GeV).  They are built from the track momentum ``p`` (``p_in`` / ``p_out``, bend view) and
the fitted slopes ``tx = dx/dz``, ``ty = dy/dz`` of the same track at the ECAL front
(``in_tx``, ``in_ty`` / ``out_tx``, ``out_ty``)::

    pz = p / sqrt(1 + tx^2 + ty^2),    px = tx * pz,    py = ty * pz       (|p| = p exactly)

A vector is *missing* (None) unless ``p`` and both slopes are measured (finite): vector
maps an all-NaN vector to ``theta = 0`` (it treats NaN cos(theta) as a null vector), so a
NaN placeholder would turn missing tracks into forward muons.  ``ak.fill_none(x, np.nan)``
turns any derived quantity back into a NaN-padded column.  Use them as::

    reco.mu_out.theta, reco.mu_out.phi, reco.mu_out.p         # polar angle (rad), azimuth, |p| (GeV)
    reco.mu_in.deltaangle(reco.mu_out)                        # kink (scattering) angle at the ECAL (rad)
    (reco.mu_in - reco.mu_out).mag                            # |3-momentum transfer| (GeV)
    (reco.mu_in - reco.mu_out).mass2                          # q^2 = t (GeV^2, negative: space-like)

Importing this module calls ``vector.register_awkward()``, so records named
``Momentum4D`` read back from Parquet behave as vectors; :func:`restore_vectors` rebuilds
them from files that lost the record name or store flat ``mu_out_px``... columns (ROOT).
The numeric kernels of the tracking never see vectors: this is the layer above them.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import vector

from na64reco import constants, units

vector.register_awkward()

#: Name of the vector record (``vector.register_awkward`` behaviour).
VECTOR_NAME = "Momentum4D"
#: Fields of each vector record, in storage order (GeV).
VECTOR_FIELDS = ("px", "py", "pz", "mass")
#: Muon mass in the output unit (GeV), PDG 2024 via :data:`na64reco.constants.MUON_MASS`.
MUON_MASS_GEV = constants.MUON_MASS / units.GeV
#: Reco field -> (momentum field, x slope field, y slope field) it is built from.
MUON_VECTORS = {
    "mu_in": ("p_in", "in_tx", "in_ty"),
    "mu_out": ("p_out", "out_tx", "out_ty"),
}


def momentum_components(p, tx, ty, lib=np):
    """(px, py, pz) of momentum ``p`` along the direction of slopes ``tx = dx/dz``, ``ty = dy/dz``.

    ``lib`` is the array library (numpy by default); units follow ``p``.  Closed form:
    ``pz = p / sqrt(1 + tx^2 + ty^2)``, ``px = tx pz``, ``py = ty pz``; a track flying
    towards +z (the beam direction) always.
    """
    pz = p / lib.sqrt(1.0 + tx * tx + ty * ty)
    return tx * pz, ty * pz, pz


def momentum_vectors(p, tx, ty, mass: float = MUON_MASS_GEV) -> ak.Array:
    """``?Momentum4D`` records (px, py, pz, mass) from momenta ``p`` (GeV) and slopes ``tx``, ``ty``.

    One record per entry of the (1-D, equally long) inputs; None where any of the three is
    not finite (no track in one of the projections).  ``mass`` in GeV.
    """
    p, tx, ty = (np.asarray(a, dtype=np.float64) for a in (p, tx, ty))
    if not p.shape == tx.shape == ty.shape or p.ndim != 1:
        raise ValueError(f"momentum_vectors needs three 1-D arrays of one length, got shapes "
                         f"{p.shape}, {tx.shape}, {ty.shape}")
    with np.errstate(invalid="ignore"):  # inf slopes: 0 * inf, masked below
        px, py, pz = momentum_components(p, tx, ty)
    measured = np.isfinite(px) & np.isfinite(py) & np.isfinite(pz)
    # what ak.mask(ak.zip({...}, with_name=VECTOR_NAME), measured) gives, built directly:
    # ~0.08 ms instead of ~0.9 per call (docs/performance.md, "Per-file overhead", fourth pass)
    columns = [px, py, pz, np.full(p.shape, float(mass))]
    records = ak.contents.RecordArray([ak.contents.NumpyArray(np.ascontiguousarray(c)) for c in columns],
                                      list(VECTOR_FIELDS), length=len(p),
                                      parameters={"__record__": VECTOR_NAME})
    return ak.Array(ak.contents.ByteMaskedArray(ak.index.Index8(measured.view(np.int8)), records, valid_when=True))


def muon_vectors(fields: dict) -> dict[str, ak.Array]:
    """``{"mu_in": ..., "mu_out": ...}`` from reco ``fields`` (name -> 1-D array); a vector
    whose momentum and slope fields are not all present is left out (e.g. NA64e: no "out")."""
    out = {}
    for name, (p, tx, ty) in MUON_VECTORS.items():
        if all(k in fields for k in (p, tx, ty)):
            out[name] = momentum_vectors(fields[p], fields[tx], fields[ty])
    return out


def restore_vectors(reco: ak.Array) -> ak.Array:
    """``reco`` with ``mu_in`` / ``mu_out`` as ``Momentum4D`` records again.

    Handles records that lost their name (a Parquet file written without awkward's
    extension types; ``ak.with_name``) and flat ``mu_out_px``, ``mu_out_py``,
    ``mu_out_pz``, ``mu_out_mass`` columns (the ROOT output, NaN where missing; they become
    one record field, None where NaN).  Other fields are untouched.
    """
    for name in MUON_VECTORS:
        flat = [f"{name}_{c}" for c in VECTOR_FIELDS]
        if name in reco.fields:
            reco = ak.with_field(reco, ak.with_name(reco[name], VECTOR_NAME), name)
        elif all(f in reco.fields for f in flat):
            cols = {c: ak.to_numpy(reco[f]).astype(np.float64) for c, f in zip(VECTOR_FIELDS, flat, strict=True)}
            measured = np.isfinite(cols["px"]) & np.isfinite(cols["py"]) & np.isfinite(cols["pz"])
            vec = ak.mask(ak.zip(cols, with_name=VECTOR_NAME), measured)
            reco = ak.with_field(reco[[f for f in reco.fields if f not in flat]], vec, name)
    return reco
