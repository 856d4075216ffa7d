"""``na64reco display``: draw one raw event from the top and the side."""

from __future__ import annotations

NAME = "display"
HELP = ("draw one event (top and side views: hits, fitted tracks, calorimeter energies; NA64mu or NA64e) "
        "to an image")


def add_arguments(p):
    p.add_argument("raw", help="raw ROOT file (a path or a URL: root://, https://, s3://)")
    p.add_argument("--event", type=int, required=True, help="event number (the 'event' branch)")
    p.add_argument("--output", "-o", required=True,
                   help="output image (.png, .pdf, .svg), written whole (replaced if it exists)")
    p.add_argument("--calib-tag", default=None,
                   help="calibration tag (default: the setup's tag in calib/default_tags.yaml)")


def run(args) -> int:
    import numpy as np

    from na64reco.atomic import output_file
    from na64reco.display import check_image_output, draw_event
    from na64reco.errors import ConfigError
    from na64reco.io.raw import open_raw

    check_image_output(args.output, "--output")
    with open_raw(args.raw) as raw:
        setup = raw.run_setup()  # (errors name the file)
        conds = raw.run_conditions(setup, args.calib_tag)
        numbers = raw.event_numbers()  # verified (a damaged tree header or basket is a RawFormatError)
        if numbers.size == 0:
            raise ConfigError(f"{args.raw}: no event {args.event}: the file holds no events (events failing the "
                              "trigger are not in the file); nothing to draw")
        where = np.nonzero(numbers == args.event)[0]
        if where.size == 0:
            raise ConfigError(f"{args.raw}: no event {args.event} (events {numbers.min()}..{numbers.max()}, "
                              f"{numbers.size} written; events failing the trigger are not in the file)")
        i = int(where[0])
        events = raw.events(i, i + 1)
        title = f"{args.raw} ({raw.setup}, {'simulation' if raw.has_truth else 'data'})"
        if raw.has_truth:
            from na64reco.io.raw import PROCESSES

            t = raw.truth(i, i + 1)
            names = {v: k for k, v in PROCESSES.items()}
            p_out = float(t["p_out"][0])  # NaN where there is none (NA64e: no outgoing spectrometer)
            title += (f"   truth: {names.get(int(t['process'][0]), '?')}, p_in = {t['p_in'][0]:.1f} GeV"
                      + (f", p_out = {p_out:.1f} GeV" if np.isfinite(p_out) else ""))
        with output_file(args.output) as staged:  # no half-written image after a crash
            draw_event(events, 0, setup, conds, title=title, output=staged, data=not raw.has_truth,
                       source=str(args.raw))
    print(f"event {args.event} of {args.raw} -> {args.output}")
    return 0
