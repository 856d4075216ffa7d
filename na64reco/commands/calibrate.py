"""``na64reco calibrate``: derive MSADC constants from calibration runs and publish a tag."""

from __future__ import annotations

from pathlib import Path

NAME = "calibrate"
HELP = ("derive constants from calibration runs (pedestals from random triggers, gains from muon "
        "MIP peaks, channel time offsets from beam pulses, the ECAL shower response from electron-beam runs; "
        "tracker alignment, magnet field integrals, plane efficiencies, noise, dead and hot strips from beam "
        "runs) and publish them as a "
        "new conditions version and tag")


def add_arguments(parser) -> None:
    parser.add_argument("--setup", required=True, choices=("na64mu", "na64e"), help="detector setup")
    parser.add_argument("--kind", required=True,
                        choices=("pedestals", "mip", "timing", "electron", "alignment", "momentum-scale",
                                 "efficiency"),
                        help="pedestals: random-trigger run; mip: muon run (gains); timing: beam run "
                             "(MSADC channel time offsets); electron: "
                             "electron-beam runs at one or more energies (ECAL section response); "
                             "alignment: beam runs (plane offsets); momentum-scale: beam runs at a known "
                             "energy (magnet field integrals); efficiency: beam runs (plane efficiency, "
                             "noise rate, dead and hot strips)")
    parser.add_argument("--runs", nargs=2, type=int, required=True, metavar=("FIRST", "LAST"),
                        help="run range where the new constants are valid (must contain the runs of FILES)")
    parser.add_argument("--tag", required=True,
                        help="name of the new tag (tags are immutable; letters, digits and '_ . + -', not "
                             "starting with a dot)")
    parser.add_argument("--base-tag", default=None,
                        help="tag giving the other constants (default: the setup's tag in calib/default_tags.yaml "
                             "of the calibration directory)")
    parser.add_argument("--calib-dir", default=None, type=Path,
                        help="calibration directory (default: NA64RECO_CALIB or the package's calib/)")
    parser.add_argument("--min-entries", type=int, default=None,
                        help="minimum digits per channel (default 50 for pedestals and timing, 200 for mip); "
                             "electron: minimum events per beam energy (default from the setup)")
    parser.add_argument("--beam-energy", type=float, default=None, metavar="GEV",
                        help="electron, momentum-scale: beam energy of all FILES in GeV (default: recorded in each "
                             "simulated file, else the setup's beam energy; a file that records another energy is "
                             "refused)")
    parser.add_argument("files", nargs="+", metavar="FILES", help="raw files of the calibration runs (paths or URLs)")


def _check_one_period(setup: str, first: int, last: int) -> None:
    """A ConfigError if the runs ``first..last`` span two run periods of ``setup`` (two detector layouts:
    a tracker payload of one would lack planes of the other)."""
    from na64reco.errors import ConfigError
    from na64reco.geometry import list_periods

    spanned = [p for p in list_periods(setup) if p.first <= last and first <= p.last]
    if len(spanned) > 1:
        names = ", ".join(f"{p.name} (runs {p.first}-{p.last})" for p in spanned)
        raise ConfigError(f"--runs {first} {last} spans the run periods {names} of setup {setup!r}: constants are "
                          "published for one detector layout; calibrate each period's runs separately")


def run(args) -> int:
    from hepunits import GeV

    from na64reco.calibration.publish import calibrate_files, publish_result
    from na64reco.conditions import check_tag_name, tag_path
    from na64reco.errors import ConfigError
    from na64reco.geometry import check_beam_energy, load_setup

    first, last = args.runs
    if first > last:
        raise ConfigError(f"--runs {first} {last}: FIRST is after LAST")
    check_tag_name(args.tag, "--tag")  # a tag name becomes the file tags/<tag>.yaml
    if args.base_tag is not None:
        check_tag_name(args.base_tag, "--base-tag")
    if args.min_entries is not None and args.min_entries < 1:
        raise ConfigError(f"--min-entries {args.min_entries}: expected at least 1")
    if args.beam_energy is not None:
        check_beam_energy(args.beam_energy * GeV, "--beam-energy")
    if args.calib_dir is not None and not args.calib_dir.is_dir():
        raise ConfigError(f"--calib-dir {args.calib_dir}: not a directory")
    if tag_path(args.tag, args.calib_dir).exists():  # before the work (tags are immutable)
        raise ConfigError(f"tag {args.tag!r} exists already ({tag_path(args.tag, args.calib_dir)}); tags are "
                          "immutable, choose a new --tag")
    _check_one_period(args.setup, first, last)
    setup = load_setup(args.setup, run=first)  # the layout of the runs' period
    result = calibrate_files(args.kind, setup, args.files, first, base_tag=args.base_tag, root=args.calib_dir,
                             min_entries=args.min_entries, beam_energy_gev=args.beam_energy, runs=(first, last))
    path = publish_result(result, setup, args.tag, (first, last), base_tag=args.base_tag, root=args.calib_dir,
                          sources=args.files)
    print(result.summary())
    print(f"published tag {args.tag!r}: {path}")
    return 0
