"""Per-channel conditions (calibration) with intervals of validity, grouped by tags.

Layout under ``calib/``::

    conditions/<setup>/<payload>/v<NNN>.yaml   one version of one payload for a run range
    tags/<tag>.yaml                             a consistent set: payload -> list of files

Payloads:

``calorimeter``
    per detector and channel: ``pedestal_even``, ``pedestal_odd`` (ADC), ``noise_adc``,
    ``gain_mev_per_adc`` (MeV per ADC count), ``time_offset_ns``, ``status``
    (0 good, 1 dead, 2 noisy).  Optional (``schema_version`` 2) per detector, the
    shower response of its sections: ``response_energy_gev`` (increasing energies E_k of
    the uncorrected sum over the detector) and ``response_scale`` (one list per E_k with
    one scale per section).  The reconstruction multiplies each section by its scale
    interpolated linearly in 1/E of the event's uncorrected energy E (constant outside
    the table); absent = 1 (no correction).  Written by the electron-beam calibration
    (:mod:`na64reco.calibration.electron`).
``tracker``
    per plane: ``alignment_mm`` (offset of the plane along its measured coordinate),
    ``dead_strips`` (list of strip numbers).  Optional (``schema_version`` 3) per plane:
    ``efficiency`` (probability that a crossing gives a hit), ``noise_hits`` (mean noise
    clusters per event), ``hot_strips`` (strips that fire in many events), ``time_offset_ns`` and
    ``time_resolution_ns`` (reconstructed hit time of an in-time track and its resolution: the
    track search's hit-time window); and per magnet
    (``magnets``): ``field_integral_tm`` (effective field integral at the nominal setting,
    tesla metre).  Absent = the setup's value (``efficiency``, ``noise_hits``, ``time_offset``,
    ``time_resolution``, ``field_integral``) or none (``hot_strips``).  Written by the tracker calibrations
    (:mod:`na64reco.calibration.alignment`, :mod:`~na64reco.calibration.momentum_scale`,
    :mod:`~na64reco.calibration.plane_efficiency`).

A new calibration is always written as a new version file (never an edit of an old
one) and published by a new tag.  For a run, each payload resolves to the file with
the highest version among the tag's files whose run range contains the run; a run
outside every range raises :class:`~na64reco.errors.CalibrationMissing` naming the
run and the covered ranges.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import jsonschema
import numpy as np
import yaml
from hepunits import GeV, tesla
from hepunits import m as metre

from na64reco import as_loaded, constants
from na64reco.atomic import write_new_file
from na64reco.config import PLAIN_NAME_RULE, Node, is_plain_name, load_yaml
from na64reco.errors import CalibrationMissing, ConfigError
from na64reco.geometry import Setup, load_setup
from na64reco.resources import calib_dir

SCHEMA_VERSION = 1  # tags
#: payload files: version 2 adds the optional response fields, version 3 the optional tracker
#: fields (plane efficiency, noise, hot strips; magnet field integrals); older files stay valid
PAYLOAD_SCHEMA_VERSION = 3
PAYLOAD_SCHEMA_VERSIONS = (1, 2, 3)
RESPONSE_FIELDS = ("response_energy_gev", "response_scale")
TRACKER_OPTIONAL = ("efficiency", "noise_hits", "hot_strips", "time_offset_ns", "time_resolution_ns")
PAYLOADS = ("calorimeter", "tracker")
CALO_FIELDS = ("pedestal_even", "pedestal_odd", "noise_adc", "gain_mev_per_adc", "time_offset_ns", "status")
STATUS_GOOD, STATUS_DEAD, STATUS_NOISY = 0, 1, 2

_NUMBERS = {"type": "array", "items": {"type": "number"}}
PAYLOAD_SCHEMA = {
    "type": "object",
    "required": ["schema_version", "setup", "payload", "version", "runs"],
    "properties": {
        "schema_version": {"enum": list(PAYLOAD_SCHEMA_VERSIONS)},
        "setup": {"type": "string"},
        "payload": {"enum": list(PAYLOADS)},
        "version": {"type": "integer", "minimum": 1},
        "runs": {
            "type": "object",
            "required": ["first", "last"],
            "properties": {"first": {"type": "integer", "minimum": 0}, "last": {"type": "integer", "minimum": 0}},
            "additionalProperties": False,
        },
        "created": {"type": "string"},
        "comment": {"type": "string"},
        "derived_from": {"type": "string"},
        "detectors": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": list(CALO_FIELDS),
                "properties": {**{f: _NUMBERS for f in CALO_FIELDS},
                               "noise_adc": {"type": "array", "items": {"type": "number", "minimum": 0}},
                               "status": {"type": "array",
                                          "items": {"enum": [STATUS_GOOD, STATUS_DEAD, STATUS_NOISY]}},
                               "response_energy_gev": {"type": "array", "items": {"type": "number", "minimum": 0},
                                                       "minItems": 1},
                               "response_scale": {"type": "array", "items": _NUMBERS, "minItems": 1}},
                "dependentRequired": {"response_energy_gev": ["response_scale"],
                                      "response_scale": ["response_energy_gev"]},
                "additionalProperties": False,
            },
        },
        "planes": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["alignment_mm", "dead_strips"],
                "properties": {
                    "alignment_mm": {"type": "number"},
                    "dead_strips": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "efficiency": {"type": "number", "minimum": 0, "maximum": 1},
                    "noise_hits": {"type": "number", "minimum": 0},
                    "hot_strips": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "time_offset_ns": {"type": "number"},
                    "time_resolution_ns": {"type": "number", "minimum": 0},
                },
                "additionalProperties": False,
            },
        },
        "magnets": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["field_integral_tm"],
                "properties": {"field_integral_tm": {"type": "number", "exclusiveMinimum": 0}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
TAG_SCHEMA = {
    "type": "object",
    "required": ["schema_version", "tag", "setup", "payloads"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tag": {"type": "string"},
        "setup": {"type": "string"},
        "description": {"type": "string"},
        "payloads": {
            "type": "object",
            "required": list(PAYLOADS),
            "properties": {p: {"type": "array", "items": {"type": "string"}, "minItems": 1} for p in PAYLOADS},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


DEFAULT_TAGS_FILE = "default_tags.yaml"


def default_tag(setup: str, root: Path | None = None) -> str:
    """The tag used when none is given.

    ``calib/default_tags.yaml`` names it per setup (the pointer moves when a new
    calibration is published; tags themselves never change); without an entry it is
    ``<setup>-default``.
    """
    path = (root or calib_dir()) / DEFAULT_TAGS_FILE
    if not path.is_file():
        return f"{setup}-default"
    node = load_yaml(path, schema_version=SCHEMA_VERSION)
    return node.node("defaults").string(setup, f"{setup}-default")


@dataclass(frozen=True)
class CaloConditions:
    """Arrays over the channels of one MSADC detector (gain in MeV per ADC count).

    ``response_energy`` (n_points,) in MeV and ``response_scale`` (n_points, n_sections):
    the section response table (empty: no correction), see the module docstring.
    """

    pedestal_even: np.ndarray
    pedestal_odd: np.ndarray
    noise_adc: np.ndarray
    gain: np.ndarray
    time_offset: np.ndarray
    status: np.ndarray
    response_energy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    response_scale: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))


@dataclass(frozen=True)
class PlaneConditions:
    alignment: float  # mm
    dead_strips: np.ndarray
    efficiency: float | None = None  # None: the setup's value
    noise_hits: float | None = None  # mean noise clusters per event; None: the setup's value
    hot_strips: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    time_offset: float | None = None  # ns: reconstructed hit time of an in-time track; None: the setup's
    time_resolution: float | None = None  # ns; None: the setup's


class WithheldConditions(RuntimeError):
    """A reconstruction stage read conditions of a payload it was not given
    (:meth:`RunConditions.scoped`): a bug in the stage, never an input error."""


class _Withheld(Mapping):
    """Stands for the conditions of a payload a stage may not read: every use raises."""

    def __init__(self, reader: str, payload: str, tag: str, run: int):
        self._text = (f"the {reader} stage read {payload} conditions (tag {tag!r}, run {run}); each "
                      f"reconstruction stage may read only its own payload (RunConditions.scoped)")

    def _refuse(self, *args):
        raise WithheldConditions(self._text)

    __getitem__ = __iter__ = __len__ = __contains__ = __bool__ = get = keys = items = values = _refuse


@dataclass(frozen=True)
class RunConditions:
    """Everything the reconstruction needs for one run."""

    setup: str
    tag: str
    run: int
    files: dict[str, str]  # payload -> file used
    calo: dict[str, CaloConditions]
    planes: dict[str, PlaneConditions]
    field_integrals: dict[str, float] = field(default_factory=dict)  # magnet -> hepunits; absent: setup

    def magnet(self, setup: Setup, name: str):
        """The setup's magnet ``name`` with the field integral of these conditions."""
        m = setup.magnets[name]
        return replace(m, field_integral=self.field_integrals[name]) if name in self.field_integrals else m

    def plane_efficiency(self, plane) -> float:
        """Hit efficiency of a setup :class:`~na64reco.geometry.TrackerPlane` (conditions, else setup)."""
        e = self.planes[plane.name].efficiency
        return plane.efficiency if e is None else e

    def plane_noise_hits(self, plane) -> float:
        n = self.planes[plane.name].noise_hits
        return plane.noise_hits if n is None else n

    def plane_time(self, plane) -> tuple[float, float]:
        """(time offset, time resolution) in ns of a plane's hits (conditions, else setup)."""
        c = self.planes[plane.name]
        return (plane.time_offset if c.time_offset is None else c.time_offset,
                plane.time_resolution if c.time_resolution is None else c.time_resolution)

    def scoped(self, payload: str) -> RunConditions:
        """These conditions with only ``payload``'s parts readable: the other payload's
        mappings (``calo`` for the tracker, ``planes`` and ``field_integrals`` for the
        calorimeter) raise :class:`WithheldConditions` on any use, and ``files`` names the
        payload's file only.  :func:`na64reco.reco.event.reconstruct` runs each stage with
        its payload's view, so a stage's output is a function of the events, the setup and
        that payload alone (what the blinding's reference reconstruction relies on to reuse
        a stage, :func:`na64reco.selection.blinding.reference_protected`).  Made once per
        object and payload."""
        if payload not in PAYLOADS:
            raise ValueError(f"unknown conditions payload {payload!r}; expected one of {', '.join(PAYLOADS)}")
        views = self.__dict__.setdefault("_na64reco_scoped", {})
        if payload not in views:
            other = next(p for p in PAYLOADS if p != payload)
            hidden = _Withheld(payload, other, self.tag, self.run)
            views[payload] = replace(
                self, files={k: v for k, v in self.files.items() if k == payload},
                calo=self.calo if payload == "calorimeter" else hidden,
                planes=self.planes if payload == "tracker" else hidden,
                field_integrals=self.field_integrals if payload == "tracker" else hidden)
            if as_loaded.unchanged(self):  # a view of conditions as read is as read (it shares their parts)
                as_loaded.remember(views[payload])
        return views[payload]

    def calo_table(self, setup: Setup, field: str) -> np.ndarray:
        """Dense (256, max_channels) table of ``field`` indexed by [detector id, channel].

        Unused entries are NaN, so a digit of an unknown channel cannot pass silently.
        """
        width = max(d.n_channels for d in setup.calorimeters.values())
        table = np.full((256, width), np.nan)
        for name, det in setup.calorimeters.items():
            table[det.id, : det.n_channels] = getattr(self.calo[name], field)
        return table


