"""Orchestration of the fast simulation: spills -> transport -> trigger -> digits -> raw file.

:func:`simulate` runs ``n_events`` beam particles (MOT for na64mu, EOT for na64e) and
writes the triggered events in the raw format (:mod:`na64reco.io.raw`).

Spills and reproducibility
    The beam is cut into simulated spills of ``min(beam.particles_per_spill,
    simulation.spill_particles_max)`` particles (10 000 by default: a *slice* of a real
    spill; ``spills.n_beam`` counts the particles of each simulated spill, so the sum over
    the file is ``n_events``).  Each spill has its own random stream,
    ``numpy.random.default_rng(SeedSequence([seed, spill]))``, so the output depends only
    on (seed, setup, conditions, options) and not on ``chunk_size``, which only sets how
    many beam particles are buffered between two writes (memory is flat in N).
    ``time_in_spill`` spreads the particles of a simulated spill uniformly over
    ``beam.spill_duration``; ``event`` numbers the written events 1, 2, ... in the run.
Processes
    ``mixture`` (default): the beam with the admixtures of ``simulation.mixture``, each a
    probability per beam particle; ``beam`` (beam lepton only), a single admixture
    (every beam particle is that process: ``signal``, ``kdecay``, ``pidecay``,
    ``hadron``, ``punchthrough``, ``dimuon``, ``pileup``, ``halo``), or ``pedestal`` (random
    triggers: no particle, every channel written, trigger bit "random").  Tracker noise
    and plane inefficiency are always on.  Events failing the trigger are not written but
    are counted in ``spills.n_beam``.
Truth
    ``truth`` tree (unless ``truth=False``): :data:`na64reco.io.raw.TRUTH_BRANCHES`,
    energies and momenta in GeV, lengths in mm; ``weight`` = expected signal events per
    beam particle for (mass, coupling) for signal events (see :mod:`na64reco.sim.signal`);
    in a single-process run of a rare process (``kdecay``, ``pidecay``, ``dimuon``,
    ``punchthrough``) the probability of the forced outcome per beam particle of that
    species (biased sampling, :mod:`na64reco.sim.biasing`, docs/backgrounds.md); 1 otherwise
    (and always in a ``mixture``, where ``simulation.mixture`` gives the rates per MOT).
Calibration runs
    ``trigger="calibration"`` writes every beam particle that passes the setup's beam
    counter and veto terms (upstream of the target; the energy terms and the NA64mu
    deflected-muon counters S4/Smu are dropped, :func:`na64reco.sim.trigger.calibration_trigger`)
    with trigger bit "calibration"; ``beam_energy`` overrides ``beam.energy`` (magnet
    settings scaled with it, :func:`na64reco.sim.beam.with_beam_energy`).  E.g. NA64e
    electron runs for the ECAL response calibration and its energy dependence, or NA64mu
    unscattered 160 GeV muons for the momentum mis-reconstruction study.
Run periods
    A setup given by name is loaded for the period of ``run`` (``calib/setups/na64mu.yaml``
    ``periods``: 2022-like runs 0-9999, 2023-like runs 10000-999999); the file metadata
    records it (``simulation.period``).
Injected faults (run-quality closure)
    ``faults``: a list of detector faults in chosen spills (a pedestal jump or a noisy
    channel of a calorimeter, a dead tracker plane), see :mod:`na64reco.sim.faults`; the
    file metadata records them (``simulation.faults``).  ``spill_particles`` sets the beam
    particles per simulated spill (default: ``min(beam.particles_per_spill,
    simulation.spill_particles_max)``), e.g. to get several spills from a small run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hepunits as u
import numpy as np

from na64reco.atomic import output_file
from na64reco.conditions import load_conditions
from na64reco.config import integer_at_least
from na64reco.errors import ConfigError, RawFormatError
from na64reco.geometry import Setup, load_setup, period_of_run
from na64reco.io.raw import PROCESSES, TRIGGER_BITS, RawWriter
from na64reco.job_defaults import SIMULATE_CHUNK
from na64reco.sim.beam import sample_beam, with_beam_energy
from na64reco.sim.digitize import (
    CaloTables,
    PlaneTables,
    aggregate,
    apv_digits,
    event_counts,
    msadc_digits,
    straw_digits,
    tracker_points,
)
from na64reco.sim.faults import Fault, faulty_calo, faulty_planes, parse_faults
from na64reco.sim.forced_noise import ForcedNoise, ForcedRegion
from na64reco.sim.forced_noise import resolve as resolve_forced
from na64reco.sim.forced_soft import ForcedSoft
from na64reco.sim.hard_scatter import plan as kink_plan
from na64reco.sim.hard_scatter import spill_kinks
from na64reco.sim.occupancy import ForcedPileup, beam_pileup_hits, expected_near
from na64reco.sim.params import MIXTURE_KEYS, PROCESS_CHOICES, SimParams, load_sim_params
from na64reco.sim.signal import lepton_mass_of, sample_signal_x, signal_weight
from na64reco.sim.tracks import ROLE_PILEUP, Recorder, Tracks, written_hits
from na64reco.sim.transport import Context, Truth, follow
from na64reco.sim.trigger import TRIGGERS, calibration_trigger, detector_sums, trigger_mask


@dataclass
class SimulationResult:
    """What :func:`simulate` did."""

    output: Path
    setup: str
    run: int
    n_beam: int
    n_written: int
    n_spills: int
    seconds: float
    process_counts: dict[str, int] = field(default_factory=dict)  # over all beam particles


@dataclass(frozen=True)
class _Job:
    setup: Setup
    params: SimParams
    calo: CaloTables
    planes: PlaneTables
    seed: int
    run: int
    process: str
    mass: float | None
    weight: float
    truth: bool
    per_spill: int
    trigger: str = "physics"
    faults: tuple[Fault, ...] = ()
    forced: ForcedRegion | None = None
    forced_pileup: ForcedPileup | None = None
    crossings: bool = False
    forced_soft: ForcedSoft | None = None
    forced_scatter: object = None  # na64reco.sim.forced_scatter.ForcedScatter
    hard_scatter: bool = True  # natural single large-angle scatters (na64reco.sim.hard_scatter), if the setup has them


def _check_inputs(setup, n_events, seed, run, process, mass, coupling, chunk_size):
    if process not in PROCESS_CHOICES:
        raise ConfigError(f"unknown process {process!r}; choose one of: {', '.join(PROCESS_CHOICES)}")
    for name, value, minimum in (("n_events", n_events, 1), ("seed", seed, 0), ("run", run, 0),
                                 ("chunk_size", chunk_size, 1)):
        integer_at_least(value, minimum, name)
    if process == "signal" or (process == "mixture" and mass is not None):
        if mass is None:
            raise ConfigError("process 'signal' needs a dark boson mass; give --mass in GeV")
        if not np.isfinite(mass) or mass <= 0:  # said in GeV, as --mass is given
            raise ConfigError(f"the dark boson mass (--mass) must be a positive number of GeV, got {mass / u.GeV:g}")
    if coupling is not None and (not np.isfinite(coupling) or coupling <= 0):
        raise ConfigError(f"coupling must be positive, got {coupling!r}")


def _check_output(output: Path) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise RawFormatError(f"{output}: cannot write: is a directory")
    if not parent.is_dir():
        raise RawFormatError(f"{output}: cannot write: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise RawFormatError(f"{output}: cannot write: permission denied")


def _check_period(setup: Setup, run: int) -> None:
    """A :class:`Setup` given as an object must be the one of ``run``'s period: the file says
    ``run`` and everything downstream reconstructs it with that period's detector."""
    period = period_of_run(setup.source, run)
    want = period.name if period else ""
    if setup.period != want:
        have = f"period {setup.period!r}" if setup.period else "the base description"
        raise ConfigError(f"setup {setup.name!r} was loaded for {have} but run {run} is in period {want!r}: "
                          f"use load_setup({setup.name!r}, run={run}) or pass the setup's name")


