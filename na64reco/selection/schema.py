"""Selections as data: the YAML schema and its validating loader.

A selection file (``selections/<name>.yaml``) describes one analysis::

    schema_version: 1
    name: na64mu_invisible
    setup: na64mu
    cuts:                       # ordered; the cut-flow follows this order
      - {name: trigger, type: bits, variable: trigger, bits: [physics]}
      - {name: single_track_in, type: equal, variable: n_tracks_in, value: 1}
      - {name: p_in_window, type: range, variable: p_in, min: 140 GeV, max: 180 GeV}
      - {name: hcal_mip, type: each_in_range, variable: hcal_module_energy,
         min: 0.5 GeV, max: 6 GeV}
    signal_box: {variable: p_out, max: 80 GeV}
    sidebands:
      - {name: p_out_80_120, variable: p_out, min: 80 GeV, max: 120 GeV}
      - {name: veto_failed, fails: no_veto, variable: p_out, max: 80 GeV}

Cut types:

``range``          ``min <= x < max`` (either bound may be omitted), quantities with units
``equal``          ``x == value`` for integer variables (track multiplicities)
``bits``           every named trigger bit set (names of :data:`na64reco.io.raw.TRIGGER_BITS`)
``each_in_range``  every element of a per-module variable in ``[min, max)``; optional
                   ``modules: [i, ...]`` restricts the check to those modules

Bounds are given with units (``"2 GeV"``, ``"0.6 MeV"``; bare numbers only for
dimensionless variables such as chi2) and stored in the reco record's unit (GeV).
NaN (not reconstructed) fails every cut.

The signal box is a range on one variable, applied after *all* cuts.  A sideband is a
range on one variable after all cuts, or, with ``fails: <cut>``, after all cuts but
that one, which the event must fail by a measured value (a NaN is not in it).  A sideband must
lie outside the blinded region (``selections/blinding.yaml``) and the signal box: on data their
events are withheld, so a sideband reaching into them would count short of the simulation
without a sign (refused when a processor takes the selection,
:func:`na64reco.selection.blinding.check_sidebands`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from na64reco.config import Node, load_yaml_hashed
from na64reco.errors import ConfigError
from na64reco.io.raw import TRIGGER_BITS
from na64reco.resources import selections_dir
from na64reco.units import GeV

SCHEMA_VERSION = 1
SETUPS = ("na64mu", "na64e")
CUT_TYPES = ("range", "equal", "bits", "each_in_range")

#: Reco record fields a cut may use: name -> (kind, dimension).  ``kind`` is
#: ``scalar`` (float, GeV for energies/momenta), ``count`` (integer), ``bits`` (mask)
#: or ``modules`` (fixed number of values per event).
VARIABLES: dict[str, tuple[str, str]] = {
    "trigger": ("bits", "dimensionless"),
    "n_tracks_in": ("count", "dimensionless"),
    "n_tracks_out": ("count", "dimensionless"),
    "n_extra_planes_in": ("count", "dimensionless"),
    "n_extra_planes_out": ("count", "dimensionless"),
    "n_views_in": ("count", "dimensionless"),
    "n_views_out": ("count", "dimensionless"),
    "p_in": ("scalar", "energy"),
    "p_out": ("scalar", "energy"),
    "chi2_in": ("scalar", "dimensionless"),
    "chi2_out": ("scalar", "dimensionless"),
    "track_match_chi2": ("scalar", "dimensionless"),
    "ecal_energy": ("scalar", "energy"),
    "ecal_preshower_energy": ("scalar", "energy"),
    "ecal_main_energy": ("scalar", "energy"),
    "ecal_max_cell_x": ("count", "dimensionless"),
    "ecal_max_cell_y": ("count", "dimensionless"),
    "ecal_shower_chi2": ("scalar", "dimensionless"),
    "hcal_energy": ("scalar", "energy"),
    "hcal_module_energy": ("modules", "energy"),
    "vhcal_energy": ("scalar", "energy"),
    "veto_energy": ("scalar", "energy"),
    "veto_paddle_energy": ("modules", "energy"),
    "srd_module_energy": ("modules", "energy"),
}
#: Scalar variables that are never negative (measured, or NaN when not): a range with ``max <= 0``
#: on one of them, or on a count, keeps no event (energies are not here: noise makes them negative)
NON_NEGATIVE = frozenset({"p_in", "p_out", "chi2_in", "chi2_out", "track_match_chi2", "ecal_shower_chi2"})
_COUNTER = re.compile(r"^counter_([A-Za-z0-9]+)_energy$")
#: Counters of each setup (``counter_<NAME>_energy`` fields of the reco record).
COUNTERS = {"na64mu": ("S0", "S1", "V1", "S4", "Smu"), "na64e": ("S0", "S1", "V1")}
#: Variables that exist only in one setup.
SETUP_ONLY = {"srd_module_energy": "na64e", "track_match_chi2": "na64mu"}


def variable_info(name: str, setup: str) -> tuple[str, str] | None:
    """``(kind, dimension)`` of a reco variable in ``setup``, or None if unknown."""
    m = _COUNTER.match(name)
    if m:
        return ("scalar", "energy") if m.group(1) in COUNTERS[setup] else None
    if SETUP_ONLY.get(name, setup) != setup:
        return None
    return VARIABLES.get(name)


def known_variables(setup: str) -> list[str]:
    names = [v for v in VARIABLES if SETUP_ONLY.get(v, setup) == setup]
    return names + [f"counter_{c}_energy" for c in COUNTERS[setup]]


@dataclass(frozen=True)
class Cut:
    """One named cut on one reco variable.  Bounds are in the record's unit (GeV)."""

    name: str
    type: str
    variable: str
    min: float | None = None
    max: float | None = None
    value: int | None = None
    bits: int = 0
    modules: tuple[int, ...] | None = None
    text: str = ""  # human-readable form, e.g. "140 GeV <= p_in < 180 GeV"