# ----------------------------------------------------------------------------------------
def _validate(data, schema, source: str) -> None:
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        key = ".".join(map(str, exc.absolute_path)) or "<top level>"
        raise ConfigError(f"{source}: key '{key}': {exc.message}") from None


def _read(path: Path, schema, versions=(SCHEMA_VERSION,)) -> Node:
    node = load_yaml(path, schema_version=versions)
    _validate(node.data, schema, str(path))
    return node


@functools.lru_cache(maxsize=64)
def _payload(path: str) -> Node:
    node = _read(Path(path), PAYLOAD_SCHEMA, PAYLOAD_SCHEMA_VERSIONS)
    runs = node.data["runs"]
    if runs["first"] > runs["last"]:
        raise node.error("runs", f"first={runs['first']} is after last={runs['last']}")
    return node


def check_tag_name(tag, what: str = "calibration tag") -> str:
    """``tag`` if it is a plain name (:func:`na64reco.config.is_plain_name`: it becomes the file
    ``tags/<tag>.yaml``), else a :class:`ConfigError` naming ``what`` (the option)."""
    if not is_plain_name(tag):
        raise ConfigError(f"{what} {tag!r}: not a tag name; expected {PLAIN_NAME_RULE} (e.g. na64mu-ped-2024)")
    return tag


