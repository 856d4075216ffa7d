"""Tracking parameters (``tracking.yaml`` next to this module) as validated data.

The YAML holds reconstruction choices (thresholds, cuts, search windows) per setup, with
optional overrides of the defaults per run period (``setups.<setup>.periods.<period>``);
detector facts (planes, magnets, resolutions) come from the :class:`~na64reco.geometry.Setup`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from na64reco.config import Node, load_yaml
from na64reco.geometry import Setup

SCHEMA_VERSION = 1
CONFIG_PATH = Path(__file__).with_name("tracking.yaml")


@dataclass(frozen=True)
class StationConfig:
    magnet: str
    role: str  # "in" (p_in) or "out" (p_out)
    p_min: float  # MeV
    p_max: float  # MeV
    slope_window: float  # rad
    momentum_prior: float  # relative width of the ranking prior around the beam momentum (0: none)


@dataclass(frozen=True)
class TrackingConfig:
    apv_threshold_sigma: float
    max_missing_planes: int
    chi2_ndf_max: float
    slope_window: float  # rad (default; stations may override)
    slope_prior: float  # rad
    vertex_chi2_max: float  # outgoing candidates: (residual at the target / its sigma)^2 allowed
    vertex_rank_weight: float  # weight of that vertex chi2 in the ranking score
    anchor_max_missing: int  # the incoming track anchors the vertex only with at most this many missing planes
    max_hits_per_plane: int
    max_candidates: int
    drift_t0: float  # ns
    hit_time_sigma: float  # hits further than this many time resolutions from the track's time are not used (0: off)
    use_mm_singles: bool  # False: unresolved MM singles (multiplexing ghosts) are not used
    # a view track whose APV hit times have a chi2 about their weighted mean with a probability
    # below this is dropped (stage.time_consistent; 0: off)
    track_time_prob_min: float
    track_time_outliers: int  # 0 or 1: hits allowed off the common time (pulses summed with another)
    track_time_roles: tuple[str, ...]  # station roles ("in", "out") whose view tracks are checked
    stations: tuple[StationConfig, ...]
    # per view ("<station> <coord>", e.g. "MS2 y"): its own max_missing_planes (else the default)
    view_max_missing_planes: tuple[tuple[str, int], ...] = ()
    required_planes: tuple[str, ...] = ()  # planes every candidate of their view must have a hit on

    def max_missing_of(self, station: str, coord: str) -> int:
        """Planes a candidate of the ``station``'s ``coord`` view may miss."""
        return dict(self.view_max_missing_planes).get(f"{station} {coord}", self.max_missing_planes)

    def station(self, role: str) -> StationConfig | None:
        for s in self.stations:
            if s.role == role:
                return s
        return None


