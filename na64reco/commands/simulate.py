"""``na64reco simulate``: fast simulation of NA64 events into a raw file."""

from __future__ import annotations

import argparse

import hepunits as u

from na64reco.job_defaults import SIMULATE_CHUNK
from na64reco.sim.params import PROCESS_CHOICES

NAME = "simulate"
HELP = ("simulate N beam particles (MOT/EOT) of a setup and write the triggered events as a raw "
        "file (with truth)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setup", required=True, help="setup name (na64mu, na64e) or setup YAML path")
    p.add_argument("--events", type=int, required=True, metavar="N",
                   help="number of beam particles to simulate (> 0)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--run", type=int, default=1, help="run number (selects the conditions; default 1)")
    p.add_argument("--output", required=True, metavar="FILE.root", help="raw ROOT file to write")
    p.add_argument("--process", default="mixture", metavar="PROCESS",
                   help=f"one of {', '.join(PROCESS_CHOICES)} (default mixture)")
    p.add_argument("--mass", type=float, metavar="GEV",
                   help="dark boson mass in GeV (required for --process signal, refused for a process "
                        "without signal events; no default)")
    p.add_argument("--coupling", type=float, metavar="G",
                   help="Z' coupling g (na64mu) or A' mixing epsilon (na64e); default from the setup's "
                        "simulation.signal.default_coupling")
    p.add_argument("--no-truth", action="store_true", help="do not write the truth tree (data-like file)")
    p.add_argument("--chunk-size", type=int, default=SIMULATE_CHUNK, metavar="K",
                   help=f"beam particles buffered between writes (default {SIMULATE_CHUNK})")
    p.add_argument("--calib-tag", metavar="TAG", help="conditions tag of the true constants "
                                                     "(default: the setup's tag in calib/default_tags.yaml)")
    p.add_argument("--trigger", default="physics", choices=("physics", "calibration"),
                   help="physics: the setup's trigger (default); calibration: its beam-counter terms "
                        "only (no energy cuts), e.g. full-energy electrons for the ECAL calibration")
    p.add_argument("--beam-energy", type=float, metavar="GEV",
                   help="beam energy in GeV (default: the setup's; magnet settings scale with it)")
    p.add_argument("--spill-particles", type=int, metavar="N",
                   help="beam particles per simulated spill (default: the setup's, at most "
                        "simulation.spill_particles_max)")
    p.add_argument("--first-spill", type=int, default=0, metavar="N",
                   help="skip the seed's first N spills: the file holds spills N+1, N+2, ... (the next spills "
                        "of one seed, e.g. after a file of N spills with the same --seed and --spill-particles; "
                        "default 0)")
    p.add_argument("--faults", metavar="YAML",
                   help="detector faults to inject into chosen spills: a YAML list of {spill, kind, ...} "
                        "(kinds pedestal_jump, noisy_channel, dead_plane; see na64reco.sim.faults; default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def run(args: argparse.Namespace) -> int:
    from na64reco.sim import simulate
    from na64reco.sim.faults import load_faults
    faults = load_faults(args.faults) if args.faults else None
    result = simulate(
        args.setup, args.events, args.seed, args.run, args.output, process=args.process,
        mass=None if args.mass is None else args.mass * u.GeV, coupling=args.coupling,
        truth=not args.no_truth, chunk_size=args.chunk_size, calib_tag=args.calib_tag,
        progress=not args.quiet, trigger=args.trigger,
        beam_energy=None if args.beam_energy is None else args.beam_energy * u.GeV,
        faults=faults, spill_particles=args.spill_particles, first_spill=args.first_spill,
    )
    if not args.quiet:
        rate = result.n_beam / result.seconds if result.seconds > 0 else float("nan")
        print(f"{result.output}: {result.n_written} triggered events of {result.n_beam} beam particles "
              f"({result.n_spills} spills, setup {result.setup}, run {result.run}) in "
              f"{result.seconds:.1f} s ({rate:.0f} /s)")
    return 0