def tag_path(tag: str, root: Path | None = None) -> Path:
    """The file of ``tag`` (a name refused by :func:`check_tag_name` never becomes a path)."""
    return (root or calib_dir()) / "tags" / f"{check_tag_name(tag)}.yaml"


def list_tags(root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((root or calib_dir()) / "tags").glob("*.yaml"))


def load_tag(tag: str, root: Path | None = None) -> Node:
    path = tag_path(tag, root)
    if not path.is_file():
        raise ConfigError(f"unknown calibration tag {tag!r} ({path} not found); known tags: "
                          f"{', '.join(list_tags(root)) or 'none'}")
    return _read(path, TAG_SCHEMA)


def resolve(tag: str, run: int, root: Path | None = None) -> dict[str, Path]:
    """Payload -> conditions file valid for ``run`` in ``tag`` (highest version wins)."""
    root = root or calib_dir()
    t = load_tag(tag, root)
    chosen = {}
    for payload in PAYLOADS:
        candidates, ranges = [], []
        for rel in t.data["payloads"][payload]:
            path = root / "conditions" / rel
            node = _payload(str(path))
            if node.data["setup"] != t.data["setup"] or node.data["payload"] != payload:
                raise ConfigError(f"{path}: is a {node.data['setup']}/{node.data['payload']} payload, "
                                  f"but tag {tag!r} lists it as {t.data['setup']}/{payload}")
            first, last = node.data["runs"]["first"], node.data["runs"]["last"]
            ranges.append(f"{first}-{last}")
            if first <= run <= last:
                candidates.append((node.data["version"], path))
        if not candidates:
            raise CalibrationMissing(
                f"run {run} has no {payload} conditions in tag {tag!r}: covered run ranges are "
                f"{', '.join(ranges)}"
            )
        best = max(v for v, _ in candidates)
        tied = sorted(str(p) for v, p in candidates if v == best)
        if len(tied) > 1:
            raise ConfigError(f"tag {tag!r}: {payload} files {' and '.join(tied)} both have version {best} and "
                              f"cover run {run}; expected one version per run range (the highest version wins)")
        chosen[payload] = next(p for v, p in candidates if v == best)
    return chosen


