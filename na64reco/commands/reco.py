"""``na64reco reco``: raw file -> one row per event (Parquet or ROOT) with provenance.

The fields, the muon vectors ``mu_in`` / ``mu_out`` and how each format stores them:
``docs/reco-output.md``.
"""

from __future__ import annotations

from pathlib import Path

from na64reco.job_defaults import EXPORT_CHUNK

NAME = "reco"
HELP = "reconstruct a raw file into a per-event table (Parquet or ROOT)"


def add_arguments(p):
    p.add_argument("raw", help="raw ROOT file (na64raw format; a path or a URL: root://, https://, s3://)")
    p.add_argument("--output", "-o", required=True,
                   help="output .parquet (or .root) file, written whole at the end (replaced if it exists, "
                        "unless it is the raw file)")
    p.add_argument("--calib-tag", default=None,
                   help="calibration tag (default: the setup's tag in calib/default_tags.yaml)")
    p.add_argument("--chunk-size", type=int, default=EXPORT_CHUNK,
                   help="events per chunk (bounds the memory; the progress bar advances by chunks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from na64reco.atomic import check_new_output, output_file
    from na64reco.errors import ConfigError
    from na64reco.export import reconstruct_file

    if args.chunk_size <= 0:
        raise ConfigError(f"--chunk-size must be positive, got {args.chunk_size}")
    if Path(args.output).suffix not in (".parquet", ".root"):
        raise ConfigError(f"--output {args.output}: must end in .parquet or .root")
    check_new_output(args.output, overwrite=True, inputs=[args.raw])  # replacing the raw file would delete it
    with output_file(args.output) as staged:  # a crash leaves no half-written table
        summary = reconstruct_file(args.raw, staged, calib_tag=args.calib_tag,
                                   chunk_size=args.chunk_size, progress=not args.quiet)
    summary["output"] = args.output
    print(f"reconstructed {summary['events']} events of run {summary['run']} ({summary['setup']}, "
          f"calibration tag {summary['calibration_tag']}) -> {summary['output']}")
    blinding = summary.get("blinding")
    if blinding:
        print(f"data: {blinding['withheld_events']} events withheld (protected region "
              f"{blinding['withheld_region']}; only `na64reco unblind` opens it)")
    return 0
