"""Detector setups (``calib/setups/<name>.yaml``) as immutable objects.

A :class:`Setup` holds the beam, magnets, tracker planes, calorimeters/counters, the
sampling-ADC read-out and the trigger of one NA64 configuration, with every quantity in
hepunits internal units.  Detectors are placed on the reference trajectory: a particle
of each magnet's reference momentum entering along the z axis, bent by thin kicks at
the magnet centres (exact for straight-line extrapolation of the outer segments).

Run periods
    A setup file may list ``periods``: each has a ``name``, a run range ``runs: {first,
    last}`` and an ``override`` of the base description (the rest of the file).  The
    override is merged key by key into the base (mappings recursively, other values
    replaced), except ``trackers.planes``, merged by plane ``name``: an entry with an
    existing name updates that plane's keys, a new name adds a plane, ``{name: X,
    remove: true}`` drops plane X.  ``load_setup(name, run=...)`` applies the period
    containing ``run``; without a run, the base description (``Setup.period`` = "").
    ``simulation`` and ``calibration`` cannot be overridden (they are read from the file
    by the simulator and the calibration, not from the :class:`Setup`).

Deflected-muon counters
    A counter with ``deflected: {magnet: M, edge_momentum: P}`` is placed beside the
    reference trajectory in M's bend plane, on the side a lower-momentum particle of the
    beam's charge bends to, with its inner edge where a particle of momentum P (entering
    M on the reference trajectory) crosses the counter's z: offset
    :func:`deflection_offset` = -(kick(P) - kick(p_ref)) x (z - z_M).  An unscattered beam
    particle misses it; a particle with p < P hits it (up to the spread of positions).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import hepunits
import numpy as np

from na64reco import as_loaded, constants
from na64reco.config import Node
from na64reco.errors import ConfigError
from na64reco.resources import calib_dir
from na64reco.setup_document import setup_document
from na64reco.units import MM_PER_M

SETUPS = ("na64mu", "na64e")
TRACKER_TYPES = ("MM", "GEM", "straw")


@dataclass(frozen=True)
class Beam:
    particle: str
    energy: float
    momentum_spread: float
    spot_sigma_x: float
    spot_sigma_y: float
    divergence_x: float
    divergence_y: float
    start_z: float
    halo_fraction: float
    halo_radius_min: float
    halo_radius_max: float
    hadron_admixture: float
    kaon_to_pion: float
    particles_per_spill: float
    spill_duration: float
    pileup_window: float

    @property
    def mass(self) -> float:
        return constants.MUON_MASS if self.particle.startswith("mu") else constants.ELECTRON_MASS


@dataclass(frozen=True)
class Magnet:
    name: str
    bend_plane: str  # "x" or "y"
    center_z: float
    length: float
    field_integral: float  # hepunits (tesla * mm)
    reference_momentum: float

    def kick(self, momentum):
        """Bend angle (rad) for a unit-charge particle of ``momentum`` (MeV, array ok)."""
        return constants.MOMENTUM_PER_TESLA_METRE * self.field_integral / momentum

    def momentum(self, kick):
        """Inverse of :meth:`kick`: momentum (MeV) from a bend angle (rad)."""
        return constants.MOMENTUM_PER_TESLA_METRE * self.field_integral / kick


@dataclass(frozen=True)
class TrackerPlane:
    index: int
    name: str
    type: str
    station: str
    side: str  # "upstream" / "downstream" of the station's magnet
    z: float
    measures: str  # "x" or "y"
    n_strips: int
    pitch: float
    resolution: float
    efficiency: float
    x0_fraction: float
    noise_hits: float  # mean number of noise clusters per event
    center: float = 0.0  # reference trajectory at z in the measured coordinate
    #: hit time of an in-time track (ns, reconstructed hit time: APV pulse start relative to the
    #: first sample, straw TDC time of zero drift) and its resolution (ns; 0: no time information)
    time_offset: float = 0.0
    time_resolution: float = 0.0

    @property
    def width(self) -> float:
        return self.n_strips * self.pitch

    def strip_of(self, u):
        """Strip index (float) of local coordinate ``u`` (mm, relative to the plane centre)."""
        return (np.asarray(u) + 0.5 * self.width) / self.pitch - 0.5

    def position_of(self, strip):
        """Local coordinate (mm) of a (fractional) strip index."""
        return (np.asarray(strip) + 0.5) * self.pitch - 0.5 * self.width


@dataclass(frozen=True)
class GasVolume:
    """A volume on the beam path filled with a gas instead of air (e.g. a helium bag in a
    spectrometer magnet): ``z0 <= z <= z1`` (mm), the gas's radiation lengths per metre."""

    name: str
    material: str  # a key of constants.GASES
    z0: float
    z1: float
    x0_per_metre: float


