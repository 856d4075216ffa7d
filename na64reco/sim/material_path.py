"""The material on the outgoing muon's path, from the ECAL front through the outgoing station,
as slabs in z order (what the single-scattering tail is integrated over)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import hepunits as u
import numpy as np

from na64reco.errors import ConfigError


@dataclass(frozen=True)
class Slab:
    """A piece of material on the muon's path: ``z0 <= z <= z1`` (mm; thin: z0 == z1)."""

    name: str
    material: str
    x_over_x0: float
    z0: float
    z1: float


def path_elements(setup, air_step: float = 20.0 * u.mm) -> list[Slab]:
    """The material from the ECAL front (the target) through the last plane of the outgoing
    station, in z order, as the simulator places it (:func:`na64reco.sim.transport.elements`):
    the ECAL (lead, its ``x0_fraction``), the counters (scintillator), the tracker planes
    (polyimide) and the gas between them (air, or a gas volume's gas: setup ``gas_volumes``) in
    slices of at most ``air_step``, cut at the volumes' ends."""
    from na64reco.sim.transport import elements, outgoing_magnet  # transport imports hard_scatter, which uses this

    out_mag = outgoing_magnet(setup)
    if out_mag is None:
        raise ConfigError(f"setup {setup.name!r} has no outgoing station after the ECAL")
    z_end = max(p.z for p in setup.planes if p.station == out_mag.name)
    ecal = setup.detector("ECAL")
    gas = setup.readout
    bounds = [b for v in gas.gas_volumes for b in (v.z0, v.z1)]
    slabs, z = [], ecal.z
    for el in elements(setup):
        if el.z < ecal.z or el.z > z_end:
            continue
        if el.z > z:  # the gas in front of the element
            cuts = [z] + sorted(b for b in bounds if z < b < el.z) + [el.z]
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                n = max(1, math.ceil((hi - lo) / air_step))
                edges = np.linspace(lo, hi, n + 1)
                medium = gas.medium_at(0.5 * (lo + hi))
                slabs += [Slab(f"{medium} {a / u.m:.2f}-{b / u.m:.2f} m", medium, gas.x0_between(a, b), a, b)
                          for a, b in zip(edges[:-1], edges[1:], strict=True)]
        if el.kind == "plane":
            slabs.append(Slab(el.obj.name, "polyimide", el.obj.x0_fraction, el.z, el.z))
            z = el.z
        elif el.kind in ("counter", "paddles"):
            if el.obj.x0_fraction > 0:
                slabs.append(Slab(el.obj.name, "scintillator", el.obj.x0_fraction, el.z, el.z))
            z = max(z, el.z)
        elif el.kind == "ecal":
            n = 10
            edges = np.linspace(el.z, el.z + el.obj.depth, n + 1)
            slabs += [Slab(f"ECAL {i}", "lead", el.obj.x0_fraction / n, a, b)
                      for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
            z = el.z + el.obj.depth
        elif el.kind in ("vhcal", "hcal", "srd"):  # the muon flies through the VHCAL hole: no air there
            z = el.z + el.obj.depth
        else:  # magnet (a thin kick in air), decay region marker
            z = max(z, el.z)
    return slabs
