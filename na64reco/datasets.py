"""The datasets of a run: their names, the grouping of a plain list of files, and what one
dataset may hold.

* A dataset name names the run's outputs (``plots/<name>_*.png``, the ``<name>/``
  directory of ``hists.root``), so it is a plain name (:func:`check_name`): letters, digits
  and ``_ . + -``, not starting with a dot.
* ``na64reco run FILES`` without ``--dataset`` groups the files by what their metadata
  declares (:func:`group_files`): ``data``, ``mc_<process>``, ``mc_signal_m<mass>GeV``,
  ``mc`` (simulation of unknown origin), ``default`` (metadata unreadable).  When the files
  of one such group differ in trigger, beam energy or run period, the files that differ from
  the usual sample get a suffix per difference, in that order: ``_<trigger>`` unless the
  physics trigger, ``_<E>GeV`` unless the setup's nominal beam energy, ``_<period>`` unless
  the group's earliest period (``mc_mixture`` and ``mc_mixture_calibration``,
  ``mc_mixture_100GeV``, ``data_2023``...).  A group whose files agree keeps its plain name.
* One dataset is one sample (:class:`SampleMix`, checked with the files before the run
  from what the check read): its cut-flow sums the events and its MOT/EOT the spills of all
  its files, so data and simulation, two setups, two triggers, two beam energies, two simulated
  processes or two signal masses in one dataset are refused, naming a file of each.  (Run periods
  may be summed.)
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from na64reco.config import PLAIN_NAME_RULE, is_plain_name
from na64reco.errors import ConfigError, NA64Error

#: what a dataset name may be (it becomes file and directory names of the outputs)
ALLOWED = f"{PLAIN_NAME_RULE} (it names the output plots)"
#: the trigger of the usual sample (:data:`na64reco.sim.trigger.TRIGGERS`)
USUAL_TRIGGER = "physics"


def check_name(name) -> str:
    """``name`` if it is a plain dataset name, else a :class:`ConfigError` naming it."""
    if not is_plain_name(name):
        raise ConfigError(f"dataset name {name!r} is not allowed: expected {ALLOWED}")
    return name


def check_names(fileset: Mapping) -> None:
    """:func:`check_name` of every dataset of ``fileset``."""
    for name in fileset:
        check_name(name)


@dataclass(frozen=True)
class Sample:
    """What a file holds, as its metadata declares it (None: not declared)."""

    setup: str | None
    run: int | None
    simulated: bool
    process: str | None = None
    mass_gev: float | None = None
    trigger: str | None = None
    beam_energy_gev: float | None = None
    period: str | None = None  # as declared by a simulation (else from the run, :meth:`run_period`)

    @classmethod
    def of(cls, setup, run, has_truth, simulation) -> Sample:
        sim = simulation if isinstance(simulation, dict) else {}
        energy, mass = sim.get("beam_energy_gev"), sim.get("mass_gev")
        return cls(setup if isinstance(setup, str) else None,
                   run if isinstance(run, int) and not isinstance(run, bool) else None,
                   bool(has_truth), _text(sim.get("process")),
                   float(mass) if isinstance(mass, (int, float)) else None, _text(sim.get("trigger")),
                   float(energy) if isinstance(energy, (int, float)) else None,
                   sim.get("period") if isinstance(sim.get("period"), str) else None)

    @classmethod
    def of_meta(cls, meta: dict) -> Sample:
        """From a file's metadata (:attr:`na64reco.io.raw.RawFile.meta`, ``declared_meta``)."""
        return cls.of(meta.get("setup"), meta.get("run"), meta.get("has_truth"), meta.get("simulation"))

    @classmethod
    def of_identity(cls, ident) -> Sample:
        """From the file check's record (:class:`na64reco.io.distinct.FileIdentity`)."""
        return cls.of(ident.setup, ident.run, ident.has_truth, ident.simulation)

    def base_name(self) -> str:
        """The dataset name of its kind: ``data``, ``mc``, ``mc_<process>``, ``mc_signal_m<mass>GeV``."""
        if not self.simulated:
            return "data"
        if not self.process:
            return "mc"
        if self.process == "signal" and self.mass_gev is not None:
            return f"mc_signal_m{self.mass_gev:g}GeV"
        return f"mc_{self.process}"

    def run_period(self) -> str | None:
        """The run period: as declared, else the setup's period of the run (None if none)."""
        if self.period is not None or self.setup is None or self.run is None:
            return self.period or None
        return _period_of_run(self.setup, self.run)

    def nominal_energy_gev(self) -> float | None:
        """The beam energy of the setup in the file's run period (None if unknown)."""
        return None if self.setup is None else _nominal_energy_gev(self.setup, self.run)


