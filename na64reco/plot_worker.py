"""A process drawing a share of the control plots for :func:`na64reco.plotting.control_plots`.

    python -m na64reco.plot_worker INPUTS.pickle OUTDIR SHARE SHARES

``INPUTS.pickle``: ``(out, selection)`` as ``control_plots`` wrote it; the plots number
``SHARE``, ``SHARE + SHARES``, ... of :func:`na64reco.plotting.control_specs` are written to
``OUTDIR``.  A fresh interpreter: nothing of the caller's script is run again here.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    inputs, outdir, share, shares = argv
    from na64reco.plotting import write_control_share

    out, selection = pickle.loads(Path(inputs).read_bytes())
    write_control_share(out, Path(outdir), selection, int(share), int(shares))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