def check_one_base(tag: str, first: int, last: int, payloads=PAYLOADS, root: Path | None = None) -> None:
    """Every run of ``first``..``last`` gets the same ``payloads`` conditions files from ``tag``: a
    calibration of a payload over that range starts from (and carries over) one base of it.  Before
    stop 48 the base at FIRST was taken for the whole range: a momentum scale over 800-999 on a tag
    aligned for 900-999 reconstructed run 900 unaligned and published the unaligned planes over it.
    (The other payloads keep their own run ranges in the new tag.)"""
    root = root or calib_dir()
    t = load_tag(tag, root)
    edges = {first, last}
    for payload in payloads:
        for rel in t.data["payloads"][payload]:
            runs = _payload(str(root / "conditions" / rel)).data["runs"]
            edges |= {r for r in (runs["first"], runs["last"] + 1) if first < r <= last}
    runs = sorted(edges)
    chosen = [resolve(tag, r, root) for r in runs]
    for r, files in zip(runs[1:], chosen[1:], strict=True):
        changed = [k for k in payloads if files[k] != chosen[0][k]]
        if changed:
            k = changed[0]
            raise ConfigError(f"--runs {first} {last}: tag {tag!r} gives run {first} the {k} conditions "
                              f"{chosen[0][k].relative_to(root / 'conditions')} and run {r} "
                              f"{files[k].relative_to(root / 'conditions')}; a calibration starts from one base for "
                              f"its whole range: calibrate --runs {first} {r - 1} and --runs {r} {last} apart")


