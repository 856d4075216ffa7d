"""Quantities with units, parsed from configuration text.

Internal units are those of :mod:`hepunits` (mm, ns, MeV, tesla, ...).  Configuration
files write quantities as strings such as ``"160 GeV"``, ``"38.2 mm"``,
``"1.4 tesla*m"`` or ``"12.5 ns"``; :func:`parse_quantity` turns them into floats in
internal units and checks the dimension.  Conversion to output units (GeV for
energies and momenta) happens only at the edges.
"""

from __future__ import annotations

import math
import re

import hepunits

GeV = hepunits.GeV
#: The tracking's working units (``na64reco.reco.tracking``): lever arms in metres, slopes and kicks
#: in mrad, so that an offset in mm is lever arm x slope.  Conversions multiply or divide by these
#: factors (both exactly 1000.0: the same floating-point results as the literal).
MRAD_PER_RAD = hepunits.rad / hepunits.mrad
MM_PER_M = hepunits.m / hepunits.mm

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*(.*?)\s*$")

#: Unit expressions accepted for each dimension a configuration can ask for.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "energy": ("eV", "keV", "MeV", "GeV", "TeV"),
    "length": ("um", "micrometer", "mm", "cm", "m", "km"),
    "time": ("ps", "ns", "us", "microsecond", "ms", "s"),
    "angle": ("rad", "mrad", "urad", "deg"),
    "field_integral": ("tesla*m", "T*m"),
    "field": ("tesla", "T"),
    "dimensionless": ("", "percent", "perCent"),
    "density": ("g/cm3",),
    "length_per_time": ("mm/ns", "um/ns", "cm/us"),
}


def _unit_value(unit: str) -> float:
    """Value of ``unit`` (a name or ``a*b``/``a/b`` product of names) in hepunits."""
    aliases = {"T": "tesla", "um": "micrometer", "us": "microsecond", "percent": "perCent",
               "g": "gram", "cm3": "cm3"}
    value = 1.0
    for op, name in re.findall(r"([*/]?)\s*([A-Za-z_][A-Za-z_0-9]*)", unit):
        name = aliases.get(name, name)
        if not hasattr(hepunits, name):
            raise ValueError(f"unknown unit {name!r} (expected a hepunits name)")
        factor = float(getattr(hepunits, name))
        value = value / factor if op == "/" else value * factor
    return value


def parse_quantity(text: str | float | int, dimension: str) -> float:
    """Parse ``"<number> <unit>"`` into internal units, checking its ``dimension``.

    ``dimension`` is a key of :data:`DIMENSIONS`.  A bare number is accepted only for
    ``"dimensionless"``.  Raises :class:`ValueError` saying what was expected.
    """
    allowed = DIMENSIONS[dimension]
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a quantity like '1 {allowed[-1]}' ({dimension}), got {text!r}")
    if not isinstance(text, str):
        text = str(text)
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a quantity: expected '<number> <unit>' ({dimension})")
    number, unit = float(m.group(1)), m.group(2).replace(" ", "")
    if not math.isfinite(number):  # ('1e400' is a number the regex takes, and infinity as a float)
        raise ValueError(f"{text!r}: {m.group(1)} is beyond a float's range; expected a finite {dimension}")
    if unit not in allowed:
        shown = ", ".join(u or "<none>" for u in allowed)
        raise ValueError(f"{text!r}: unit {unit or '<none>'!r} is not a {dimension} unit ({shown})")
    value = number * (_unit_value(unit) if unit else 1.0)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is beyond a float's range in internal units; expected a finite {dimension}")
    return value
