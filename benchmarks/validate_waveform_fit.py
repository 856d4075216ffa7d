"""Calorimeter energies of two waveform kernels against truth, on one file.

    python benchmarks/validate_waveform_fit.py --before BEFORE_DIR FILE.root [FILE2.root ...]

``BEFORE_DIR``: source tree of the earlier version (``git archive <commit> | tar -x -C DIR``).
For each file, ``reconstruct_calo`` runs once with the earlier tree's ``_waveform_kernel``
(per-digit conditions) and once with this tree's ``_fit_digits``; printed per calorimeter: the
mean and rms of E_reco / E_true for events with E_true above 1 GeV (with their statistical errors), the slope of a
straight-line fit E_reco vs E_true (linearity), the spread of digit times around the
event master time, and the
number of digits with each flag.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco import calo
from na64reco.reco import waveform as W


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    path = args.before / "na64reco" / "reco" / "waveform.py"
    old = types.ModuleType("waveform_before")
    sys.modules[old.__name__] = old
    exec(compile(path.read_text().replace("cache=True", "cache=False"), str(path), "exec"), old.__dict__)
    def before(adc, cond, pe, po, noise, gain, offset, status, *args):  # the earlier per-digit kernel
        return old._waveform_kernel(adc, pe[cond], po[cond], noise[cond], gain[cond], offset[cond],
                                    status[cond].astype(np.int64), *args)

    # reconstruct_digits calls _fit_digits (conditions tables and each digit's entry) since issue 11's sixth pass
    kernels = {"before": before, "this tree": W._fit_digits}
    for file in args.files:
        with open_raw(file) as f:
            setup = load_setup(f.setup, run=f.run)
            cond = load_conditions(setup, f.run)
            events = f.events()
            truth = f.truth()
        print(f"{file}: {len(events)} events, setup {setup.name}")
        for name, kernel in kernels.items():
            W._fit_digits = kernel
            out = calo.reconstruct_calo(events, setup, cond)
            digits, ev, t_master = calo.digits_of_events(events, setup, cond)
            line = [f"  {name:10s}"]
            for key, tkey in (("ecal_energy", "e_ecal"), ("hcal_energy", "e_hcal")):
                e, t = np.asarray(out[key]), np.asarray(truth[tkey], dtype=float)
                sel = (t > 1.0) & np.isfinite(e)
                r = e[sel] / t[sel]
                m, s = r.mean(), r.std()
                slope = np.polyfit(t[sel], e[sel], 1)[0] if sel.sum() > 2 else np.nan
                line.append(f"{key}: n={sel.sum()} <E/Etrue>={m:.5f}+-{s / np.sqrt(sel.sum()):.5f} "
                            f"rms={s:.5f}+-{s / np.sqrt(2 * sel.sum()):.5f} slope={slope:.5f}")
            good = digits.good & (digits.amplitude > 50)
            dt = (digits.time - t_master[ev])[good]
            line.append(f"digit time - master time (amplitude > 50 ADC, n={good.sum()}): mean={dt.mean():.4f} "
                        f"rms={dt.std():.4f}+-{dt.std() / np.sqrt(2 * good.sum()):.4f} ns")
            line.append("flags " + " ".join(f"{b}:{int(np.sum(digits.flags & b != 0))}" for b in (1, 2, 4)))
            print("\n    ".join(line))
        W._fit_digits = kernels["this tree"]


if __name__ == "__main__":
    main()