@dataclass(frozen=True)
class TrackerReadout:
    mm_channels: int
    mm_multiplex_steps: tuple[int, ...]
    apv_sample_spacing: float
    apv_peaking_time: float
    apv_gain: float
    apv_noise: float
    cluster_spread: float
    straw_drift_velocity: float
    straw_tdc_lsb: float
    air_x0_per_metre: float
    #: largest magnitude of a pedestal-subtracted APV sample (ADC counts: the ADC's full scale)
    apv_max_adc: int
    #: (first, last) time (ns, relative to the trigger) of simulated noise clusters (APV planes)
    #: and noise straw hits; (0, 0): at the trigger time
    apv_noise_window: tuple[float, float] = (0.0, 0.0)
    straw_noise_window: tuple[float, float] = (0.0, 0.0)
    #: (first, last) time (ns) in which other beam particles cross the trackers at the beam rate
    #: (tracker hits only; :mod:`na64reco.sim.occupancy`); (0, 0): none
    beam_pileup_window: tuple[float, float] = (0.0, 0.0)
    #: gas volumes replacing the air between z0 and z1 (z order, not overlapping)
    gas_volumes: tuple[GasVolume, ...] = ()

    def x0_between(self, z0: float, z1: float) -> float:
        """Radiation lengths of the gas on the path from ``z0`` to ``z1`` (mm, z0 <= z1): air, but
        inside the ``gas_volumes`` their gas.  Without volumes exactly ``air x0/mm x (z1 - z0)``."""
        air = self.air_x0_per_metre / MM_PER_M
        x = air * (z1 - z0)
        for v in self.gas_volumes:
            overlap = min(z1, v.z1) - max(z0, v.z0)
            if overlap > 0:
                x += overlap * (v.x0_per_metre / MM_PER_M - air)
        return x

    def medium_at(self, z: float) -> str:
        """The gas at ``z``: a gas volume's material, else ``"air"``."""
        return next((v.material for v in self.gas_volumes if v.z0 <= z <= v.z1), "air")

    def mm_channel_of_strip(self, strip):
        """Multiplexing map: APV channel reading MM ``strip`` (vectorised)."""
        strip = np.asarray(strip)
        group, j = np.divmod(strip, self.mm_channels)
        steps = np.asarray(self.mm_multiplex_steps)
        return (j * steps[group]) % self.mm_channels

    @property
    def mm_strips_of_channel(self) -> np.ndarray:
        """(mm_channels, groups) table: the strip of each group read by each channel."""
        n, groups = self.mm_channels, len(self.mm_multiplex_steps)
        table = np.empty((n, groups), dtype=np.int64)
        j = np.arange(n)
        for k in range(groups):
            table[self.mm_channel_of_strip(k * n + j), k] = k * n + j
        return table