def _parse(node: Node, setup: Setup) -> TrackingConfig:
    d = node.node("defaults")
    setups = node.node("setups")
    if not setups.has(setup.name):
        raise setups.error(setup.name, f"no tracking parameters for setup {setup.name!r} "
                                       f"(have: {', '.join(setups.data)})")
    s = setups.node(setup.name)
    if s.has("periods") and s.node("periods").has(setup.period):
        # a run period's reconstruction choices replace the defaults key by key
        over = s.node("periods").node(setup.period)
        unknown = sorted(set(over.data) - set(d.data))
        if unknown:
            raise over.error(unknown[0], f"not a tracking default (have: {', '.join(d.data)})")
        d = Node({**d.data, **over.data}, d.source, d.path)
    stations = []
    for name, st in s.node("stations").items():
        if name not in setup.magnets:
            raise st.error("", f"station {name!r} is not a magnet of setup {setup.name} "
                               f"({', '.join(setup.magnets)})")
        p_min = st.quantity("p_min", "energy", minimum=0.0)
        p_max = st.quantity("p_max", "energy", minimum=0.0)
        if not p_min < p_max:
            raise st.error("p_min", f"p_min ({p_min} MeV) must be below p_max ({p_max} MeV)")
        window = st.quantity("slope_window", "angle", d.quantity("slope_window", "angle"), minimum=0.0)
        prior = st.number("momentum_prior", 0.0, minimum=0.0)
        stations.append(StationConfig(name, st.string("role", choices=("in", "out")), p_min, p_max, window, prior))
    roles = [st.role for st in stations]
    if len(set(roles)) != len(roles) or "in" not in roles:
        raise s.error("stations", f"need exactly one 'in' station and at most one 'out', found roles {roles}")
    return TrackingConfig(
        apv_threshold_sigma=d.number("apv_threshold_sigma", minimum=0.0),
        max_missing_planes=d.integer("max_missing_planes", minimum=0, maximum=2),
        chi2_ndf_max=d.number("chi2_ndf_max", minimum=0.0),
        slope_window=d.quantity("slope_window", "angle", minimum=0.0),
        slope_prior=d.quantity("slope_prior", "angle", minimum=1e-9),
        vertex_chi2_max=d.number("vertex_chi2_max", minimum=0.0),
        vertex_rank_weight=d.number("vertex_rank_weight", minimum=0.0),
        anchor_max_missing=d.integer("anchor_max_missing", minimum=0, maximum=2),
        max_hits_per_plane=d.integer("max_hits_per_plane", minimum=1, maximum=256),
        max_candidates=d.integer("max_candidates", minimum=1),
        drift_t0=d.quantity("drift_t0", "time"),
        hit_time_sigma=d.number("hit_time_sigma", 0.0, minimum=0.0),
        use_mm_singles=_flag(d, "use_mm_singles", True),
        track_time_prob_min=d.number("track_time_prob_min", 0.0, minimum=0.0, maximum=1.0),
        track_time_outliers=d.integer("track_time_outliers", 1, minimum=0, maximum=1),
        track_time_roles=_roles(d, "track_time_roles", ("out",)),
        stations=tuple(stations),
        view_max_missing_planes=_view_missing(d, setup, stations),
        required_planes=_plane_names(d, "required_planes", setup, stations),
    )


def _view_missing(node: Node, setup: Setup, stations) -> tuple[tuple[str, int], ...]:
    """``view_max_missing_planes``: a mapping "<station> <x|y>" -> 0..2 (stations tracked here)."""
    value = node.raw("view_max_missing_planes", {})
    if not isinstance(value, dict):
        raise node.error("view_max_missing_planes", f"expected a mapping like {{'MS2 y': 1}}, found {value!r}")
    names = {st.magnet for st in stations}
    out = []
    for key, n in value.items():
        parts = str(key).split()
        if len(parts) != 2 or parts[0] not in names or parts[1] not in ("x", "y"):
            raise node.error("view_max_missing_planes", f"key {key!r} is not '<station> <x|y>' with a station of "
                                                        f"{setup.name} ({', '.join(sorted(names))})")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 2:
            raise node.error("view_max_missing_planes", f"{key!r}: expected an integer 0..2, found {n!r}")
        out.append((f"{parts[0]} {parts[1]}", n))
    return tuple(sorted(out))


def _plane_names(node: Node, key: str, setup: Setup, stations) -> tuple[str, ...]:
    """A list of tracker plane names of the tracked stations."""
    value = node.raw(key, [])
    if not isinstance(value, list):
        raise node.error(key, f"expected a list of tracker plane names, found {value!r}")
    tracked = {p.name for st in stations for p in setup.planes_of(st.magnet)}
    for name in value:
        if name not in tracked:
            raise node.error(key, f"{name!r} is not a tracker plane of a tracked station of {setup.name} "
                                  f"(have: {', '.join(sorted(tracked))})")
    return tuple(value)


def _roles(node: Node, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = node.raw(key, list(default))
    if not isinstance(value, list) or not set(value) <= {"in", "out"}:
        raise node.error(key, f"expected a list of station roles (in, out), found {value!r}")
    return tuple(value)


def _flag(node: Node, key: str, default: bool) -> bool:
    value = node.raw(key, default)
    if not isinstance(value, bool):
        raise node.error(key, f"expected true or false, found {value!r}")
    return value


@functools.lru_cache(maxsize=8)
def _read(path: str) -> Node:
    return load_yaml(path, schema_version=SCHEMA_VERSION)


def load_tracking_config(setup: Setup, path: str | Path | None = None) -> TrackingConfig:
    """Tracking parameters for ``setup`` (from ``tracking.yaml`` unless ``path`` is given)."""
    return _parse(_read(str(path or CONFIG_PATH)), setup)
