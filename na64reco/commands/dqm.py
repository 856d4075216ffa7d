"""``na64reco dqm``: run quality of raw files, spill by spill, and the list of bad spills."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "dqm"
HELP = ("run quality of raw files spill by spill (trigger rate per beam particle, MSADC occupancy, "
        "pedestal, noise and MIP-like gain per channel, tracker hit fractions per plane): plots, "
        "dqm.json and bad_spills.yaml (for `na64reco run --bad-spills`)")


def add_arguments(parser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR", type=Path,
                        help="new directory for the plots, dqm.json and bad_spills.yaml")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    parser.add_argument("--tolerances", metavar="YAML", type=Path, default=None,
                        help="tolerances (default: calib/dqm/tolerances.yaml)")
    parser.add_argument("--calib-tag", metavar="T",
                        help="conditions tag (default: the setup's tag in calib/default_tags.yaml)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("files", nargs="+", metavar="FILES", help="raw files (paths or URLs)")


def run(args) -> int:
    from na64reco import dqm
    from na64reco.atomic import check_new_output, output_dir

    check_new_output(args.output, overwrite=args.overwrite, inputs=args.files)
    tolerances = dqm.load_tolerances(args.tolerances)
    files = dqm.measure_files(args.files, calib_tag=args.calib_tag)
    assessment = dqm.assess(files, tolerances)
    with output_dir(args.output, overwrite=args.overwrite, inputs=args.files) as staged:
        dqm.write_summary(assessment, staged / "dqm.json")
        dqm.write_bad_spills(assessment, staged / "bad_spills.yaml")
        if not args.no_plots:
            from na64reco.dqm_plots import dqm_plots

            (staged / "plots").mkdir()
            dqm_plots(assessment, staged / "plots")
    n = sum(len(f.spill) for f in files)
    print(f"{n} spills in {len(files)} file(s): {len(assessment.bad)} out of tolerance")
    if n < dqm.MIN_SPILLS:
        print(f"na64reco dqm: warning: {n} spill(s): a channel or plane is judged against the median of at least "
              f"{dqm.MIN_SPILLS} spills, so nothing was judged; the empty bad-spill list is no verdict on the run "
              "(dqm.json: judged false)", file=sys.stderr)
    for b in assessment.bad:
        print(f"  {b['file']} run {b['run']} spill {b['spill']}: {'; '.join(b['reasons'][:3])}"
              + (f" (+{len(b['reasons']) - 3} more)" if len(b["reasons"]) > 3 else ""))
    print(f"outputs written to {args.output}/ (bad-spill list: {args.output / 'bad_spills.yaml'})")
    return 0