def _check_calo_ranges(node, name: str, det, msadc, arrays: dict) -> None:
    """The calorimeter constants of detector ``name`` inside what the read-out can give: pedestals in
    0..``msadc.max_adc``, noise above 0 and below the ADC range, time offsets within the sampled
    window (``n_samples`` x ``sample_period``), gains within
    :data:`~na64reco.constants.CALO_GAIN_TO_NOMINAL_RANGE` of the detector's ``nominal_gain``."""
    window = msadc.n_samples * msadc.sample_period
    lo_gain, hi_gain = (f * det.nominal_gain for f in constants.CALO_GAIN_TO_NOMINAL_RANGE)
    checks = (
        ("pedestal_even", 0.0, msadc.max_adc, f"pedestals in ADC counts within 0..{msadc.max_adc}"),
        ("pedestal_odd", 0.0, msadc.max_adc, f"pedestals in ADC counts within 0..{msadc.max_adc}"),
        ("noise_adc", np.nextafter(0.0, 1.0), msadc.max_adc, f"noise in ADC counts above 0, below {msadc.max_adc}"),
        ("time_offset_ns", -window, window, f"time offsets within +-{window:g} ns (the sampled window)"),
        ("gain_mev_per_adc", lo_gain, hi_gain,
         f"gains within {lo_gain:g}..{hi_gain:g} MeV per count ({constants.CALO_GAIN_TO_NOMINAL_RANGE[0]:g}-"
         f"{constants.CALO_GAIN_TO_NOMINAL_RANGE[1]:g} x the setup's nominal_gain {det.nominal_gain:g} MeV)"),
    )
    for field_name, lo, hi, expected in checks:
        a = arrays[field_name]
        bad = np.flatnonzero((a < lo) | (a > hi))
        if bad.size:
            k = int(bad[0])
            raise node.error(f"detectors.{name}.{field_name}",
                             f"channel {k} has {a[k]:g}; expected {expected}")


def load_conditions(setup: str | Setup, run: int, tag: str | None = None,
                    root: Path | None = None) -> RunConditions:
    """Conditions of ``run`` for ``setup`` from ``tag`` (default: ``calib/default_tags.yaml``).

    A setup given by name is loaded for the run's period (:func:`~na64reco.geometry.load_setup`).
    """
    if isinstance(setup, str):
        setup = load_setup(setup, run=int(run))
    elif not isinstance(setup, Setup):
        raise TypeError(f"load_conditions(): setup is a {type(setup).__name__}; expected a setup name or a Setup "
                        "(load_setup)")
    root = Path(root) if root else None
    tag = tag or default_tag(setup.name, root)
    t = load_tag(tag, root)
    if t.data["setup"] != setup.name:
        raise ConfigError(f"calibration tag {tag!r} is for setup {t.data['setup']!r}, not {setup.name!r}")
    files = resolve(tag, int(run), root)
    calo_node = _payload(str(files["calorimeter"]))
    calo = {}
    for name, det in setup.calorimeters.items():
        entry = calo_node.data.get("detectors", {}).get(name)
        if entry is None:
            raise calo_node.error("detectors", f"no entry for detector {name!r} of setup {setup.name}")
        arrays = {}
        for f in CALO_FIELDS:
            a = np.asarray(entry[f], dtype=float)
            if a.shape != (det.n_channels,):
                raise calo_node.error(f"detectors.{name}.{f}", f"expected {det.n_channels} values, found {a.size}")
            if not np.all(np.isfinite(a)):
                raise calo_node.error(f"detectors.{name}.{f}", "contains NaN or infinity")
            arrays[f] = a
        if np.any(arrays["gain_mev_per_adc"] <= 0):
            raise calo_node.error(f"detectors.{name}.gain_mev_per_adc", "gains must be positive")
        _check_calo_ranges(calo_node, name, det, setup.msadc, arrays)
        calo[name] = CaloConditions(
            arrays["pedestal_even"], arrays["pedestal_odd"], arrays["noise_adc"],
            arrays["gain_mev_per_adc"], arrays["time_offset_ns"], arrays["status"].astype(np.int8),
            *_response_of(calo_node, name, det, entry),
        )
    trk_node = _payload(str(files["tracker"]))
    planes = {}
    names = {p.name for p in setup.planes}
    for name in trk_node.data.get("planes", {}):
        if name not in names:  # a misspelled plane: its constants would never be used
            known = ", ".join(p.name for p in setup.planes)
            raise trk_node.error(f"planes.{name}", f"not a plane of setup {setup.name} (period "
                                                   f"{setup.period or 'base'}): {known}")
    for p in setup.planes:
        entry = trk_node.data.get("planes", {}).get(p.name)
        if entry is None:
            raise trk_node.error("planes", f"no entry for plane {p.name!r} of setup {setup.name}")
        extra = [f for f in TRACKER_OPTIONAL if f in entry]
        if extra and trk_node.data["schema_version"] < 3:
            raise trk_node.error(f"planes.{p.name}.{extra[0]}", "optional tracker fields need schema_version 3")
        # (jsonschema's number bounds let NaN and infinity through: a NaN alignment or field hides every event)
        for f in ("alignment_mm", *TRACKER_OPTIONAL):
            v = entry.get(f)
            if isinstance(v, float) and not math.isfinite(v):
                raise trk_node.error(f"planes.{p.name}.{f}", f"is {v}; expected a finite number")
        for f in ("hot_strips", "dead_strips"):
            strips = np.asarray(entry.get(f, []), dtype=np.int64)
            if np.any(strips >= p.n_strips):
                raise trk_node.error(f"planes.{p.name}.{f}", f"strips outside 0..{p.n_strips - 1}: {strips.tolist()}")
        hot = np.asarray(entry.get("hot_strips", []), dtype=np.int64)
        planes[p.name] = PlaneConditions(float(entry["alignment_mm"]), np.asarray(entry["dead_strips"], dtype=np.int64),
                                         entry.get("efficiency"), entry.get("noise_hits"), hot,
                                         entry.get("time_offset_ns"), entry.get("time_resolution_ns"))
    fields = {}
    for name, entry in trk_node.data.get("magnets", {}).items():
        if name not in setup.magnets:
            raise trk_node.error(f"magnets.{name}", f"not a magnet of setup {setup.name} ({', '.join(setup.magnets)})")
        if trk_node.data["schema_version"] < 3:
            raise trk_node.error(f"magnets.{name}", "magnet field integrals need schema_version 3")
        if not math.isfinite(float(entry["field_integral_tm"])):
            raise trk_node.error(f"magnets.{name}.field_integral_tm", f"is {entry['field_integral_tm']}; expected a "
                                                                     f"finite field integral (T m)")
        fields[name] = float(entry["field_integral_tm"]) * tesla * metre
    return as_loaded.remember(RunConditions(setup.name, tag, int(run), {k: str(v) for k, v in files.items()}, calo,
                                            planes, fields))


