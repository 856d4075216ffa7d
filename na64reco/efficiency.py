"""Signal efficiency vs dark-boson mass from signal MC run through the blinded processors.

For each mass a signal sample is simulated (``process="signal"``: *every* simulated beam
particle undergoes the dark bremsstrahlung; na64mu: Z', na64e: A'), the setup's
invisible-mode processor runs over it (iterative executor, :func:`na64reco.runner.run_files`)
and the efficiency is

    eff = sum(w, events passing every cut and inside the signal box) / (w_int x N_sim)

where ``w_int`` is the truth weight of one signal interaction (expected signal events per
beam particle) and ``N_sim`` the simulated beam particles (``sum(spills.n_beam)``, the MOT
or EOT of the sample).  The denominator is therefore the expected signal count of the
sample, i.e. every simulated signal interaction, *including* the events that failed the
trigger and were never written.  The efficiency contains the trigger, the detector
acceptance, the reconstruction, every cut and the signal-box acceptance (for NA64mu the
x = E_X/E_0 > 0.5 part of the spectrum, smeared by the p_out resolution).  All signal
events of a sample carry the same weight, so ``eff = n_box / N_sim`` and its error is
binomial, sqrt(eff (1 - eff) / N_sim).

For limits, use ``eff`` times the factors the signal sample does not contain, the DAQ live
fraction and the pile-up-free fraction (``eff * daq_live_fraction(setup, rate) *
pileup_free_fraction(setup)``, as ``benchmarks/efficiency_breakdown.py`` does: 0.89 for the 2022
period), with the yield over the *whole* x range (``expected_signal(..., efficiency=...)`` without
``x_min``).  ``eff / acceptance``
(``acceptance`` = the analytic IWW fraction of the cross section with x > x_min) is the
efficiency *excluding* the x acceptance, the quantity ``na64reco limit --efficiency``
expects together with its ``x_min``.

    from na64reco.efficiency import signal_efficiency
    table = signal_efficiency("na64mu", [10 * MeV, 100 * MeV], n_events=5000)
    print(table.format())
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from na64reco.errors import ConfigError, NA64Error
from na64reco.job_defaults import RUN_CHUNK
from na64reco.selection.signal_model import signal_model

__all__ = ["PROCESSORS", "EfficiencyPoint", "EfficiencyTable", "signal_efficiency",
           "efficiency_from_output", "x_acceptance", "daq_live_fraction", "pileup_free_fraction",
           "efficiency_breakdown", "published_implied_efficiency"]

#: Invisible-mode processor of each setup.
PROCESSORS = {"na64mu": "na64mu_invisible", "na64e": "na64e_invisible"}


@dataclass
class EfficiencyPoint:
    """Efficiency of one signal sample (mass in MeV, hepunits)."""

    mass: float
    n_simulated: int            # beam particles = simulated signal interactions (MOT/EOT)
    n_triggered: int            # events written (passed the trigger)
    n_selected: int             # events passing every cut and inside the signal box
    weight: float               # truth weight per signal interaction (expected events per MOT)
    sumw_selected: float        # weighted count of the selected events
    efficiency: float           # sumw_selected / (weight x n_simulated)
    error: float                # binomial, sqrt(eff (1 - eff) / n_simulated)
    acceptance: float           # analytic IWW fraction of sigma with x > x_min
    cutflow: list = field(default_factory=list, repr=False)  # the processor's cut-flow rows

    @property
    def trigger_efficiency(self) -> float:
        return self.n_triggered / self.n_simulated

    @property
    def efficiency_excluding_acceptance(self) -> float:
        """``efficiency / acceptance``: what ``na64reco limit --efficiency`` expects."""
        return self.efficiency / self.acceptance if self.acceptance > 0 else math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("cutflow")
        d["mass_mev"] = d.pop("mass")
        d["trigger_efficiency"] = self.trigger_efficiency
        d["efficiency_excluding_acceptance"] = self.efficiency_excluding_acceptance
        return d


@dataclass
class EfficiencyTable:
    """Efficiency vs mass of one setup."""

    setup: str
    processor: str
    x_min: float
    points: list[EfficiencyPoint]

    @property
    def masses(self) -> np.ndarray:
        return np.array([p.mass for p in self.points])

    @property
    def efficiency(self) -> np.ndarray:
        return np.array([p.efficiency for p in self.points])

    @property
    def error(self) -> np.ndarray:
        return np.array([p.error for p in self.points])

    def to_dicts(self) -> list[dict]:
        return [p.to_dict() for p in self.points]

    def format(self) -> str:
        """Text table: mass, N_sim, trigger efficiency, efficiency +- stat, acceptance, eff/acc."""
        lines = [f"# {self.setup} signal efficiency ({self.processor}: all cuts and signal box; "
                 f"denominator = simulated signal interactions)",
                 f"{'mass_MeV':>9} {'N_sim':>7} {'trig_eff':>8} {'n_box':>6} {'eff':>7} {'+-stat':>7}"
                 f" {'acc(x>' + format(self.x_min, 'g') + ')':>10} {'eff/acc':>7}"]
        for p in self.points:
            lines.append(f"{p.mass:9.4g} {p.n_simulated:7d} {p.trigger_efficiency:8.3f} {p.n_selected:6d} "
                         f"{p.efficiency:7.4f} {p.error:7.4f} {p.acceptance:10.4f} "
                         f"{p.efficiency_excluding_acceptance:7.4f}")
        return "\n".join(lines)


def daq_live_fraction(setup, triggers_per_beam_particle: float) -> float:
    """Live fraction of a non-paralysable DAQ, ``1 / (1 + R tau)``.

    ``R`` is the trigger rate in the spill: ``triggers_per_beam_particle`` (measured on a
    beam-mixture sample) x ``beam.particles_per_spill`` / ``beam.spill_duration`` of the
    :class:`~na64reco.geometry.Setup`; ``tau`` is ``trigger.dead_time`` (the setup's
    ``dead_time_per_event``, 0: always live).
    """
    if not (triggers_per_beam_particle >= 0 and math.isfinite(triggers_per_beam_particle)):
        raise NA64Error(f"trigger rate per beam particle must be >= 0, got {triggers_per_beam_particle}")
    rate = triggers_per_beam_particle * setup.beam.particles_per_spill / setup.beam.spill_duration
    return 1.0 / (1.0 + rate * setup.trigger.dead_time)


def pileup_free_fraction(setup) -> float:
    """Fraction of signal events with no second beam muon in time, ``exp(-R w)``.

    ``R`` = ``beam.particles_per_spill`` / ``beam.spill_duration`` (the muon rate in the
    spill) and ``w`` = ``beam.pileup_window`` of the :class:`~na64reco.geometry.Setup`
    (the window in which the simulation makes a second muon "in time", the ``pileup``
    admixture).  The signal samples of :func:`signal_efficiency` carry no pile-up, while
    the analysis rejects pile-up events (``single_track_in`` drops 92 % of the simulated
    ``pileup`` process, docs/cutflows.md); counting every pile-up signal event as lost,
    this factor is the signal's share of that rejection (slightly conservative).
    """
    rate = setup.beam.particles_per_spill / setup.beam.spill_duration
    return math.exp(-rate * setup.beam.pileup_window)


def efficiency_breakdown(point: EfficiencyPoint, live_fraction: float = 1.0,
                         pileup_free: float = 1.0) -> list[tuple[str, float]]:
    """The efficiency of ``point`` as a product of named factors, in the order they act.

    ``trigger (events written)`` (written / simulated signal interactions), then each cut of the
    selection relative to the one before (``signal_box`` last: the x acceptance smeared by
    the p_out resolution), then ``pile-up rejection`` (:func:`pileup_free_fraction`) and
    ``DAQ live time`` (:func:`daq_live_fraction`).  The product of the factors is
    ``point.efficiency x pileup_free x live_fraction`` (all signal events of a sample carry
    one weight).  Bad spills cost no efficiency: they are removed from the MOT as well as
    from the events (:mod:`na64reco.exposure`).
    """
    for name, value in (("live_fraction", live_fraction), ("pileup_free", pileup_free)):
        if not 0.0 <= value <= 1.0:
            raise NA64Error(f"efficiency_breakdown: {name} must be in [0, 1], got {value}")
    rows = [("trigger (events written)", point.trigger_efficiency)]
    flow = point.cutflow
    if flow:
        previous = flow[0]["events"]
        for row in flow[1:]:
            rows.append((row["cut"], row["events"] / previous if previous else 0.0))
            previous = row["events"]
    rows.append(("pile-up rejection", float(pileup_free)))
    rows.append(("DAQ live time", float(live_fraction)))
    return rows


def published_implied_efficiency(*, mot: float, n_up: float, crossing_mass: float, g_at_crossing: float,
                                 method: str = "iww", n_steps: int = 8) -> float:
    """The mass-independent efficiency (relative to the x > x_min cross section) a published limit implies.

    Solves ``expected_signal(mot, crossing_mass, g_at_crossing, eff, x_min) = n_up`` for
    ``eff``: the efficiency that puts the 90 % CL limit ``g90`` at ``g_at_crossing`` for
    ``crossing_mass`` (MeV) with ``mot`` muons on target and the cross section ``method``
    ("iww" or "ww", :mod:`na64reco.physics.darkbrem`).  Yields scale as eff g^2, so this is
    closed form.  NA64mu 2022: the limit crosses the lower edge of the (g-2) +-2 sigma band
    at ~40 MeV (PRL 132, 211803 (2024); seed 003), n_up = 2.30 (0 observed, b = 0.07 +- 0.03).
    """
    from na64reco.physics.yields import expected_signal

    if not (mot > 0 and n_up > 0 and crossing_mass > 0 and g_at_crossing > 0):
        raise NA64Error(f"published_implied_efficiency: mot, n_up, crossing_mass and g_at_crossing must be > 0 "
                        f"(got {mot}, {n_up}, {crossing_mass}, {g_at_crossing})")
    x_min = _kinematics("na64mu")[3]
    n = expected_signal(mot, crossing_mass, g_at_crossing, 1.0, x_min=x_min, method=method, n_steps=n_steps)
    return n_up / n


def x_acceptance(setup: str, mass: float, method: str = "iww") -> float:
    """Fraction of the dark-bremsstrahlung cross section with x > the signal-box x_min.

    Analytic (:func:`na64reco.physics.darkbrem.sigma_total`) at the nominal beam energy;
    ``mass`` in MeV.  For NA64e it is a reference figure only: the A' takes x of the electron's
    energy at its vertex, E0 exp(-t) (``na64reco.sim.transport``), so the box (E_ECAL < 50 GeV)
    needs x E(t) > 50 GeV, and an efficiency quoted "relative to" this acceptance also holds the
    depth's loss.  A limit uses the efficiency per beam particle, which holds everything.
    """
    from na64reco.physics.darkbrem import sigma_total

    e0, lepton_mass, model, x_min = _kinematics(setup)
    total = sigma_total(e0, mass, lepton_mass, model=model, method=method)
    if total <= 0:
        return 0.0
    return sigma_total(e0, mass, lepton_mass, x_min=x_min, model=model, method=method) / total


def _kinematics(setup: str):
    """Beam energy, lepton mass, model and signal-box x_min of ``setup`` (:func:`signal_model`)."""
    m = signal_model(setup)
    return m.e0, m.lepton_mass, m.model, m.x_min


def _signal_weight_of(path) -> float | None:
    """The truth weight of the signal events of a file (one value), or None if none written."""
    from na64reco.io.raw import PROCESSES, open_raw

    with open_raw(path) as raw:
        if not raw.has_truth:
            raise NA64Error(f"{path}: a signal sample needs the truth tree (simulate with truth=True)")
        truth = raw.truth()
    w = np.asarray(truth["weight"])[np.asarray(truth["process"]) == PROCESSES["signal"]]
    if w.size == 0:
        return None
    if not np.allclose(w, w[0], rtol=1e-12, atol=0):
        raise NA64Error(f"{path}: signal events carry different truth weights; "
                        "efficiency_from_output expects one weight per sample")
    return float(w[0])


def efficiency_from_output(acc: dict, weight: float | None, *, mass: float, acceptance: float) -> EfficiencyPoint:
    """Efficiency of one dataset's processor output ``acc`` (a simulated signal sample).

    ``weight`` is the truth weight of one signal interaction (None if no event was written:
    then nothing was selected either).  Uses the ``signal_box`` region (every cut and the
    box) and the MOT/EOT of the provenance.
    """
    from na64reco.selection.cuts import BLINDED, BOX

    prov = acc["provenance"]
    n_sim = int(prov.n_beam)
    if getattr(prov, "partial_spills", None):  # their beam is not in n_beam, their selected events are in the box
        raise NA64Error(f"the output has {len(prov.partial_spills)} spill(s) with skipped events: their beam "
                        "particles are left out of the MOT but their selected events are counted, which would "
                        "raise the efficiency; run again without skipped chunks")
    if n_sim <= 0:
        raise NA64Error("the output has no beam count (spills tree not read?): cannot normalise")
    box = acc["regions"][BOX] if "regions" in acc else None
    if box is not None and box.blinded:
        raise NA64Error(f"the signal box is {BLINDED}: an efficiency needs a simulated signal sample")
    n_box = 0 if box is None else int(box.n)
    sumw = 0.0 if box is None else float(box.sumw)
    if n_box and weight is None:
        raise NA64Error("selected events but no signal weight")
    eff = sumw / (weight * n_sim) if n_box else 0.0
    err = math.sqrt(max(eff * (1.0 - eff), 0.0) / n_sim) if n_box else 1.0 / n_sim  # 0 selected: ~1/N
    flow = acc["cutflow"].to_dict()["cutflow"] if "cutflow" in acc else []
    return EfficiencyPoint(float(mass), n_sim, int(prov.n_triggered), n_box, weight or 0.0, sumw,
                           eff, err, float(acceptance), flow)


def signal_efficiency(setup: str, masses, n_events: int, *, seed: int = 1, run: int = 1001,
                      workdir: str | Path | None = None, executor: str = "iterative",
                      workers: int = 1, chunksize: int = RUN_CHUNK, coupling: float | None = None,
                      calib_tag: str | None = None, selection: str | None = None,
                      progress: bool = False) -> EfficiencyTable:
    """Simulate a signal sample per mass, run the setup's processor, return the efficiencies.

    Args:
        setup: "na64mu" (Z') or "na64e" (A').
        masses: dark-boson masses in MeV (hepunits, e.g. ``[10 * MeV, 0.1 * GeV]``).
        n_events: beam particles per mass (each one a signal interaction).
        seed: the sample of mass i uses ``seed + i``.  run: run number (conditions).
        workdir: where the samples are written (kept); default a temporary directory that
            is removed afterwards.
        executor, workers, chunksize: :class:`na64reco.runner.RunOptions`.
        coupling: only scales the truth weight (the efficiency does not depend on it).
        calib_tag, selection: passed to the simulation / processor (defaults of the setup).
        progress: print one line per mass.
    """
    from na64reco.runner import RunOptions, run_files
    from na64reco.sim.generate import simulate

    _kinematics(setup)
    masses = [float(m) for m in np.atleast_1d(masses)]
    if not masses:
        raise ConfigError("no masses given")
    if isinstance(n_events, bool) or int(n_events) != n_events or n_events < 1:
        raise ConfigError(f"n_events must be a positive integer, got {n_events!r}")
    opts = RunOptions(PROCESSORS[setup], executor=executor, workers=workers, chunksize=chunksize,
                      calib_tag=calib_tag, selection=selection)
    with tempfile.TemporaryDirectory(prefix="na64eff-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        fileset, weights = {}, {}
        for i, mass in enumerate(masses):
            name = f"signal_m{mass:g}MeV"
            path = base / f"{setup}_{name}.root"
            simulate(setup, int(n_events), seed=seed + i, run=run, output=path, process="signal",
                     mass=mass, coupling=coupling, calib_tag=calib_tag)
            fileset[name] = [str(path)]
            weights[name] = _signal_weight_of(path)
            if progress:
                print(f"[efficiency] simulated {setup} m = {mass:g} MeV: {n_events} -> {path}", flush=True)
        out = run_files(fileset, opts)
    points = []
    for mass, name in zip(masses, fileset, strict=True):
        points.append(efficiency_from_output(out[name], weights[name], mass=mass,
                                             acceptance=x_acceptance(setup, mass)))
    return EfficiencyTable(setup, PROCESSORS[setup], _kinematics(setup)[3], points)