@dataclass(frozen=True)
class Calorimeter:
    """A calorimeter, module stack, paddle set or single counter read by the MSADC."""

    name: str
    id: int
    kind: str  # calorimeter | modules | paddles | counter
    z: float
    nx: int
    ny: int
    n_sections: int  # sections (ECAL), modules (HCAL, SRD), paddles, or 1
    section_names: tuple[str, ...]
    section_depths: tuple[float, ...]
    cell_size: tuple[float, float]
    size: tuple[float, float]
    hole: tuple[float, float]
    offset_y: float
    mip_mpv: float
    mip_width: float
    x0_fraction: float
    nominal_gain: float  # energy per ADC count (MeV), the nominal read-out setting
    params: dict = field(default_factory=dict, hash=False, compare=False)
    center: tuple[float, float] = (0.0, 0.0)
    deflected_magnet: str = ""  # counters beside the beam (module doc): the bending magnet
    edge_momentum: float = 0.0  # ... and the momentum whose trajectory passes the inner edge (MeV)

    def number(self, key: str) -> float:
        """The plain-number entry ``key`` of this detector's description in the setup file (a
        ConfigError naming the detector and key if it is missing or not a number)."""
        value = self.params.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"setup detector {self.name}: key 'calorimeters.{self.name}.{key}': expected a "
                              f"number, found {value!r}")
        return float(value)

    @property
    def n_channels(self) -> int:
        if self.kind == "paddles":
            return 2 * self.n_sections
        return self.n_sections * self.nx * self.ny

    def channel(self, section, ix, iy):
        return (np.asarray(section) * self.nx + ix) * self.ny + iy

    def cell_of_channel(self, channel):
        """(section, ix, iy) of channel numbers (for paddles: (paddle, pmt, 0))."""
        channel = np.asarray(channel)
        if self.kind == "paddles":
            return channel // 2, channel % 2, np.zeros_like(channel)
        iy = channel % self.ny
        ix = (channel // self.ny) % self.nx
        return channel // (self.nx * self.ny), ix, iy

    def cell_center(self, ix, iy):
        """(x, y) of the centre of cell (ix, iy) in global coordinates."""
        x = self.center[0] + (np.asarray(ix) - (self.nx - 1) / 2) * self.cell_size[0]
        y = self.center[1] + self.offset_y + (np.asarray(iy) - (self.ny - 1) / 2) * self.cell_size[1]
        return x, y

    def cell_index(self, x, y):
        """(ix, iy, inside) of global positions; ``inside`` is False outside or in the hole."""
        lx = np.asarray(x) - self.center[0]
        ly = np.asarray(y) - self.center[1] - self.offset_y
        ix = np.floor(lx / self.cell_size[0] + self.nx / 2).astype(np.int64)
        iy = np.floor(ly / self.cell_size[1] + self.ny / 2).astype(np.int64)
        inside = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        if self.hole[0] > 0:
            inside &= ~((np.abs(lx) < self.hole[0] / 2) & (np.abs(ly) < self.hole[1] / 2))
        return np.clip(ix, 0, self.nx - 1), np.clip(iy, 0, self.ny - 1), inside

    @property
    def depth(self) -> float:
        return float(sum(self.section_depths))


@dataclass(frozen=True)
class MSADC:
    n_samples: int
    sample_period: float
    max_adc: int
    pulse_rise: float
    pulse_decay: float
    signal_time: float
    time_jitter: float
    zero_suppression: float
    nominal_pedestal: float
    pedestal_spread: float
    parity_offset: float
    noise: float
    gain_spread: float


@dataclass(frozen=True)
class TriggerTerm:
    """One AND-term of the trigger: a counter (``veto`` for "!NAME") or an energy cut."""

    detector: str
    section: str | None = None
    veto: bool = False
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Trigger:
    terms: tuple[TriggerTerm, ...]
    counter_threshold: float
    #: DAQ dead time per recorded trigger (non-paralysable; 0 = none): the live fraction at a
    #: trigger rate R is 1 / (1 + R x dead_time) (:func:`na64reco.efficiency.daq_live_fraction`)
    dead_time: float = 0.0


@dataclass(frozen=True)
class Period:
    """A run period of a setup file: name, run range and the override it applies."""

    name: str
    first: int
    last: int
    description: str = ""


@dataclass(frozen=True)
class Setup:
    name: str
    description: str
    source: str
    beam: Beam
    magnets: dict[str, Magnet]
    planes: tuple[TrackerPlane, ...]
    readout: TrackerReadout
    calorimeters: dict[str, Calorimeter]
    msadc: MSADC
    trigger: Trigger
    period: str = ""  # run period applied ("" = the base description)

    def detector(self, name: str) -> Calorimeter:
        try:
            return self.calorimeters[name]
        except KeyError:
            raise ConfigError(
                f"setup {self.name!r} has no detector {name!r} (has: {', '.join(self.calorimeters)})"
            ) from None

    def detector_by_id(self, det_id: int) -> Calorimeter:
        for det in self.calorimeters.values():
            if det.id == det_id:
                return det
        raise ConfigError(f"setup {self.name!r} has no detector id {det_id}")

    def planes_of(self, station: str, side: str | None = None) -> tuple[TrackerPlane, ...]:
        return tuple(p for p in self.planes if p.station == station and (side is None or p.side == side))

    def reference_position(self, z):
        """(x, y) of the reference trajectory at ``z`` (vectorised)."""
        z = np.asarray(z, dtype=float)
        pos = {"x": np.zeros_like(z), "y": np.zeros_like(z)}
        for m in self.magnets.values():
            kick = m.kick(m.reference_momentum)
            # the beam bends towards negative coordinates (negative muon, field sign chosen)
            pos[m.bend_plane] = pos[m.bend_plane] - kick * np.clip(z - m.center_z, 0.0, None)
        return pos["x"], pos["y"]


def check_beam_energy(energy: float, what: str = "beam energy") -> float:
    """``energy`` (MeV) if it can be a beam energy here: finite, above 0 and at most the SPS North
    Area's proton momentum (:data:`na64reco.constants.SPS_NORTH_AREA_MOMENTUM`; no NA64 beam has
    more), else a one-line :class:`ConfigError` naming ``what`` (e.g. the option) in GeV."""
    top = constants.SPS_NORTH_AREA_MOMENTUM
    if not (math.isfinite(energy) and 0 < energy <= top):
        raise ConfigError(f"{what} {energy / hepunits.GeV:g} GeV: expected above 0 and at most {top / hepunits.GeV:g} "
                          "GeV, the SPS protons of the North Area (constants.SPS_NORTH_AREA_MOMENTUM)")
    return energy


def deflection_offset(magnet: Magnet, momentum, z):
    """Position (mm) at ``z`` of a beam-charge particle of ``momentum`` relative to the reference.

    Both enter ``magnet`` on the reference trajectory; thin kick at the magnet centre, straight
    flight after it: offset = -(kick(p) - kick(p_ref)) x (z - z_magnet).  The field sign makes
    the reference bend towards negative coordinates (:meth:`Setup.reference_position`), so a
    softer particle of the same charge lands further on the negative side.  0 upstream of
    the magnet centre.  Vectorised in ``momentum`` and ``z``.
    """
    lever = np.clip(np.asarray(z, float) - magnet.center_z, 0.0, None)
    extra = magnet.kick(np.asarray(momentum, float)) - magnet.kick(magnet.reference_momentum)
    return -extra * lever


# ----------------------------------------------------------------------------------------
def setup_path(name: str) -> Path:
    return calib_dir() / "setups" / f"{name}.yaml"


def _setup_file(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        if name_or_path not in SETUPS:
            raise ConfigError(f"unknown setup {name_or_path!r}; known setups: {', '.join(SETUPS)}")
        path = setup_path(name_or_path)
    return path.absolute()  # (a setup's source stays valid after a change of directory)


def load_setup(name_or_path: str, run: int | None = None) -> Setup:
    """Load a setup by name (``"na64mu"``, ``"na64e"``) or from a YAML path.

    ``run``: apply the run period containing it (module doc); a run outside every period of
    a file that has periods raises ConfigError naming the covered ranges.
    """
    if run is None:
        return _load_period(str(name_or_path), "")
    period = period_of_run(name_or_path, int(run))
    return _load_period(str(name_or_path), period.name if period else "")


def check_period(setup: Setup, run: int, what: str) -> None:
    """A :class:`ConfigError` unless ``setup`` was loaded for the period of ``run`` (``what`` names the
    run's source, e.g. "reconstruct(): the events of FILE"): a setup loaded without a run applies
    neither a period's planes nor its rules (e.g. the 2022 tracking's hit on every plane), and its
    reconstruction of a run in a period would be silently another's."""
    period = period_of_run(setup.source, int(run))
    name = period.name if period else ""
    if name != setup.period:
        loaded = f"period {setup.period!r}" if setup.period else "the base description (no run given)"
        by = setup.name if Path(setup.source) == setup_path(setup.name).absolute() else setup.source
        raise ConfigError(f"{what}: run {int(run)} is in period {name!r} of setup {setup.name!r}, but the setup was "
                          f"loaded for {loaded}; load it with load_setup({by!r}, run={int(run)})")


def list_periods(name_or_path: str) -> tuple[Period, ...]:
    """The run periods of a setup file (empty if it has none)."""
    return _periods(str(_setup_file(str(name_or_path))))


def period_of_run(name_or_path: str, run: int) -> Period | None:
    """The period of ``run`` (None if the file has no periods)."""
    path = _setup_file(str(name_or_path))
    periods = _periods(str(path))
    if not periods:
        return None
    for p in periods:
        if p.first <= run <= p.last:
            return p
    ranges = ", ".join(f"{p.name}: {p.first}-{p.last}" for p in periods)
    raise ConfigError(f"{path}: key 'periods': run {run} is in no period (periods: {ranges})")


@functools.lru_cache(maxsize=16)
def _periods(path: str) -> tuple[Period, ...]:
    node = setup_document(path)
    if not node.has("periods"):
        return ()
    out = []
    for p in node.nodes("periods"):
        name = str(p.raw("name"))
        first, last = p.integer("runs.first", minimum=0), p.integer("runs.last", minimum=0)
        if first > last:
            raise p.error("runs", f"first={first} is after last={last}")
        if p.has("override") and not isinstance(p.raw("override"), dict):
            raise p.error("override", "expected a mapping of setup keys")
        bad = set(p.data) - {"name", "runs", "override", "description"}
        if bad:
            raise p.error(sorted(bad)[0], "unknown key (allowed: name, runs, override, description)")
        out.append(Period(name, first, last, p.string("description", "")))
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise node.error("periods", f"period names must be unique, found {names}")
    spans = sorted((p.first, p.last, p.name) for p in out)
    for a, b in zip(spans, spans[1:], strict=False):
        if b[0] <= a[1]:
            raise node.error("periods", f"run ranges of periods {a[2]!r} and {b[2]!r} overlap")
    return tuple(out)


_NOT_OVERRIDABLE = ("schema_version", "setup", "periods", "simulation", "calibration")


@functools.lru_cache(maxsize=16)
def _load_period(name_or_path: str, period: str) -> Setup:
    path = _setup_file(name_or_path)
    node = setup_document(path)
    data = {k: v for k, v in node.data.items() if k != "periods"}
    if period:
        (entry,) = [(i, p) for i, p in enumerate(node.nodes("periods")) if str(p.raw("name")) == period]
        i, p = entry
        where = f"periods.{i}.override"
        override = p.data.get("override") or {}
        for key in override:
            if key in _NOT_OVERRIDABLE:
                raise ConfigError(f"{path}: key '{where}.{key}': cannot be overridden by a period")
            if key not in data:
                raise ConfigError(f"{path}: key '{where}.{key}': not a key of the base description")
        data = _merge(data, override, f"{where}", str(path))
    try:
        setup = _parse_setup(Node(data, str(path)))
    except ConfigError as exc:
        if not period:
            raise
        _load_period(name_or_path, "")  # an error of the base description itself is raised as it is
        # (the key is named in the setup as the period's override made it: say where the override is)
        raise ConfigError(f"{exc} (in the setup as period {period!r} overrides it: {where})") from exc
    return as_loaded.remember(replace(setup, period=period))  # (shared: edits in place are detected)


def _merge(base, over, where: str, source: str):
    """``over`` merged into ``base`` (module doc); new objects, inputs untouched."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            key = f"{where}.{k}"
            if where.endswith("trackers") and k == "planes":
                out[k] = _merge_planes(base.get("planes", []), v, key, source)
            else:
                out[k] = _merge(base[k], v, key, source) if k in base else v
        return out
    return over


def _merge_planes(base: list, over, where: str, source: str) -> list:
    if not isinstance(over, list):
        raise ConfigError(f"{source}: key '{where}': expected a list of planes")
    out = [dict(p) for p in base]
    names = [p.get("name") for p in out]
    for i, p in enumerate(over):
        if not isinstance(p, dict) or "name" not in p:
            raise ConfigError(f"{source}: key '{where}.{i}': expected a mapping with a 'name'")
        if p.get("remove"):
            if p["name"] not in names:
                raise ConfigError(f"{source}: key '{where}.{i}': no plane {p['name']!r} to remove")
            j = names.index(p["name"])
            del out[j], names[j]
        elif p["name"] in names:
            out[names.index(p["name"])].update(p)
        else:
            out.append(dict(p))
            names.append(p["name"])
    return out


#: The keys of a setup's document (its sections) and of a calorimeter entry: any other is a
#: misspelling, refused (the readers would never read it, a default or the base's value in force).
SETUP_KEYS = frozenset({"schema_version", "setup", "description", "beam", "magnets", "trackers", "calorimeters",
                        "msadc", "trigger", "simulation", "calibration", "periods"})
CALORIMETER_KEYS = frozenset({
    "kind", "id", "z", "size", "cells", "cell_size", "sections", "modules", "module_depth", "paddles",
    "paddle_size", "pmts_per_paddle", "hole", "offset_y", "deflected", "mip_mpv", "mip_width", "nominal_gain",
    "sampling_fraction", "x0_fraction", "moliere_radius", "resolution_stochastic", "resolution_constant",
    "shower_containment", "shower_fraction_floor", "interaction_lengths_per_module", "synchrotron_mean"})
BEAM_KEYS = frozenset({
    "particle", "energy", "momentum_spread", "spot_sigma_x", "spot_sigma_y", "divergence_x", "divergence_y", "start_z",
    "halo_fraction", "halo_radius_min", "halo_radius_max", "hadron_admixture", "kaon_to_pion", "particles_per_spill",
    "spill_duration", "pileup_window"})
MAGNET_KEYS = frozenset({"bend_plane", "center_z", "length", "field_integral", "reference_momentum"})
MSADC_KEYS = frozenset({
    "n_samples", "sample_period", "max_adc", "pulse_rise", "pulse_decay", "signal_time", "time_jitter",
    "zero_suppression", "nominal_pedestal", "pedestal_spread", "parity_offset", "noise", "gain_spread",
    "pedestal_samples", "pedestal_contamination", "timing_window", "pileup_fraction", "pileup_prominence",
    "pileup_chi2"})
TRIGGER_KEYS = frozenset({"logic", "counter_threshold", "dead_time_per_event"})
TRACKER_KEYS = frozenset({
    "defaults", "planes", "mm_channels", "mm_multiplex_steps", "apv_sample_spacing", "apv_peaking_time", "apv_gain",
    "apv_noise", "apv_noise_window", "apv_max_adc", "cluster_spread", "straw_drift_velocity", "straw_tdc_lsb",
    "straw_noise_window", "air_x0_per_metre", "beam_pileup_window", "gas_volumes"})
#: a plane's keys (its own, and those its type's ``defaults`` give it)
PLANE_KEYS = frozenset({"name", "type", "station", "side", "z", "measures", "n_strips", "pitch", "resolution",
                        "efficiency", "x0_fraction", "noise_hits", "time_offset", "time_resolution"})


def _parse_setup(n: Node) -> Setup:
    n.check_keys(SETUP_KEYS)
    name = n.string("setup")
    b = n.node("beam")
    b.check_keys(BEAM_KEYS)
    beam = Beam(
        particle=b.string("particle", choices=("mu-", "mu+", "e-", "e+")),
        energy=b.quantity("energy", "energy", minimum=0.0),
        momentum_spread=b.number("momentum_spread", minimum=0.0, maximum=0.5),
        spot_sigma_x=b.quantity("spot_sigma_x", "length", minimum=0.0),
        spot_sigma_y=b.quantity("spot_sigma_y", "length", minimum=0.0),
        divergence_x=b.quantity("divergence_x", "angle", minimum=0.0),
        divergence_y=b.quantity("divergence_y", "angle", minimum=0.0),
        start_z=b.quantity("start_z", "length"),
        halo_fraction=b.number("halo_fraction", minimum=0.0, maximum=1.0),
        halo_radius_min=b.quantity("halo_radius_min", "length", minimum=0.0),
        halo_radius_max=b.quantity("halo_radius_max", "length", minimum=0.0),
        hadron_admixture=b.number("hadron_admixture", minimum=0.0, maximum=1.0),
        kaon_to_pion=b.number("kaon_to_pion", minimum=0.0),
        particles_per_spill=b.number("particles_per_spill", minimum=1.0),
        spill_duration=b.quantity("spill_duration", "time", minimum=0.0),
        pileup_window=b.quantity("pileup_window", "time", minimum=0.0),
    )
    magnets = {}
    for mname, m in n.node("magnets").items():
        m.check_keys(MAGNET_KEYS)
        magnets[mname] = Magnet(
            name=mname,
            bend_plane=m.string("bend_plane", choices=("x", "y")),
            center_z=m.quantity("center_z", "length"),
            length=m.quantity("length", "length", minimum=0.0),
            field_integral=m.quantity("field_integral", "field_integral"),
            reference_momentum=m.quantity("reference_momentum", "energy", minimum=0.0),
        )
    t = n.node("trackers")
    t.check_keys(TRACKER_KEYS)
    defaults = t.node("defaults")
    defaults.check_keys(TRACKER_TYPES)
    for ptype in defaults.data:
        defaults.node(ptype).check_keys(PLANE_KEYS)
    planes = []
    for i, p in enumerate(t.nodes("planes")):
        p.check_keys(PLANE_KEYS)
        ptype = p.string("type", choices=TRACKER_TYPES)
        d = defaults.node(ptype)
        merged = Node({**d.data, **p.data}, p.source, p.path)
        station = merged.string("station", choices=tuple(magnets))
        planes.append(TrackerPlane(
            index=i,
            name=merged.string("name"),
            type=ptype,
            station=station,
            side=merged.string("side", choices=("upstream", "downstream")),
            z=merged.quantity("z", "length"),
            measures=merged.string("measures", choices=("x", "y")),
            n_strips=merged.integer("n_strips", minimum=1),
            pitch=merged.quantity("pitch", "length", minimum=0.0),
            resolution=merged.quantity("resolution", "length", minimum=0.0),
            efficiency=merged.number("efficiency", minimum=0.0, maximum=1.0),
            x0_fraction=merged.number("x0_fraction", minimum=0.0),
            noise_hits=merged.number("noise_hits", minimum=0.0),
            time_offset=merged.quantity("time_offset", "time", 0.0),
            time_resolution=merged.quantity("time_resolution", "time", 0.0, minimum=0.0),
        ))
    readout = TrackerReadout(
        mm_channels=t.integer("mm_channels", minimum=1),
        mm_multiplex_steps=tuple(int(v) for v in t.numbers("mm_multiplex_steps", minimum=1)),
        apv_sample_spacing=t.quantity("apv_sample_spacing", "time", minimum=0.0),
        apv_peaking_time=t.quantity("apv_peaking_time", "time", minimum=0.0),
        apv_gain=t.number("apv_gain", minimum=0.0),
        apv_noise=t.number("apv_noise", minimum=0.0),
        cluster_spread=t.number("cluster_spread", minimum=0.0),
        straw_drift_velocity=n.node("trackers").quantity("straw_drift_velocity", "length_per_time"),
        straw_tdc_lsb=t.quantity("straw_tdc_lsb", "time", minimum=0.0),
        air_x0_per_metre=t.number("air_x0_per_metre", minimum=0.0),
        apv_max_adc=t.integer("apv_max_adc", minimum=1),
        apv_noise_window=_time_window(t, "apv_noise_window"),
        straw_noise_window=_time_window(t, "straw_noise_window"),
        beam_pileup_window=_time_window(t, "beam_pileup_window"),
        gas_volumes=_gas_volumes(t),
    )
    steps = readout.mm_multiplex_steps
    signed = {s % readout.mm_channels for s in steps} | {-s % readout.mm_channels for s in steps}
    if any(math.gcd(s, readout.mm_channels) != 1 for s in steps) or len(signed) != 2 * len(steps):
        raise t.error("mm_multiplex_steps", "steps must be coprime with mm_channels and +-steps distinct")
    mm_planes = [p for p in planes if p.type == "MM"]
    if any(p.n_strips != readout.mm_channels * len(steps) for p in mm_planes):
        raise t.error("mm_multiplex_steps", "MM planes need mm_channels x len(steps) strips")
    calos = {}
    for cname, c in n.node("calorimeters").items():
        calos[cname] = _parse_calorimeter(cname, c, magnets)
    ids = [c.id for c in calos.values()]
    if len(set(ids)) != len(ids):
        raise n.error("calorimeters", f"detector ids must be unique, found {sorted(ids)}")
    a = n.node("msadc")
    a.check_keys(MSADC_KEYS)
    msadc = MSADC(
        n_samples=a.integer("n_samples", minimum=8),
        sample_period=a.quantity("sample_period", "time", minimum=0.0),
        max_adc=a.integer("max_adc", minimum=1),
        pulse_rise=a.quantity("pulse_rise", "time", minimum=0.0),
        pulse_decay=a.quantity("pulse_decay", "time", minimum=0.0),
        signal_time=a.quantity("signal_time", "time", minimum=0.0),
        time_jitter=a.quantity("time_jitter", "time", minimum=0.0),
        zero_suppression=a.number("zero_suppression", minimum=0.0),
        nominal_pedestal=a.number("nominal_pedestal", minimum=0.0),
        pedestal_spread=a.number("pedestal_spread", minimum=0.0),
        parity_offset=a.number("parity_offset"),
        noise=a.number("noise", minimum=0.0),
        gain_spread=a.number("gain_spread", minimum=0.0, maximum=0.5),
    )
    trig = n.node("trigger")
    trig.check_keys(TRIGGER_KEYS)
    logic = trig.raw("logic")
    if not isinstance(logic, list) or not logic:
        raise trig.error("logic", "expected a non-empty list of terms")
    terms = tuple(_parse_trigger_term(trig, i, s, calos) for i, s in enumerate(logic))
    trigger = Trigger(terms, trig.number("counter_threshold", minimum=0.0),
                      trig.quantity("dead_time_per_event", "time", 0.0, minimum=0.0))

    setup = Setup(name, n.string("description", ""), n.source, beam, magnets,
                  tuple(planes), readout, calos, msadc, trigger)
    return _place_on_reference(setup)


_TERM = re.compile(r"^\s*(\w+)(?:\.(\w+))?\s*([<>])\s*(.+)$")


def _parse_trigger_term(trig: Node, i: int, text, calos) -> TriggerTerm:
    if not isinstance(text, str):
        raise trig.error(f"logic.{i}", f"expected a string term, found {text!r}")
    m = _TERM.match(text)
    if m:
        det, section, op, qty = m.groups()
        sub = Node({"q": qty}, trig.source, trig._where(f"logic.{i}"))
        value = sub.quantity("q", "energy")
        term = TriggerTerm(det, section, False, value if op == ">" else None, value if op == "<" else None)
    else:
        veto = text.startswith("!")
        term = TriggerTerm(text.lstrip("!").strip(), None, veto)
    if term.detector not in calos:
        raise trig.error(f"logic.{i}", f"unknown detector {term.detector!r} (known: {', '.join(calos)})")
    if term.section and term.section not in calos[term.detector].section_names:
        raise trig.error(f"logic.{i}", f"{term.detector} has no section {term.section!r}")
    return term


def _gas_volumes(node) -> tuple[GasVolume, ...]:
    """``gas_volumes``: a list of ``{name, material, first, last}`` (z with units, material a key
    of constants.GASES), in z order and not overlapping."""
    out = []
    for v in node.nodes("gas_volumes") if node.has("gas_volumes") else []:
        material = v.string("material", choices=tuple(constants.GASES))
        z0, z1 = v.quantity("first", "length"), v.quantity("last", "length")
        if not z0 < z1:
            raise v.error("last", f"the volume must end after it starts (first {z0} mm, last {z1} mm)")
        if out and z0 < out[-1].z1:
            raise v.error("first", f"overlaps or precedes {out[-1].name!r} (ends at {out[-1].z1} mm): "
                                   "give the volumes in z order, not overlapping")
        x0, density = constants.GASES[material]
        out.append(GasVolume(v.string("name"), material, z0, z1, float(hepunits.m * density / x0)))
    return tuple(out)


def _time_window(node, key: str) -> tuple[float, float]:
    """An optional ``[first, last]`` pair of times (with units) of ``node``; (0, 0) if absent."""
    if not node.has(key):
        return (0.0, 0.0)
    value = node.raw(key)
    if not isinstance(value, list) or len(value) != 2:
        raise node.error(key, f"expected [first, last] times with units, found {value!r}")
    sub = Node({"first": value[0], "last": value[1]}, node.source, f"{node.path}.{key}" if node.path else key)
    first, last = sub.quantity("first", "time"), sub.quantity("last", "time")
    if not first <= last:
        raise node.error(key, f"first time {value[0]} after last time {value[1]}")
    return (first, last)


def _parse_calorimeter(name: str, c: Node, magnets: dict[str, Magnet]) -> Calorimeter:
    c.check_keys(CALORIMETER_KEYS)
    kind = c.string("kind", choices=("calorimeter", "modules", "paddles", "counter"))
    deflected, edge = "", 0.0
    if c.has("deflected"):
        d = c.node("deflected")
        d.check_keys(("magnet", "edge_momentum"))
        if kind != "counter":
            raise c.error("deflected", f"only counters can be placed beside the beam, {name} is a {kind}")
        deflected = d.string("magnet", choices=tuple(magnets))
        m = magnets[deflected]
        edge = d.quantity("edge_momentum", "energy", minimum=0.0)
        if not 0 < edge < m.reference_momentum:
            raise d.error("edge_momentum", f"must be between 0 and {deflected}'s reference momentum")
        if c.quantity("z", "length") <= m.center_z:
            raise c.error("z", f"a counter beside the beam must be downstream of {deflected}")
    zero = (0.0, 0.0)
    if kind == "calorimeter":
        cells = c.numbers("cells", 2, minimum=1)
        secs = c.nodes("sections")
        names = tuple(s.string("name") for s in secs)
        depths = tuple(s.quantity("depth", "length", minimum=0.0) for s in secs)
        cell = tuple(c.quantity(f"cell_size.{i}", "length", minimum=0.0) for i in range(2))
        size = (cells[0] * cell[0], cells[1] * cell[1])
    elif kind == "modules":
        cells = c.numbers("cells", 2, minimum=1)
        nmod = c.integer("modules", minimum=1)
        names = tuple(f"module{i}" for i in range(nmod))
        depths = (c.quantity("module_depth", "length", minimum=0.0),) * nmod
        cell = tuple(c.quantity(f"cell_size.{i}", "length", minimum=0.0) for i in range(2))
        size = (cells[0] * cell[0], cells[1] * cell[1])
    elif kind == "paddles":
        npad = c.integer("paddles", minimum=1)
        cells = [npad, 1]
        names = tuple(f"paddle{i}" for i in range(npad))
        depths = (10.0,)
        cell = tuple(c.quantity(f"paddle_size.{i}", "length", minimum=0.0) for i in range(2))
        size = (npad * cell[0], cell[1])
    else:
        cells = [1, 1]
        names = ("counter",)
        depths = (10.0,)
        size = tuple(c.quantity(f"size.{i}", "length", minimum=0.0) for i in range(2))
        cell = size
    hole = tuple(c.quantity(f"hole.{i}", "length", minimum=0.0) for i in range(2)) if c.has("hole") else zero
    params = {k: v for k, v in c.data.items()}
    n_sections = len(names) if kind != "paddles" else cells[0]
    return Calorimeter(
        name=name,
        id=c.integer("id", minimum=0, maximum=255),
        kind=kind,
        z=c.quantity("z", "length"),
        nx=int(cells[0]) if kind != "paddles" else int(cells[0]),
        ny=int(cells[1]),
        n_sections=n_sections,
        section_names=names,
        section_depths=depths,
        cell_size=(float(cell[0]), float(cell[1])),
        size=(float(size[0]), float(size[1])),
        hole=hole,
        offset_y=c.quantity("offset_y", "length", 0.0),
        mip_mpv=c.quantity("mip_mpv", "energy", minimum=0.0),
        mip_width=c.quantity("mip_width", "energy", minimum=0.0),
        x0_fraction=c.number("x0_fraction", 0.0, minimum=0.0),
        nominal_gain=c.quantity("nominal_gain", "energy", minimum=0.0),
        params=params,
        deflected_magnet=deflected,
        edge_momentum=edge,
    )


def _place_on_reference(setup: Setup) -> Setup:
    """Centre every detector on the reference trajectory, counters beside the beam at their
    deflection edge (returns a new Setup)."""
    planes = []
    for p in setup.planes:
        x, y = setup.reference_position(p.z)
        planes.append(replace(p, center=float(x if p.measures == "x" else y)))
    calos = {}
    for name, c in setup.calorimeters.items():
        x, y = setup.reference_position(c.z)
        center = [float(x), float(y)]
        if c.deflected_magnet:
            m = setup.magnets[c.deflected_magnet]
            axis = 0 if m.bend_plane == "x" else 1
            edge = float(deflection_offset(m, c.edge_momentum, c.z))
            # the counter extends from the edge away from the beam
            center[axis] += edge + np.sign(edge) * c.size[axis] / 2
        calos[name] = replace(c, center=(center[0], center[1]))
    return replace(setup, planes=tuple(planes), calorimeters=calos)


def _cache_clear() -> None:
    _load_period.cache_clear()
    _periods.cache_clear()


load_setup.cache_clear = _cache_clear  # type: ignore[attr-defined]  (tests edit setup files)