def tracker_content(setup: Setup, cond: RunConditions) -> dict:
    """The ``tracker`` payload body of ``cond`` (every plane and the magnets it sets), to edit
    and publish as a new version (the tracker calibrations start from it)."""
    planes = {}
    for p in setup.planes:
        c = cond.planes[p.name]
        entry = {"alignment_mm": round(float(c.alignment), 5), "dead_strips": [int(s) for s in c.dead_strips]}
        if c.efficiency is not None:
            entry["efficiency"] = round(float(c.efficiency), 5)
        if c.noise_hits is not None:
            entry["noise_hits"] = round(float(c.noise_hits), 5)
        if len(c.hot_strips):
            entry["hot_strips"] = [int(s) for s in c.hot_strips]
        if c.time_offset is not None:
            entry["time_offset_ns"] = round(float(c.time_offset), 3)
        if c.time_resolution is not None:
            entry["time_resolution_ns"] = round(float(c.time_resolution), 3)
        planes[p.name] = entry
    body: dict = {"planes": planes}
    if cond.field_integrals:
        body["magnets"] = {k: {"field_integral_tm": float(f"{v / (tesla * metre):.7g}")}
                           for k, v in cond.field_integrals.items()}
    return body


def _response_of(node: Node, name: str, det, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """(energies in MeV, scales (n_points, n_sections)) of a detector entry; empty if absent."""
    if "response_energy_gev" not in entry:
        return np.zeros(0), np.zeros((0, det.n_sections))
    key = f"detectors.{name}"
    if node.data["schema_version"] < 2:
        raise node.error(f"{key}.response_energy_gev", "response fields need schema_version 2")
    energy = np.asarray(entry["response_energy_gev"], dtype=float)
    rows = entry["response_scale"]
    if len(rows) != len(energy) or any(len(r) != det.n_sections for r in rows):
        raise node.error(f"{key}.response_scale", f"expected {len(energy)} lists (one per response energy) "
                         f"of {det.n_sections} values (one per section: {', '.join(det.section_names)})")
    scale = np.asarray(rows, dtype=float).reshape(len(energy), det.n_sections)
    if not (np.all(np.isfinite(energy)) and np.all(np.diff(energy) > 0)):
        raise node.error(f"{key}.response_energy_gev", "must be finite and strictly increasing")
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise node.error(f"{key}.response_scale", "scales must be finite and positive")
    return energy * GeV, scale


# ----------------------------------------------------------------------------------------
def next_version(setup: str, payload: str, root: Path | None = None) -> int:
    folder = (root or calib_dir()) / "conditions" / setup / payload
    versions = [int(p.stem[1:]) for p in folder.glob("v*.yaml") if p.stem[1:].isdigit()]
    return max(versions, default=0) + 1


def write_payload(setup: str, payload: str, runs: tuple[int, int], content: dict, *,
                  comment: str = "", derived_from: str = "", root: Path | None = None) -> Path:
    """Write ``content`` as a new version of ``payload``; never overwrites. Returns the path."""
    root = root or calib_dir()
    version = next_version(setup, payload, root)
    data = {
        "schema_version": PAYLOAD_SCHEMA_VERSION,
        "setup": setup,
        "payload": payload,
        "version": version,
        "runs": {"first": int(runs[0]), "last": int(runs[1])},
        "created": _dt.date.today().isoformat(),
        "comment": comment,
    }
    if derived_from:
        data["derived_from"] = derived_from
    data.update(content)
    _validate(data, PAYLOAD_SCHEMA, f"new {setup}/{payload} v{version:03d}")
    path = root / "conditions" / setup / payload / f"v{version:03d}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all, and never over an existing file
    write_new_file(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120))
    return path


