"""The commands as a user runs them: the installed ``na64reco`` entry point in a
subprocess, with default options (plots on), in a temporary directory.

Unit tests call the library; these run what README and docs tell a user to type, so a
crash that only the command path reaches (a missing import in the plotting, say) fails
here.  Event counts are small; the simulated inputs are shared (``conftest.py``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # s per command: a hung command fails the test instead of the CI run (a loaded
#              shared machine with two test workers took >300 s for `demo --events 1000`)


def _entry_point() -> str:
    """The console script of the environment running the tests (else the one on PATH)."""
    found = shutil.which("na64reco", path=str(Path(sys.executable).parent)) or shutil.which("na64reco")
    if found is None:
        pytest.skip("the na64reco entry point is not installed (pip install -e .)")
    return found


def _env() -> dict:
    """The test's environment, with this checkout first on PYTHONPATH (so the entry point
    runs the code under test even if the editable install points elsewhere)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("MPLBACKEND", None)  # the backend matplotlib picks for a user
    return env


def na64reco(*args, cwd: Path, expect: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``na64reco ARGS`` in ``cwd`` (``env``: extra environment variables); fail with its
    output unless it exits ``expect``."""
    argv = [_entry_point(), *map(str, args)]
    proc = subprocess.run(argv, cwd=cwd, env=_env() | (env or {}), capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != expect:
        pytest.fail(f"`na64reco {' '.join(map(str, args))}` exited {proc.returncode} (expected {expect})\n"
                    f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-5000:]}")
    return proc


def assert_nonempty(path: Path) -> None:
    assert path.exists(), f"{path} was not written"
    if path.is_dir():
        assert any(path.iterdir()), f"{path}/ is empty"
    else:
        assert path.stat().st_size > 0, f"{path} is empty"


def pngs(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.png"))
    for p in found:
        assert p.stat().st_size > 1000, f"{p}: {p.stat().st_size} bytes, not a plot"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{p} is not a PNG"
    return found


def no_temp_siblings(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if re.match(r"\..*\.(tmp|old)-\d+", p.name)]
    assert not left, f"temporary outputs left in {folder}: {left}"


# ---- README ----------------------------------------------------------------------------
#: The one change the Quickstart test makes to the README lines: ``--events N`` becomes
#: ``--events max(N // EVENTS_DIVISOR, EVENTS_MIN)`` (100000 -> 2000, 20000 -> 1000).
EVENTS_DIVISOR = 50
EVENTS_MIN = 1000


def readme_quickstart() -> list[str]:
    """The command lines of README's "Quickstart" ```bash block, ``\\`` continuations joined."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## Quickstart\s*\n.*?^```bash\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no '## Quickstart' section with a ```bash block"
    lines = re.sub(r"\\\n\s*", " ", m.group(1)).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def scaled(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a == "--events":
            out[i + 1] = str(max(int(out[i + 1]) // EVENTS_DIVISOR, EVENTS_MIN))
    return out


def output_args(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--output", "-o", "--plot")]


def test_readme_quickstart_runs_line_by_line(tmp_path):
    lines = readme_quickstart()
    assert len(lines) >= 8 and all(line.startswith("na64reco ") for line in lines), lines
    written = []
    for line in lines:
        argv = scaled(shlex.split(line, comments=True))
        proc = na64reco(*argv[1:], cwd=tmp_path)
        for out in output_args(argv):
            assert_nonempty(tmp_path / out)
            written.append(out)
        if argv[1] == "cutflow":  # as the README says: the last cut-flow row of data reads "blinded"
            assert re.search(r"^signal_box\s+blinded\s+blinded$", proc.stdout, re.M), proc.stdout
    # every simulated file is read by another line (sig.root was once simulated and never used)
    argvs = [shlex.split(line, comments=True) for line in lines]
    for argv in argvs:
        if argv[1] == "simulate":
            name = argv[argv.index("--output") + 1]
            assert any(name in other[2:] for other in argvs if other[1] != "simulate"), \
                f"README simulates {name} but no Quickstart line uses it"
    for folder in {Path(w).parts[0] for w in written if (tmp_path / w).is_dir()}:
        assert pngs(tmp_path / folder / "plots"), f"{folder}/plots has no PNG"
    no_temp_siblings(tmp_path)


def test_readme_lists_outputs_that_git_ignores():
    """Everything the README examples write is ignored by git (but not docs/images)."""
    ignore = (REPO / ".gitignore").read_text().splitlines()
    names = {o for line in readme_quickstart() for o in output_args(shlex.split(line, comments=True))}
    names |= {"demo-output/", "na64reco-crash-20260101T000000Z-1.txt", ".out.tmp-123/"}
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for name in names:
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO)
        assert proc.returncode == 0, f"{name} (written by the README examples) is not git-ignored: {ignore}"
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", "docs/images/demo.png"], cwd=REPO)
    assert proc.returncode == 1, "docs/images/*.png are committed, they must not be ignored"


# ---- demo ------------------------------------------------------------------------------
def test_demo_default_path_with_plots(tmp_path):
    proc = na64reco("demo", "--events", 1000, "--output", "demo", cwd=tmp_path)
    out = tmp_path / "demo"
    assert "signal_box" in proc.stdout and "blinded" in proc.stdout
    assert {p.name for p in pngs(out)} == {"event_display.png", "summary.png"}
    assert len(pngs(out / "analysis" / "plots")) > 30
    for name in ("output.coffea", "hists.root", "cutflow.json", "cutflow.txt", "provenance.json"):
        assert_nonempty(out / "analysis" / name)
    prov = json.loads((out / "analysis" / "provenance.json").read_text())
    for entry in prov.values():  # files recorded where they are, not in the temporary directory
        assert entry["files"] and all(Path(f).parent.name == "demo" for f in entry["files"]), entry["files"]
    no_temp_siblings(tmp_path)
    # a second demo does not write into the first one
    err = na64reco("demo", "--events", 1000, "--output", "demo", cwd=tmp_path, expect=1).stderr
    assert len(err.strip().splitlines()) == 1 and "exists" in err and "--overwrite" in err


# ---- run on every executor -------------------------------------------------------------
#: (the futures run checks every file again; the dask run after the iterative one takes the check of
#: files older than the racy window from the file check cache)
EXECUTORS = {"iterative": [], "futures": ["--workers", "2", "--no-check-cache"], "dask": ["--workers", "2"]}


@pytest.fixture(scope="module")
def runs(small_na64mu_files, tmp_path_factory):
    """``na64reco run`` over the MC and the data file on each executor, plots on."""
    folder = tmp_path_factory.mktemp("runs")
    outs = {}
    for executor, extra in EXECUTORS.items():
        outs[executor] = folder / f"out-{executor}"
        na64reco("run", "--processor", "na64mu_invisible", "--executor", executor, *extra,
                 "--output", outs[executor], small_na64mu_files["mc"], small_na64mu_files["data"], cwd=folder)
    return outs


@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_run_writes_plots_for_mc_and_data(runs, executor):
    out = runs[executor]
    for name in ("output.coffea", "hists.root", "cutflow.json", "cutflow.txt", "provenance.json"):
        assert_nonempty(out / name)
    plots = pngs(out / "plots")
    for dataset in ("mc_mixture", "data"):
        names = {p.name for p in plots if p.name.startswith(dataset + "_")}
        assert f"{dataset}_cutflow.png" in names and f"{dataset}_p_out.png" in names, names
    no_temp_siblings(out.parent)


def test_run_cutflows_agree_across_executors(runs):
    def numbers(executor):
        summary = json.loads((runs[executor] / "cutflow.json").read_text())
        return {ds: {k: e[k] for k in ("cutflow", "nminusone", "regions")}
                | {"events_processed": e["provenance"]["events_processed"], "n_beam": e["provenance"]["n_beam"]}
                for ds, e in summary.items()}

    ref = numbers("iterative")
    assert set(ref) == {"mc_mixture", "data"}
    for executor in EXECUTORS:
        assert numbers(executor) == ref, executor


def test_cutflow_command_on_a_data_run(runs):
    text = na64reco("cutflow", runs["dask"], cwd=runs["dask"].parent).stdout
    data = text[text.index("== data"):]
    processed = int(re.search(r"events: (\d+) processed", data).group(1))
    initial = int(re.search(r"^initial\s+(\d+)", data, re.M).group(1))
    withheld = int(re.search(r"withheld \(blinded region, before the cut-flow\): (\d+)", data).group(1))
    assert withheld == processed - initial > 0
    assert re.search(r"^signal_box\s+blinded\s+blinded", data, re.M)
    # the N-1 rows of data that need the (withheld) box say so instead of showing a bare 0
    assert "(blinded data: every row but the box's own needs the box, which is withheld except" in data
    mc = text[text.index("== mc_mixture"):text.index("== data")]
    assert "withheld" not in mc and "blinded data" not in mc  # simulation is not blinded


# ---- display, reco, limit --------------------------------------------------------------
def test_display_reco_and_limit(small_na64mu_files, tmp_path):
    import uproot

    mc = small_na64mu_files["mc"]
    with uproot.open(mc) as f:
        numbers = f["events"]["event"].array(library="np")
    proc = na64reco("display", mc, "--event", int(numbers[5]), "--output", "event.png", cwd=tmp_path)
    assert "event.png" in proc.stdout and pngs(tmp_path) == [tmp_path / "event.png"]

    proc = na64reco("reco", mc, "--output", "mc.parquet", cwd=tmp_path)
    import pyarrow.parquet as pq

    assert pq.read_metadata(tmp_path / "mc.parquet").num_rows == numbers.size
    assert f"reconstructed {numbers.size} events" in proc.stdout

    proc = na64reco("limit", "--setup", "na64mu", "--mot", "1e10", "--efficiency", "0.1", "--masses", "0.01",
                    "0.1", "--plot", "limit.png", cwd=tmp_path)
    assert "plot written to limit.png" in proc.stdout
    assert_nonempty(tmp_path / "limit.png")
    no_temp_siblings(tmp_path)


# ---- freeze and unblind ----------------------------------------------------------------
def test_freeze_then_unblind_through_the_entry_point(small_na64mu_files, tmp_path):
    data = tmp_path / "data.root"
    shutil.copy(small_na64mu_files["data"], data)
    ledger = tmp_path / "frozen" / "ledger.json"
    proc = na64reco("freeze", "--processor", "na64mu_invisible", "--calib-tag", "na64mu-default",
                    "--ledger", ledger, data, cwd=tmp_path)
    assert "frozen na64mu_invisible" in proc.stdout and ledger.is_file()
    no_temp_siblings(ledger.parent)

    (tmp_path / "taken").mkdir()  # an existing output is refused before the box is opened
    err = na64reco("unblind", "--ledger", ledger, "--i-understand-this-opens-the-box", "--output", "taken",
                   cwd=tmp_path, expect=1).stderr
    assert len(err.strip().splitlines()) == 1 and "exists" in err
    assert not (ledger.parent / "unblinding_audit.jsonl").exists()

    proc = na64reco("unblind", "--ledger", ledger, "--i-understand-this-opens-the-box", "--output", "unblinded",
                    cwd=tmp_path)
    observed = int(re.search(r"signal box: (\d+) observed events", proc.stdout).group(1))
    counts = json.loads((tmp_path / "unblinded" / "unblinded_counts.json").read_text())
    assert counts["result"]["signal_box"]["events"] == observed
    assert counts["output_dir"] == str((tmp_path / "unblinded").resolve())
    assert pngs(tmp_path / "unblinded" / "plots")
    no_temp_siblings(tmp_path)

    proc = na64reco("unblind", "--ledger", ledger, "--i-understand-this-opens-the-box", "--output", "again",
                    cwd=tmp_path)
    assert "unblinded before" in proc.stdout and f"signal box: {observed} observed" in proc.stdout
    assert not (tmp_path / "again").exists()  # nothing re-run, nothing written


# ---- run quality ------------------------------------------------------------------------
def test_dqm_through_the_entry_point(tmp_path):
    """simulate with injected faults, then `na64reco dqm` with default options (plots on):
    the PNGs, dqm.json and a bad-spill list naming the faulty spills."""
    (tmp_path / "faults.yaml").write_text(
        "faults:\n"
        "  - {spill: 2, kind: dead_plane, plane: MM2Y}\n"
        "  - {spill: 3, kind: pedestal_jump, detector: HCAL, channel: 4, adc: -30}\n")
    na64reco("simulate", "--setup", "na64mu", "--events", "5000", "--trigger", "calibration", "--spill-particles",
             "1000", "--faults", "faults.yaml", "--output", "beam.root", "--quiet", cwd=tmp_path)
    proc = na64reco("dqm", "beam.root", "--output", "dqm", cwd=tmp_path)
    assert "5 spills in 1 file(s): 2 out of tolerance" in proc.stdout, proc.stdout
    names = {p.name for p in pngs(tmp_path / "dqm" / "plots")}
    assert {"rates_trigger_per_beam.png", "calo_occupancy.png", "calo_pedestal_shift.png",
            "tracker_hit_fraction.png"} <= names, names
    summary = json.loads((tmp_path / "dqm" / "dqm.json").read_text())
    assert summary["n_spills"] == 5 and summary["n_beam"] == 5000 and summary["n_beam_good"] == 3000
    assert [b["spill"] for b in summary["bad_spills"]] == [2, 3]
    assert "spill: 2" in (tmp_path / "dqm" / "bad_spills.yaml").read_text()
    no_temp_siblings(tmp_path)


# ---- simulate and inspect ----------------------------------------------------------------
def test_simulate_and_inspect_report_what_the_files_hold(tmp_path):
    """`simulate`'s summary line and `inspect`'s text and JSON agree with the files' trees."""
    import numpy as np
    import uproot

    from na64reco.io.raw import PROCESSES

    proc = na64reco("simulate", "--setup", "na64mu", "--events", 2000, "--seed", 5, "--run", 1001,
                    "--output", "mu.root", cwd=tmp_path)
    na64reco("simulate", "--setup", "na64mu", "--events", 1000, "--seed", 6, "--run", 1002, "--no-truth",
             "--output", "data.root", "--quiet", cwd=tmp_path)
    content = {}
    for name in ("mu.root", "data.root"):
        with uproot.open(tmp_path / name) as f:
            spills = f["spills"].arrays(["n_beam", "n_triggered"], library="np")
            content[name] = {"events": f["events"].num_entries, "spills": spills["n_beam"].size,
                             "beam": int(spills["n_beam"].sum()), "triggered": int(spills["n_triggered"].sum()),
                             "process": f["truth"]["process"].array(library="np") if "truth" in f else None}
    mu, data = content["mu.root"], content["data.root"]
    assert mu["beam"] == 2000 and data["beam"] == 1000 and data["process"] is None
    assert re.search(rf"^mu\.root: {mu['events']} triggered events of 2000 beam particles \({mu['spills']} spills, "
                     r"setup na64mu, run 1001\) in [\d.]+ s", proc.stdout, re.M), proc.stdout
    assert mu["events"] == mu["triggered"] > 0

    text = na64reco("inspect", "mu.root", "data.root", cwd=tmp_path).stdout
    lines = text.splitlines()
    assert re.match(rf"mu\.root: na64mu run 1001, format v\d+, {mu['events']} events in {mu['spills']} spills, "
                    r"2000 MOT, simulation \(", lines[0]), lines[0]
    names = {v: k for k, v in PROCESSES.items()}
    codes, counts = np.unique(mu["process"], return_counts=True)
    expected = {names[int(c)]: int(n) for c, n in zip(codes, counts, strict=True)}
    shown = dict(re.findall(r"^  (\S+)\s+(\d+)$", text, re.M))
    assert {k: int(v) for k, v in shown.items()} == expected and sum(expected.values()) == mu["events"]
    (data_line,) = [line for line in lines if line.startswith("data.root:")]
    assert re.match(rf"data\.root: na64mu run 1002, format v\d+, {data['events']} events in {data['spills']} "
                    r"spills, 1000 MOT, data \(", data_line), data_line

    infos = json.loads(na64reco("inspect", "--json", "mu.root", "data.root", cwd=tmp_path).stdout)
    assert [(i["events"], i["beam_particles"], i["has_truth"]) for i in infos] == \
        [(mu["events"], 2000, True), (data["events"], 1000, False)]
    assert infos[0]["processes"] == expected and "processes" not in infos[1]


# ---- calibrate ----------------------------------------------------------------------------
def test_calibrate_tracker_chain_as_in_the_docs(tmp_path):
    """docs/calibration.md's tracker chain (alignment -> momentum scale -> efficiency) through
    the entry point, default options, into a private calibration directory (NA64RECO_CALIB):
    every printed constant is the published one and agrees with the true detector (the
    default tag of calib/default_tags.yaml, with which the beam run was simulated)."""
    from hepunits import meter, tesla

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup

    calib = tmp_path / "calib"
    shutil.copytree(REPO / "calib", calib)
    env = {"NA64RECO_CALIB": str(calib)}
    repo_tags = sorted(p.name for p in (REPO / "calib" / "tags").iterdir())
    na64reco("simulate", "--setup", "na64mu", "--events", 4000, "--seed", 21, "--run", 1500, "--process", "beam",
             "--trigger", "calibration", "--output", "BEAM.root", "--quiet", cwd=tmp_path)
    outs = {}
    for kind, base, tag in (("alignment", "na64mu-default", "mu-align-1"),
                            ("momentum-scale", "mu-align-1", "mu-scale-1"),
                            ("efficiency", "mu-scale-1", "mu-eff-1")):
        proc = na64reco("calibrate", "--setup", "na64mu", "--kind", kind, "--runs", 1000, 1999, "--base-tag", base,
                        "--tag", tag, "BEAM.root", cwd=tmp_path, env=env)
        m = re.search(rf"^published tag '{tag}': (\S+)$", proc.stdout, re.M)
        assert m and Path(m.group(1)).resolve() == (calib / "tags" / f"{tag}.yaml").resolve(), proc.stdout
        outs[kind] = proc.stdout
    assert sorted(p.name for p in (REPO / "calib" / "tags").iterdir()) == repo_tags  # the package's calib/ untouched

    setup = load_setup("na64mu", run=1500)
    true = load_conditions(setup, 1500, root=calib)  # the simulation's constants: the default tag
    cond = load_conditions(setup, 1500, "mu-eff-1", root=calib)
    assert load_conditions(setup, 2000, "mu-eff-1", root=calib).field_integrals == {}  # outside --runs

    # alignment: "    MM2X      12.3 +- 4.5 um" for each free plane
    free = re.findall(r"^    (\S+)\s+(-?[\d.]+) \+- ([\d.]+) um$", outs["alignment"], re.M)
    assert len(free) >= 5, outs["alignment"]
    for plane, value, error in free:
        assert 1000 * cond.planes[plane].alignment == pytest.approx(float(value), abs=0.051), plane
        assert abs(float(value) - 1000 * true.planes[plane].alignment) < 5 * float(error) + 0.1, (plane, value)

    # momentum scale: "  MS1: field integral 1.23456 +- 0.00012 T m ..."
    scales = re.findall(r"^  (\S+): field integral ([\d.]+) \+- ([\d.]+) T m", outs["momentum-scale"], re.M)
    assert {m for m, _, _ in scales} == {"MS1", "MS2"}, outs["momentum-scale"]
    for magnet, value, error in scales:
        published = cond.field_integrals[magnet] / (tesla * meter)
        assert published == pytest.approx(float(value), abs=1e-5), magnet
        nominal = setup.magnets[magnet].field_integral / (tesla * meter)
        assert abs(float(value) - nominal) < 5 * float(error) + 1e-4, (magnet, value, nominal)

    # efficiency: "  MM1X      0.9712 +- 0.0021 ..." per plane
    effs = re.findall(r"^  (\S+)\s+([\d.]+) \+- ([\d.]+)\s+\d+ ", outs["efficiency"], re.M)
    assert len(effs) == len(setup.planes), outs["efficiency"]
    for plane, value, error in effs:
        assert cond.planes[plane].efficiency == pytest.approx(float(value), abs=1e-4), plane
        (p,) = [q for q in setup.planes if q.name == plane]
        assert abs(float(value) - true.plane_efficiency(p)) < 5 * float(error) + 0.01, (plane, value)