def simulate(setup: str | Setup, n_events: int, seed: int, run: int, output, process: str = "mixture",
             mass: float | None = None, coupling: float | None = None, truth: bool = True,
             chunk_size: int = SIMULATE_CHUNK, calib_tag: str | None = None, progress: bool = False,
             mixture: dict[str, float] | None = None, trigger: str = "physics",
             beam_energy: float | None = None, faults: list[dict] | None = None,
             spill_particles: int | None = None, first_spill: int = 0,
             forced_noise: ForcedNoise | None = None,
             forced_pileup: ForcedPileup | None = None, true_crossings=None,
             forced_soft: ForcedSoft | None = None, forced_scatter=None,
             hard_scatter: bool = True) -> SimulationResult:
    """Simulate ``n_events`` beam particles and write the triggered events to ``output``.

    Args:
        setup: ``"na64mu"``, ``"na64e"``, a setup YAML path (loaded for the period of
            ``run``) or a :class:`Setup` (used as given).
        n_events: beam particles to simulate (MOT / EOT), > 0.
        seed: random seed (>= 0); same seed and options -> identical file content.
        run: run number written to the file and used to look up the conditions.
        output: path of the ROOT file to create (replaced if it exists), written to a temporary
            sibling and moved into place only when complete (none is left on failure or interrupt).
        process: one of :data:`na64reco.sim.params.PROCESS_CHOICES`.
        mass: dark boson mass in hepunits (MeV; e.g. ``0.1 * hepunits.GeV``); required for
            ``signal`` (and gives signal events in a mixture with a ``signal`` admixture).
        coupling: Z' coupling g (na64mu) or A' mixing epsilon (na64e); default
            ``simulation.signal.default_coupling``.  Only enters the truth weight.
        truth: write the ``truth`` tree.
        chunk_size: beam particles buffered between writes (rounded up to whole spills).
        calib_tag: conditions tag giving the true constants (default: the setup's tag in ``calib/default_tags.yaml``).
        progress: show a tqdm progress bar on stderr.
        mixture: overrides of ``simulation.mixture`` probabilities (validation samples).
        trigger: ``"physics"`` (the setup's trigger) or ``"calibration"`` (its counter
            terms only; trigger bit "calibration"), see the module docstring.
        beam_energy: beam energy in hepunits (MeV), default ``beam.energy`` of the setup.
        faults: detector faults injected into chosen spills (:mod:`na64reco.sim.faults`);
            None or [] gives the output of a healthy detector, bit for bit.
        spill_particles: beam particles per simulated spill (default
            ``min(beam.particles_per_spill, simulation.spill_particles_max)``).
        forced_noise: exactly ``forced_noise.count`` tracker noise clusters per event in a
            region of planes and times instead of the nominal ones there: biased sampling of
            rare noise configurations (:mod:`na64reco.sim.forced_noise`); the file's
            metadata records the region and its nominal mean ``expected``.
        forced_pileup: exactly ``forced_pileup.count`` out-of-time beam muons per event in
            its near times instead of the nominal ones there (:mod:`na64reco.sim.occupancy`);
            the metadata records them and their nominal mean ``expected``.
        forced_scatter: one large-angle scatter of each beam muon after the target
            (:class:`na64reco.sim.forced_scatter.ForcedScatter`), weight = its natural probability.
        hard_scatter: the natural single large-angle scatters of the primary muons
            (:mod:`na64reco.sim.hard_scatter`, setup ``simulation.muon.single_scatter``; their own
            random stream); False leaves them out, which changes only the events that had one.
        true_crossings: path of a ``.npz`` to write the true tracker crossings of the written
            events' own particles to (``event`` number in the file, ``plane`` index, true
            measured coordinate ``u`` in mm, time ``t`` in ns) and of the out-of-time beam
            pile-up muons (``pileup_event``, ``pileup_muon`` (the muon's index in the file),
            ``pileup_plane``, ``pileup_u``, ``pileup_t`` per crossing; ``pileup_muon_event``,
            ``pileup_muon_time`` (ns) per muon), for truth studies of the tracking; None
            (default) writes nothing and changes nothing else (no random number drawn).  Also
            per muon ``pileup_muon_p``, its momentum behind the last tracker plane (GeV).
        forced_soft: the near pile-up muons of ``forced_pileup`` forced to lose a fraction of their
            energy in a range in the ECAL (:mod:`na64reco.sim.forced_soft`); the metadata records
            the range and its natural probability per muon, the crossings (``true_crossings``)
            ``pileup_muon_near``, ``pileup_muon_v_forced`` and ``pileup_muon_e_ecal`` per muon; the forced
            muons' calorimeter deposits are in the event's MSADC digits at their times.

    Raises ConfigError / RawFormatError / CalibrationMissing with one-line messages.
    """
    t_start = time.perf_counter()
    setup = setup if isinstance(setup, Setup) else load_setup(str(setup), run=int(run))
    _check_inputs(setup, n_events, seed, run, process, mass, coupling, chunk_size)
    _check_period(setup, int(run))
    if trigger not in TRIGGERS:
        raise ConfigError(f"unknown trigger {trigger!r}; choose one of: {', '.join(TRIGGERS)}")
    cond = load_conditions(setup, int(run), calib_tag)
    setup = _true_magnets(setup, cond)
    if beam_energy is not None:
        setup = with_beam_energy(setup, float(beam_energy))
    if trigger == "calibration":
        setup = dataclasses.replace(setup, trigger=calibration_trigger(setup.trigger, setup))
    output = Path(output)
    _check_output(output)
    params = load_sim_params(setup, mixture)
    if process != "signal" and not (process == "mixture" and params.mixture.get("signal", 0.0) > 0) \
            and (mass is not None or coupling is not None):  # they enter only signal events: refuse, not ignore
        given = " and ".join(n for n, v in (("mass (--mass)", mass), ("coupling (--coupling)", coupling))
                             if v is not None)
        what = "its mixture has no signal admixture" if process == "mixture" else "it makes no signal events"
        raise ConfigError(f"{given} given for process {process!r}, but {what}: they would be ignored; "
                          "use process 'signal' (--process signal) or leave them out")
    lepton_mass = lepton_mass_of(setup.beam.particle)
    weight = 1.0
    if mass is not None:
        coupling = params.default_coupling if coupling is None else float(coupling)
        sample_signal_x(np.random.default_rng(0), 1, setup.beam.energy, mass, lepton_mass)  # checks kinematics
        weight = signal_weight(mass, coupling, setup.beam.energy, lepton_mass)
    per_spill = int(max(1, min(setup.beam.particles_per_spill, params.spill_particles_max)))
    if spill_particles is not None:
        per_spill = integer_at_least(spill_particles, 1, "spill_particles")
    integer_at_least(first_spill, 0, "first_spill (--first-spill)")
    fault_list = parse_faults(faults, setup)
    planes = PlaneTables.of(setup, cond)
    region = None
    if forced_noise is not None:
        if fault_list:
            raise ConfigError("forced noise and injected faults cannot be combined (a fault may change the noise "
                              "of the forced region)")
        region = resolve_forced(forced_noise, setup, planes.noise_hits, planes.noise_t_first, planes.noise_t_last)
    lambda_near = None if forced_pileup is None else expected_near(setup, forced_pileup)  # checks it
    if forced_soft is not None and (forced_pileup is None or forced_pileup.count < 1):
        raise ConfigError("forced soft pile-up needs forced pile-up muons (forced_pileup with count >= 1)")
    kinks = kink_plan(setup, params) if hard_scatter else None
    job = _Job(setup, params, CaloTables.of(setup, cond), planes, int(seed), int(run),
               process, mass, weight, truth, per_spill, trigger, fault_list, region, forced_pileup,
               true_crossings is not None, forced_soft, forced_scatter, bool(hard_scatter))
    n_spills = -(-int(n_events) // per_spill)
    lo, hi = int(first_spill) + 1, int(first_spill) + n_spills  # the file's spills (numbered from 1)
    outside = [f.spill for f in fault_list if not lo <= f.spill <= hi]
    if outside:  # it would inject nothing: refuse, not ignore
        raise ConfigError(f"fault in spill {outside[0]}: the file holds spills {lo}-{hi} ({n_events} beam particles "
                          f"in spills of {per_spill}" + (f", from --first-spill {first_spill}" if first_spill else "")
                          + "); a fault must be in one of them")
    meta = {"simulation": {
        "seed": int(seed), "period": setup.period, "process": process, "n_beam": int(n_events),
        "spill_particles": per_spill, **({"first_spill": int(first_spill)} if first_spill else {}),
        "mass_gev": None if mass is None else mass / u.GeV, "coupling": coupling,
        "calib_tag": cond.tag, "conditions": cond.files,
        "mixture": params.mixture if process == "mixture" else None,
        "trigger": trigger, "beam_energy_gev": setup.beam.energy / u.GeV,
        **({"faults": [f.to_dict() for f in fault_list]} if fault_list else {}),
        **({"forced_noise": {**forced_noise.to_dict(), "expected": region.expected}} if region is not None else {}),
        **({"forced_pileup": {**forced_pileup.to_dict(), "expected": lambda_near}} if forced_pileup else {}),
        **({"forced_soft": {**forced_soft.to_dict(), "expected_losses": forced_soft.expected_losses(params),
                            "probability": forced_soft.probability(params)}} if forced_soft else {}),
        **({"forced_scatter": forced_scatter.to_dict()} if forced_scatter else {}),
        **({"single_scatter": {"q_floor_mev": params.hard_scatter_q_floor,
                               "core_sigmas": params.hard_scatter_core_sigmas, "per_muon": kinks.total}}
           if kinks is not None else {}),
    }}
    flush_every = max(1, -(-int(chunk_size) // per_spill))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(n_events), unit="evt", unit_scale=True, file=sys.stderr, desc="simulate")
    counts = dict.fromkeys(PROCESSES, 0)
    n_written = 0
    crossings: list[dict] = []
    # written to a temporary sibling and moved into place only when complete: an interrupted
    # run leaves no half-written file, and an existing output is replaced, not written into
    # (another name of it, a hard link, keeps its content)
    with output_file(output) as staged, \
            RawWriter(staged, setup=setup.name, run=int(run), has_truth=truth, extra_meta=meta) as writer:
        buffer: list[dict] = []
        for i in range(n_spills):
            spill = int(first_spill) + i
            n = min(per_spill, int(n_events) - i * per_spill)
            out = simulate_spill(job, spill, n, first_event=n_written + 1)
            n_written += out["n_written"]
            for name, code in PROCESSES.items():
                counts[name] += int(out["process_counts"][code])
            buffer.append(out)
            if job.crossings:
                crossings.append(out.pop("crossings"))
            if len(buffer) >= flush_every or i == n_spills - 1:
                _flush(writer, buffer, truth)
                buffer = []
            if bar is not None:
                bar.update(n)
    if bar is not None:
        bar.close()
    if job.crossings:
        _number_pileup_muons(crossings)
        keys = CROSSING_KEYS + (PILEUP_CROSSING_KEYS + PILEUP_MUON_KEYS
                                if all("pileup_muon" in c for c in crossings) else ())
        keys += tuple(k for k in PILEUP_MUON_EXTRA_KEYS if crossings and all(k in c for c in crossings))
        np.savez(true_crossings, **{k: _concat(crossings, k) if crossings else np.zeros(0) for k in keys})
    return SimulationResult(output, setup.name, int(run), int(n_events), n_written, n_spills,
                            time.perf_counter() - t_start, {k: v for k, v in counts.items() if v})


#: the arrays of the ``true_crossings`` file: the written events' own particles, then the
#: out-of-time beam pile-up muons (per crossing, and per muon)
CROSSING_KEYS = ("event", "plane", "u", "t")
PILEUP_CROSSING_KEYS = ("pileup_event", "pileup_muon", "pileup_plane", "pileup_u", "pileup_t")
PILEUP_MUON_KEYS = ("pileup_muon_event", "pileup_muon_time")
#: per pile-up muon, when known: its momentum behind the last tracker plane (GeV), and with
#: ``forced_soft`` whether it is a near (forced) one, the sum of its forced losses' v and its ECAL
#: deposit (GeV, merged into the event's digits)
PILEUP_MUON_EXTRA_KEYS = ("pileup_muon_p", "pileup_muon_near", "pileup_muon_v_forced", "pileup_muon_e_ecal")


def _pileup_crossings(hits, pile: dict, first_event: int) -> dict:
    """The true crossings of the out-of-time beam muons of a spill's written events (event
    numbers of the file; muon index within the spill, made unique in the file by
    :func:`_number_pileup_muons`) and each muon's event and time (ns)."""
    ev, plane, u, t = hits
    return {"pileup_event": np.asarray(ev, np.int64) + first_event, "pileup_muon": np.asarray(pile["muon"], np.int64),
            "pileup_plane": np.asarray(plane, np.int64), "pileup_u": np.asarray(u, float),
            "pileup_t": np.asarray(t, float),
            "pileup_muon_event": np.asarray(pile["muon_event"], np.int64) + first_event,
            "pileup_muon_time": np.asarray(pile["muon_time"], float),
            **{"pileup_" + k: np.asarray(pile[k]) for k in ("muon_p", "muon_near", "muon_v_forced", "muon_e_ecal")
               if k in pile}}


def _number_pileup_muons(parts: list[dict]) -> None:
    """Offsets the spills' pile-up muon indices so that they number the muons of the file."""
    offset = 0
    for p in parts:
        if "pileup_muon" in p:
            p["pileup_muon"] = p["pileup_muon"] + offset
            offset += p["pileup_muon_event"].size


def _true_magnets(setup: Setup, cond) -> Setup:
    """The setup with the conditions' magnet field integrals (the true field of the run)."""
    if not cond.field_integrals:
        return setup
    magnets = {k: cond.magnet(setup, k) for k in setup.magnets}
    return dataclasses.replace(setup, magnets=magnets)


def _concat(parts: list[dict], key: str):
    return np.concatenate([p[key] for p in parts])


def _flush(writer: RawWriter, buffer: list[dict], truth: bool) -> None:
    ev_keys = buffer[0]["events"].keys()
    writer.write_events({k: _concat([b["events"] for b in buffer], k) for k in ev_keys})
    writer.write_spills({k: _concat([b["spill"] for b in buffer], k) for k in buffer[0]["spill"]})
    if truth:
        writer.write_truth({k: _concat([b["truth"] for b in buffer], k) for k in buffer[0]["truth"]})


# ----------------------------------------------------------------------------------------
def _soft_digits(rng: np.random.Generator, state: dict, setup, calo, nw: int, own, deposits):
    """MSADC digits of the written events with the forced soft pile-up muons' deposits
    (:func:`na64reco.sim.occupancy.soft_deposits`, in written-event indices) merged into their own
    aggregated ones ``own = (key, t, energy)``, drawn from the generator state ``state`` the first
    digitisation started from (so the rest of the spill's stream is that of the run without them)."""
    ev, det, ch, e, t = deposits
    key, t_c, e_c = own
    if ev.size:
        k2, t2, e2 = aggregate(ev, det, ch, e, t)
        key, t_c, e_c = (np.concatenate([key, k2]), np.concatenate([t_c, t2]), np.concatenate([e_c, e2]))
        order = np.lexsort((t_c, key))
        key, t_c, e_c = key[order], t_c[order], e_c[order]
    again = np.random.Generator(type(rng.bit_generator)())
    again.bit_generator.state = state
    return msadc_digits(again, setup, calo, nw, key, t_c, e_c)


def draw_processes(rng: np.random.Generator, n: int, process: str, mixture: dict[str, float]) -> np.ndarray:
    """Process code of each beam particle (``mixture``: categorical draw, else constant)."""
    if process != "mixture":
        return np.full(n, PROCESSES[process], np.int8)
    keys = [k for k in MIXTURE_KEYS if mixture.get(k, 0.0) > 0]
    edges = np.cumsum([mixture[k] for k in keys])
    r = rng.random(n)
    which = np.searchsorted(edges, r, side="right")
    codes = np.array([PROCESSES[k] for k in keys] + [PROCESSES["beam"]], np.int8)
    return codes[which]


def simulate_spill(job: _Job, spill: int, n: int, first_event: int = 1) -> dict:
    """Simulate one spill of ``n`` beam particles; returns the arrays to write."""
    setup, prm = job.setup, job.params
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, spill]))
    proc = draw_processes(rng, n, job.process, prm.mixture)
    if job.process == "mixture" and job.mass is None:
        proc[proc == PROCESSES["signal"]] = PROCESSES["beam"]
    time_in_spill = (np.arange(n) + rng.random(n)) / job.per_spill * setup.beam.spill_duration / u.s
    truth = Truth.new(n)
    rec = Recorder(n)
    pedestal = job.process == "pedestal"
    if not pedestal:
        ev = np.arange(n, dtype=np.int64)
        tracks = [sample_beam(rng, setup, ev, proc)]
        pile = np.flatnonzero(proc == PROCESSES["pileup"])
        if pile.size:
            w = setup.beam.pileup_window
            tracks.append(sample_beam(rng, setup, pile, np.full(pile.size, PROCESSES["beam"], np.int8),
                                      role=ROLE_PILEUP, t=rng.uniform(-w / 2, w / 2, pile.size)))
        kinks = spill_kinks(job.seed, spill, setup, prm, n) if job.hard_scatter else None
        ctx = Context(rng, setup, prm, rec, truth, job.mass, biased=job.process != "mixture",
                      forced_scatter=job.forced_scatter, hard_kinks=kinks)
        follow(ctx, Tracks.concat(tracks))
    d_ev, d_det, d_ch, d_e, d_t = rec.deposits()
    if pedestal:
        fired = np.ones(n, bool)
    else:
        fired = trigger_mask(setup, n, d_ev, d_det, d_ch, d_e)
    sel = np.flatnonzero(fired)
    nw = sel.size
    new_index = np.full(n, -1, np.int64)
    new_index[sel] = np.arange(nw)
    # ---- digits of the written events ----------------------------------------------------
    m = fired[d_ev]
    key, t_c, e_c = aggregate(new_index[d_ev[m]], d_det[m], d_ch[m], d_e[m], d_t[m])
    faults = tuple(f for f in job.faults if f.spill == spill + 1)  # injected faults of this spill
    calo, planes = faulty_calo(job.calo, faults, setup), faulty_planes(job.planes, faults, setup)
    soft = job.forced_soft is not None and not pedestal
    calo_state = copy.deepcopy(rng.bit_generator.state) if soft else None  # the digits are redone below
    c_ev, c_det, c_ch, c_adc = msadc_digits(rng, setup, calo, nw, key, t_c, e_c, every_channel=pedestal)
    hits = rec.hits()
    crossings = None
    if job.crossings:  # opt-in truth of the tracking studies (simulate(true_crossings=)): no random number
        h_ev, h_pl, h_u, h_t = hits
        m = fired[h_ev]
        crossings = {"event": new_index[h_ev[m]] + first_event, "plane": h_pl[m], "u": h_u[m], "t": h_t[m]}
    # the other beam muons crossing the trackers within their readout windows
    if pedestal:
        pile_hits = Recorder(nw).hits()
    elif crossings is not None or soft:  # with the pile-up muons' truth (the same random numbers)
        pile_hits, pile = beam_pileup_hits(rng, setup, prm, nw, job.forced_pileup, muons=True, soft=job.forced_soft)
        if crossings is not None:
            crossings.update(_pileup_crossings(pile_hits, pile, first_event))
        if soft:  # the forced soft muons' deposits at their times: the digits again, from the same numbers
            c_ev, c_det, c_ch, c_adc = _soft_digits(rng, calo_state, setup, calo, nw, (key, t_c, e_c),
                                                    pile["deposits"])
    else:
        pile_hits = beam_pileup_hits(rng, setup, prm, nw, job.forced_pileup)
    pts = tracker_points(rng, planes, nw, *written_hits(new_index, hits, pile_hits), job.forced)
    a_ev, a_pl, a_ch, a0, a1, a2 = apv_digits(rng, setup, prm, planes, nw, *pts)
    s_ev, s_pl, s_tube, s_tdc = straw_digits(rng, setup, planes, nw, *pts)
    events = {
        "run": np.full(nw, job.run, np.int32), "spill": np.full(nw, spill + 1, np.int32),
        "event": np.arange(first_event, first_event + nw, dtype=np.int64),
        "trigger": np.full(nw, TRIGGER_BITS["random" if pedestal else job.trigger], np.uint32),
        "time_in_spill": time_in_spill[sel].astype(np.float32),
        "n_calo": event_counts(c_ev, nw), "calo_det": c_det, "calo_chan": c_ch, "calo_adc": c_adc,
        "n_apv": event_counts(a_ev, nw), "apv_plane": a_pl, "apv_chan": a_ch,
        "apv_a0": a0, "apv_a1": a1, "apv_a2": a2,
        "n_straw": event_counts(s_ev, nw), "straw_plane": s_pl, "straw_tube": s_tube, "straw_tdc": s_tdc,
    }
    out = {"events": events, "n_written": nw,
           "spill": {"run": np.array([job.run]), "spill": np.array([spill + 1]), "n_beam": np.array([n]),
                     "n_triggered": np.array([nw])},
           "process_counts": np.bincount(proc, minlength=len(PROCESSES))}
    if crossings is not None:
        out["crossings"] = crossings
    if job.truth:
        def sums(name, section=None):
            if name not in setup.calorimeters:
                return np.zeros(nw)
            return detector_sums(setup, n, d_ev, d_det, d_ch, d_e, name, section)[sel] / u.GeV

        has_ps = "preshower" in setup.calorimeters["ECAL"].section_names
        out["truth"] = {
            "run": events["run"], "spill": events["spill"], "event": events["event"], "process": proc[sel],
            "p_in": truth.p_in[sel] / u.GeV, "p_out": truth.p_out[sel] / u.GeV, "x": truth.x[sel],
            "vertex_z": truth.vertex_z[sel],
            "e_ecal": sums("ECAL"), "e_ecal_preshower": sums("ECAL", "preshower") if has_ps else np.zeros(nw),
            "e_hcal": sums("HCAL"), "e_vhcal": sums("VHCAL"),
            "e_veto": sums("VETO") / 2.0,  # both PMTs of a paddle carry the paddle's deposit
            "e_srd": sums("SRD"),
            "weight": np.where(proc[sel] == PROCESSES["signal"], job.weight, truth.weight[sel]),
        }
    return out