def write_tag(tag: str, setup: str, payload_files: dict[str, list[str]], description: str = "",
              root: Path | None = None) -> Path:
    """Publish a new tag (fails if the tag exists: tags are immutable)."""
    root = root or calib_dir()
    data = {"schema_version": SCHEMA_VERSION, "tag": tag, "setup": setup,
            "description": description, "payloads": payload_files}
    _validate(data, TAG_SCHEMA, f"new tag {tag}")
    path = tag_path(tag, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise ConfigError(f"tag {tag!r} exists already ({path}); tags are immutable, choose a new name")
    write_new_file(path, yaml.safe_dump(data, sort_keys=False))  # whole, never over an existing file
    return path


def nominal_content(setup: Setup, seed: int) -> dict[str, dict]:
    """Plausible per-channel constants around the setup's nominal read-out settings.

    Used to make the committed ``v001`` conditions and, with another seed, the "true"
    constants of simulated calibration runs.  Returns ``{"calorimeter": ..., "tracker": ...}``.
    """
    rng = np.random.default_rng(seed)
    a = setup.msadc
    dets = {}
    for name, det in setup.calorimeters.items():
        n = det.n_channels
        ped_even = np.round(a.nominal_pedestal + a.pedestal_spread * rng.standard_normal(n), 1)
        ped_odd = np.round(ped_even + a.parity_offset * (1 + 0.3 * rng.standard_normal(n)), 1)
        gain = det.nominal_gain * (1 + a.gain_spread * rng.standard_normal(n)).clip(0.7, 1.3)
        dets[name] = {
            "pedestal_even": ped_even.tolist(),
            "pedestal_odd": ped_odd.tolist(),
            "noise_adc": np.round(a.noise * (1 + 0.1 * rng.standard_normal(n)).clip(0.7, 1.3), 2).tolist(),
            "gain_mev_per_adc": [float(f"{g:.5g}") for g in gain],
            "time_offset_ns": np.round(2.0 * rng.standard_normal(n), 2).tolist(),
            "status": [0] * n,
        }
    planes = {p.name: {"alignment_mm": float(np.round(0.05 * rng.standard_normal(), 4)), "dead_strips": []}
              for p in setup.planes}
    return {"calorimeter": {"detectors": dets}, "tracker": {"planes": planes}}


def publish(setup: str, tag: str, runs: tuple[int, int], content: dict[str, dict], *,
            base_tag: str | None = None, comment: str = "", description: str = "",
            root: Path | None = None) -> Path:
    """Write new versions of the payloads in ``content`` and a new ``tag`` that uses them.

    Payloads not in ``content`` are taken from ``base_tag`` (their file lists unchanged);
    new files are appended to the base tag's lists, so older run ranges stay covered and
    the new version wins inside ``runs``.
    """
    root = root or calib_dir()
    if tag_path(tag, root).exists():  # before any payload is written
        raise ConfigError(f"tag {tag!r} exists already ({tag_path(tag, root)}); tags are immutable, "
                          "choose a new name")
    base = load_tag(base_tag, root).data["payloads"] if base_tag else {}
    files: dict[str, list[str]] = {p: list(base.get(p, [])) for p in PAYLOADS}
    for payload, body in content.items():
        path = write_payload(setup, payload, runs, body, comment=comment,
                             derived_from=base_tag or "", root=root)
        files[payload].append(path.relative_to(root / "conditions").as_posix())
    return write_tag(tag, setup, files, description=description, root=root)
