"""Detector faults injected into chosen spills of a simulation (closure of the run-quality checks).

A fault is a dict (as in a YAML or JSON list)::

    {"spill": 3, "kind": "pedestal_jump", "detector": "ECAL", "channel": 44, "adc": 40}
    {"spill": 5, "kind": "noisy_channel", "detector": "ECAL", "channel": 5, "noise_adc": 20}
    {"spill": 2, "kind": "dead_plane", "plane": "MM3X"}

``spill`` is the spill number as written to the file (``spills.spill``: 1, 2, ...).

``pedestal_jump``
    the channel's even and odd pedestals move by ``adc`` ADC counts during that spill (the
    digitisation's pedestal; the conditions are not changed, so the reconstruction sees a
    pedestal shift).
``noisy_channel``
    the channel's Gaussian noise per sample becomes ``noise_adc`` ADC counts and, as a
    channel whose noise crosses the zero-suppression threshold would be, it is written in
    every event of the spill (with no signal added where it had none).
``dead_plane``
    the tracker plane records nothing during that spill: efficiency 0, no noise hits
    (its hot strips, if any, stay: they are a property of the read-out, not of the plane's
    high voltage).

Spills without a fault are simulated exactly as without faults (same random numbers), so
``faults=None`` or ``[]`` leaves the output bit-identical.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from na64reco.config import read_yaml
from na64reco.errors import ConfigError
from na64reco.geometry import Setup

KINDS = {"pedestal_jump": ("detector", "channel", "adc"), "noisy_channel": ("detector", "channel", "noise_adc"),
         "dead_plane": ("plane",)}


@dataclass(frozen=True)
class Fault:
    """One validated fault (see the module docstring)."""

    spill: int
    kind: str
    detector: str | None = None
    channel: int | None = None
    plane: str | None = None
    adc: float = 0.0  # pedestal_jump: shift (ADC counts)
    noise_adc: float = 0.0  # noisy_channel: noise sigma per sample (ADC counts)

    def to_dict(self) -> dict:
        keep = ("spill", "kind") + KINDS[self.kind]
        return {k: getattr(self, k) for k in keep}


def load_faults(path) -> list[dict]:
    """The fault list of a YAML file: a list, or a mapping with key ``faults`` holding one."""
    path = Path(path)
    data = read_yaml(path)  # one line naming the file (and the line and column of a syntax error)
    if isinstance(data, dict) and set(data) == {"faults"}:
        data = data["faults"]
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of faults (or a mapping with key 'faults'), "
                          f"found {type(data).__name__}")
    return data


def parse_faults(faults, setup: Setup) -> tuple[Fault, ...]:
    """Validate a list of fault dicts against ``setup``; raises :class:`ConfigError` naming the
    entry, the key and the allowed values."""
    out = []
    for i, f in enumerate(faults or ()):
        where = f"faults[{i}]"
        if not isinstance(f, dict):
            raise ConfigError(f"{where}: expected a mapping with 'spill' and 'kind', got {f!r}")
        kind = f.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is not one of: {', '.join(KINDS)}")
        allowed = {"spill", "kind", *KINDS[kind]}
        extra = sorted(set(f) - allowed)
        missing = sorted(allowed - set(f))
        if extra or missing:
            raise ConfigError(f"{where} ({kind}): " + (f"unknown key(s) {extra}; " if extra else "")
                              + (f"missing key(s) {missing}; " if missing else "") + f"expected {sorted(allowed)}")
        spill = f["spill"]
        if isinstance(spill, bool) or not isinstance(spill, (int, np.integer)) or spill < 1:
            raise ConfigError(f"{where}: spill must be an integer >= 1 (spills are numbered from 1), got {spill!r}")
        if kind == "dead_plane":
            names = [p.name for p in setup.planes]
            if f["plane"] not in names:
                raise ConfigError(f"{where}: plane {f['plane']!r} is not a plane of setup {setup.name} "
                                  f"({', '.join(names)})")
            out.append(Fault(int(spill), kind, plane=f["plane"]))
            continue
        det = setup.calorimeters.get(f["detector"])
        if det is None:
            raise ConfigError(f"{where}: detector {f['detector']!r} is not one of: {', '.join(setup.calorimeters)}")
        ch = f["channel"]
        if isinstance(ch, bool) or not isinstance(ch, (int, np.integer)) or not 0 <= ch < det.n_channels:
            raise ConfigError(f"{where}: channel {ch!r} of {det.name} is not in 0..{det.n_channels - 1}")
        value = f["adc"] if kind == "pedestal_jump" else f["noise_adc"]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
                or (kind == "noisy_channel" and value <= 0):
            raise ConfigError(f"{where}: {KINDS[kind][2]} must be a finite number"
                              + (" > 0" if kind == "noisy_channel" else "") + f", got {value!r}")
        out.append(Fault(int(spill), kind, detector=det.name, channel=int(ch),
                         **({"adc": float(value)} if kind == "pedestal_jump" else {"noise_adc": float(value)})))
    return tuple(out)


def faulty_calo(calo, faults: tuple[Fault, ...], setup: Setup):
    """The MSADC tables (:class:`na64reco.sim.digitize.CaloTables`) with the calorimeter
    faults of one spill applied; ``calo`` itself if there are none."""
    mine = [f for f in faults if f.kind in ("pedestal_jump", "noisy_channel")]
    if not mine:
        return calo
    ped_even, ped_odd, noise = calo.ped_even.copy(), calo.ped_odd.copy(), calo.noise.copy()
    forced = np.zeros_like(calo.dead) if calo.forced is None else calo.forced.copy()
    for f in mine:
        d = setup.calorimeters[f.detector].id
        if f.kind == "pedestal_jump":
            ped_even[d, f.channel] += f.adc
            ped_odd[d, f.channel] += f.adc
        else:
            noise[d, f.channel] = f.noise_adc
            forced[d, f.channel] = True
    return dataclasses.replace(calo, ped_even=ped_even, ped_odd=ped_odd, noise=noise, forced=forced)


def faulty_planes(planes, faults: tuple[Fault, ...], setup: Setup):
    """The tracker tables (:class:`na64reco.sim.digitize.PlaneTables`) with the dead planes
    of one spill; ``planes`` itself if there are none."""
    dead = [f.plane for f in faults if f.kind == "dead_plane"]
    if not dead:
        return planes
    index = [p.index for p in setup.planes if p.name in dead]
    eff, noise = planes.efficiency.astype(float), planes.noise_hits.astype(float)
    eff[index] = 0.0
    noise[index] = 0.0
    return dataclasses.replace(planes, efficiency=eff, noise_hits=noise)
