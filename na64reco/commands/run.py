"""``na64reco run``: run a blinded analysis processor over raw files and save the outputs.

    na64reco run --processor na64mu_invisible --executor dask --workers 2 \\
        --output out/ run1.root run2.root
    na64reco run --processor na64e_invisible --fileset fileset.yaml --output out/

Data (files without truth) are always blinded; there is no option to open the box.
See docs/running.md.
"""

from __future__ import annotations

import sys

from na64reco.errors import ConfigError
from na64reco.job_defaults import EXECUTORS, RUN_CHUNK

NAME = "run"
HELP = "run a blinded analysis processor (iterative, futures or dask) and save histograms, cut-flow, plots"


def add_arguments(parser) -> None:
    from processors import PROCESSORS

    parser.add_argument("--processor", required=True, choices=PROCESSORS, help="analysis processor")
    parser.add_argument("--executor", choices=EXECUTORS, default="iterative", help="coffea executor")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes (futures) or dask workers")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="dask scheduler to connect to (default: start a LocalCluster)")
    parser.add_argument("--chunksize", type=int, default=RUN_CHUNK, help="events per chunk")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="report and skip unreadable/foreign files instead of stopping")
    parser.add_argument("--retries", type=int, default=0,
                        help="retries of a chunk after a transient error (time-out, lost connection); "
                             "default %(default)s: no retry")
    parser.add_argument("--calib-tag", metavar="T",
                        help="calibration tag (default: the setup's tag in calib/default_tags.yaml)")
    parser.add_argument("--selection", metavar="YAML", help="selection file (default: the processor's)")
    parser.add_argument("--output", required=True, metavar="OUTDIR",
                        help="output directory; it appears only when the run has finished (written "
                             "into a temporary sibling, then renamed); it must not exist unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUTDIR as a whole (nothing of the old run is kept)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG control plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fileset", metavar="FILESET.yaml",
                        help="datasets and their files (instead of FILES; default: none)")
    parser.add_argument("--dataset", metavar="NAME", help="put all FILES in one dataset NAME (letters, digits, "
                        "_ . + -; one sample: not data and simulation, nor two triggers, beam energies, "
                        "processes or signal masses) "
                        "(default: group them by content: data, mc_<process>, mc_signal_m<mass>GeV, with a "
                        "suffix such as _calibration, _100GeV or _2023 for files that differ in trigger, beam "
                        "energy or period; docs/running.md, \"Datasets\")")
    parser.add_argument("--bad-spills", metavar="FILE",
                        help="bad-spill list (bad_spills.yaml of `na64reco dqm`): the events of those spills "
                             "are dropped and the spills left out of the MOT/EOT (listed in the provenance); "
                             "default: none")
    parser.add_argument("--no-check-cache", action="store_true",
                        help="check every file again, also those checked by an earlier run and unchanged since "
                             "(default: their check is taken from ~/.cache/na64reco, or $NA64RECO_CACHE_DIR)")
    parser.add_argument("files", nargs="*", metavar="FILES", help="raw files (or --fileset)")


def run(args) -> int:
    from na64reco.atomic import check_new_output
    from na64reco.runner import (
        RunOptions,
        cutflow_summary,
        fileset_from_files,
        format_summary,
        load_fileset,
        run_files,
        save_outputs,
    )

    if bool(args.fileset) == bool(args.files):
        raise ConfigError("give either FILES or --fileset FILESET.yaml (not both, not neither)")
    if args.executor == "iterative" and args.workers != 1:
        raise ConfigError("--workers needs --executor futures or dask")
    if args.scheduler and args.executor != "dask":
        raise ConfigError("--scheduler needs --executor dask")
    # the options checked first (a --scheduler that is no address, ...): before the files are read
    opts = RunOptions(args.processor, executor=args.executor, workers=args.workers,
                      scheduler=args.scheduler, chunksize=args.chunksize,
                      skip_bad_files=args.skip_bad_files, retries=args.retries,
                      calib_tag=args.calib_tag, selection=args.selection,
                      status=not args.no_progress, bad_spills=args.bad_spills,
                      check_cache=not args.no_check_cache)
    fileset = load_fileset(args.fileset) if args.fileset else fileset_from_files(args.files, args.dataset)
    inputs = [f for files in fileset.values() for f in files] + ([args.fileset] if args.fileset else []) \
        + ([args.bad_spills] if args.bad_spills else [])
    check_new_output(args.output, overwrite=args.overwrite, inputs=inputs)  # before hours of work
    out = run_files(fileset, opts)
    outdir = save_outputs(out, args.output, plots=not args.no_plots, overwrite=args.overwrite, inputs=inputs)
    print(format_summary(cutflow_summary(out)))
    print(f"outputs written to {outdir}/")
    if args.bad_spills:
        from na64reco.bad_spills import bad_spills_judged, load_bad_spills

        listed = len(load_bad_spills(args.bad_spills))
        if listed and not any(ds["provenance"].excluded_spills for ds in out.values()):  # (empty: a good run's)
            print(f"na64reco run: warning: none of the {listed} spills of --bad-spills {args.bad_spills} is in the "
                  "input files (a list of another run?): nothing was dropped", file=sys.stderr)
        if not bad_spills_judged(args.bad_spills):
            print(f"na64reco run: warning: --bad-spills {args.bad_spills} says judged: false (na64reco dqm had too few "
                  "spills to judge any): its spills are no verdict on the run's quality", file=sys.stderr)
    return 0