def group_files(samples: Iterable[tuple[str, Sample | None]]) -> dict[str, list[str]]:
    """Datasets of ``(path, sample)`` pairs (None: metadata unreadable, dataset ``default``),
    named as the module doc says, in the order of their first file."""
    samples = list(samples)
    groups: dict[str, list[int]] = {}
    for i, (_, sample) in enumerate(samples):
        groups.setdefault("default" if sample is None else sample.base_name(), []).append(i)
    names = [""] * len(samples)
    for base, members in groups.items():
        suffixes = _suffixes([samples[i][1] for i in members]) if base != "default" else [""] * len(members)
        for i, suffix in zip(members, suffixes, strict=True):
            names[i] = re.sub(r"[^A-Za-z0-9_.+-]", "_", base + suffix)
    out: dict[str, list[str]] = {}
    for (path, _), name in zip(samples, names, strict=True):
        out.setdefault(name, []).append(path)
    return out


def _suffixes(members: list[Sample]) -> list[str]:
    """The name suffix of each sample of one kind: one per attribute in which they differ,
    for the samples that are not the usual one."""
    suffixes = [""] * len(members)
    triggers = [s.trigger for s in members]
    if len(set(triggers) - {None}) > 1:
        for i, t in enumerate(triggers):
            suffixes[i] += f"_{t}" if t is not None and t != USUAL_TRIGGER else ""
    energies = [s.beam_energy_gev for s in members]
    if len(set(energies) - {None}) > 1:
        for i, (e, s) in enumerate(zip(energies, members, strict=True)):
            nominal = s.nominal_energy_gev()
            usual = e is None or (nominal is not None and math.isclose(e, nominal))
            suffixes[i] += "" if usual else f"_{e:g}GeV"
    periods = [s.run_period() for s in members]
    if len(set(periods) - {None}) > 1:
        first_run = {}
        for p, s in zip(periods, members, strict=True):
            if p is not None:
                first_run[p] = min(first_run.get(p, math.inf), math.inf if s.run is None else s.run)
        earliest = min(first_run, key=lambda p: (first_run[p], p))
        for i, p in enumerate(periods):
            suffixes[i] += f"_{p}" if p is not None and p != earliest else ""
    return suffixes


class MixedSamples(ConfigError):
    """Two files of one dataset that are not one sample: ``first`` and ``second`` say what each
    is, with its path (``"simulation (a.root)"``)."""

    def __init__(self, message: str, first: str, second: str):
        super().__init__(message)
        self.first, self.second = first, second


class SampleMix:
    """The files of one dataset, checked to be one sample (module doc): :meth:`add` raises a
    :class:`ConfigError` naming the dataset, the first file of one kind and the file of another."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self._first: dict[str, tuple[object, str]] = {}  # attribute -> (value, path of its first file)

    def add(self, path, sample: Sample) -> None:
        kinds = {"truth": sample.simulated, "setup": sample.setup, "trigger": sample.trigger,
                 "beam energy": sample.beam_energy_gev,
                 "process": sample.process if sample.simulated else None,
                 "signal mass": sample.mass_gev if sample.simulated else None}
        for attribute, value in kinds.items():
            if value is None:  # (not declared: nothing to compare)
                continue
            first, first_path = self._first.setdefault(attribute, (value, str(path)))
            if first != value:
                one, other = f"{_kind(attribute, first)} ({first_path})", f"{_kind(attribute, value)} ({path})"
                raise MixedSamples(
                    f"dataset {self.dataset!r} mixes {one} and {other}: one dataset is one sample (its cut-flow "
                    "and MOT/EOT sum all its files); give them as two datasets (a --fileset, or no --dataset: "
                    "FILES are then grouped by what they hold)", one, other)


def _kind(attribute: str, value) -> str:
    if attribute == "truth":
        return "simulation" if value else "data"
    if attribute == "setup":
        return f"files of setup {value!r}"
    if attribute == "trigger":
        return f"files of the {value} trigger"
    if attribute == "process":
        return f"simulated {value!r} files"
    if attribute == "signal mass":
        return f"signal of mass {value:g} GeV"
    return f"files of a {value:g} GeV beam"


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


@functools.lru_cache(maxsize=64)
def _period_of_run(setup: str, run: int) -> str | None:
    from na64reco.geometry import period_of_run

    try:
        period = period_of_run(setup, run)
    except NA64Error:  # (an unknown setup, a run in no period: the run's check reports it)
        return None
    return period.name if period is not None else None


@functools.lru_cache(maxsize=64)
def _nominal_energy_gev(setup: str, run: int | None) -> float | None:
    import hepunits as u

    from na64reco.geometry import load_setup

    try:
        return load_setup(setup, run=run).beam.energy / u.GeV
    except NA64Error:
        return None