@dataclass(frozen=True)
class Region:
    """Signal box or sideband: a range on ``variable`` after all cuts (but ``fails``)."""

    name: str
    variable: str
    min: float | None
    max: float | None
    fails: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Selection:
    """A validated selection: ordered cuts, the signal box and sidebands."""

    name: str
    setup: str
    cuts: tuple[Cut, ...]
    signal_box: Region
    sidebands: tuple[Region, ...]
    source: str
    sha256: str
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def cut_names(self) -> list[str]:
        return [c.name for c in self.cuts]

    @property
    def variables(self) -> list[str]:
        """Every variable used by a cut, the box or a sideband (in order, unique)."""
        seen = [c.variable for c in self.cuts] + [self.signal_box.variable]
        seen += [s.variable for s in self.sidebands]
        return list(dict.fromkeys(seen))

    def cut(self, name: str) -> Cut:
        for c in self.cuts:
            if c.name == name:
                return c
        raise KeyError(name)


# ----------------------------------------------------------------------------------------
def selection_path(name_or_path: str | Path) -> Path:
    """A path as given, or ``selections/<name>.yaml`` for a bare name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return selections_dir() / f"{name_or_path}.yaml"


def load_selection(name_or_path: str | Path) -> Selection:
    """Read and validate a selection file; raise :class:`ConfigError` naming file and key."""
    path = selection_path(name_or_path)
    node, digest = load_yaml_hashed(path, schema_version=SCHEMA_VERSION)  # one read: the digest is of what was parsed
    _check_keys(node, "", {"schema_version", "name", "setup", "description", "cuts",
                           "signal_box", "sidebands"})
    setup = node.string("setup", choices=SETUPS)
    name = node.string("name")
    cuts = []
    for c in node.nodes("cuts"):
        cuts.append(_parse_cut(c, setup))
    if not cuts:
        raise node.error("cuts", "needs at least one cut")
    names = [c.name for c in cuts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise node.error("cuts", f"duplicate cut name(s): {', '.join(dup)}")
    if "signal_box" in names:
        raise node.error("cuts", "the name 'signal_box' is reserved for the signal box")
    box = _parse_region(node.node("signal_box"), setup, "signal_box", names, allow_fails=False)
    sidebands = tuple(_parse_region(s, setup, s.string("name"), names, allow_fails=True)
                      for s in (node.nodes("sidebands") if node.has("sidebands") else []))
    sb_names = [s.name for s in sidebands]
    if len(set(sb_names)) != len(sb_names) or "signal_box" in sb_names:
        raise node.error("sidebands", f"sideband names must be unique and not 'signal_box': {sb_names}")
    return Selection(name, setup, tuple(cuts), box, sidebands, str(path), digest,
                     node.string("description", ""))


def _check_keys(node: Node, where: str, allowed: set[str]) -> None:
    node.check_keys(allowed)


def _variable(node: Node, setup: str) -> tuple[str, tuple[str, str]]:
    var = node.string("variable")
    info = variable_info(var, setup)
    if info is None:
        raise node.error("variable", f"unknown variable {var!r} for setup {setup}; allowed: "
                         f"{', '.join(known_variables(setup))}")
    return var, info


def _bound(node: Node, key: str, dimension: str) -> float | None:
    if not node.has(key):
        return None
    raw = node.raw(key)
    if dimension == "dimensionless":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise node.error(key, f"expected a finite plain number (the variable is dimensionless), found {raw!r}"
                             " (leave the key out for no bound)")
        return float(raw)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raise node.error(key, f"{raw!r} has no unit: write it as a quantity such as '{raw} GeV' "
                         f"({dimension})")
    q = node.quantity(key, dimension)
    if not math.isfinite(q):
        raise node.error(key, f"expected a finite value, found {raw!r} (leave the key out for no bound)")
    return q / GeV  # the reco record is in GeV


def _bounds(node: Node, var: str, kind: str, dim: str, what: str) -> tuple[float | None, float | None]:
    """``(min, max)`` of a range cut or region (units checked, at least one given, min below max,
    a range that can hold a value)."""
    lo, hi = _bound(node, "min", dim), _bound(node, "max", dim)
    if lo is None and hi is None:
        raise node.error("min", f"{what} needs 'min', 'max' or both")
    if lo is not None and hi is not None and lo >= hi:
        raise node.error("max", f"max ({hi:g}) must be above min ({lo:g})")
    _check_not_empty(node, var, kind, hi, dim)
    return lo, hi


def _check_not_empty(node: Node, var: str, kind: str, hi, dimension) -> None:
    """A range ``min <= var < max`` that no value of a never-negative variable can be in is an error."""
    if hi is not None and hi <= 0 and (kind == "count" or var in NON_NEGATIVE):
        unit = " GeV" if dimension == "energy" else ""
        raise node.error("max", f"{var} is never negative: max {hi:g}{unit} keeps no event (a range keeps "
                         f"min <= {var} < max)")


def _range_text(var, lo, hi, dimension) -> str:
    unit = " GeV" if dimension == "energy" else ""
    parts = []
    if lo is not None:
        parts.append(f"{lo:g}{unit} <=")
    parts.append(var)
    if hi is not None:
        parts.append(f"< {hi:g}{unit}")
    return " ".join(parts)


def _parse_cut(c: Node, setup: str) -> Cut:
    name = c.string("name")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise c.error("name", f"{name!r} is not a valid cut name (letters, digits, underscore)")
    ctype = c.string("type", choices=CUT_TYPES)
    var, (kind, dim) = _variable(c, setup)
    common = {"name", "type", "variable", "description"}
    allowed_kinds = {"range": ("scalar", "count"), "equal": ("count",), "bits": ("bits",),
                     "each_in_range": ("modules",)}[ctype]
    if kind not in allowed_kinds:
        raise c.error("variable", f"{var!r} is a {kind} variable; a {ctype!r} cut needs a "
                      f"{' or '.join(allowed_kinds)} variable")
    if ctype == "equal":
        _check_keys(c, "", common | {"value"})
        value = c.integer("value", minimum=0)
        return Cut(name, ctype, var, value=value, text=f"{var} == {value}")
    if ctype == "bits":
        _check_keys(c, "", common | {"bits"})
        bits = c.raw("bits")
        if not isinstance(bits, list) or not bits or any(b not in TRIGGER_BITS for b in bits):
            raise c.error("bits", f"{bits!r}: expected a list of trigger bit names from "
                          f"{', '.join(TRIGGER_BITS)}")
        mask = 0
        for b in bits:
            mask |= TRIGGER_BITS[b]
        return Cut(name, ctype, var, bits=mask, text=f"{var} has {'+'.join(bits)}")
    _check_keys(c, "", common | {"min", "max"} | ({"modules"} if ctype == "each_in_range" else set()))
    lo, hi = _bounds(c, var, kind, dim, "a range cut")
    modules = None
    if ctype == "each_in_range" and c.has("modules"):
        mods = c.raw("modules")
        # (a bool is an int to Python, and numpy would take [True] as a mask)
        if not isinstance(mods, list) or not mods or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in mods):
            raise c.error("modules", f"{mods!r}: expected a list of module indices (0, 1, ...)")
        modules = tuple(mods)
    text = _range_text(var if ctype == "range" else f"each {var}", lo, hi, dim)
    return Cut(name, ctype, var, min=lo, max=hi, modules=modules, text=text)


def check_modules(selection: Selection, widths: dict[str, int]) -> None:
    """A ConfigError naming the selection file and the cut if a cut's ``modules`` index a module the
    variable does not have (``widths``: :func:`na64reco.reco.calo.module_widths` of the setup): found
    when the selection is taken, not at the first chunk after its reconstruction."""
    for c in selection.cuts:
        n = widths.get(c.variable)
        if c.modules is not None and n is not None and max(c.modules) >= n:
            raise ConfigError(f"{selection.source}: cut {c.name!r}: modules {list(c.modules)}: {c.variable} has "
                              f"{n} module{'s' if n != 1 else ''} in setup {selection.setup} (0..{n - 1})")


def _parse_region(r: Node, setup: str, name: str, cut_names: list[str], *, allow_fails: bool) -> Region:
    allowed = {"variable", "min", "max", "description"} | ({"name", "fails"} if allow_fails else set())
    _check_keys(r, "", allowed)
    var, (kind, dim) = _variable(r, setup)
    if kind not in ("scalar", "count"):
        raise r.error("variable", f"{var!r} is a {kind} variable; a region needs a scalar variable")
    lo, hi = _bounds(r, var, kind, dim, "a region")
    fails = None
    if allow_fails and r.has("fails"):
        fails = r.string("fails", choices=cut_names)
    text = _range_text(var, lo, hi, dim) + (f", failing {fails}" if fails else "")
    return Region(name, var, lo, hi, fails, text)


def parse_region(node: Node, setup: str, name: str) -> Region:
    """A plain region (variable with min and/or max, units checked) from a YAML mapping."""
    return _parse_region(node, setup, name, [], allow_fails=False)
