"""Commands as a user types them never destroy their inputs, never leave a half-written output,
and answer a wrong option with one line naming it (no traceback, no "internal error").

reco refuses an output that is its raw file (by any name); simulate writes its file whole;
display draws NA64e events and checks its image name and input before any work; limit names
the option at fault; simulate's options that would be ignored are refused.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from na64reco import atomic, cli


def leftovers(folder):
    return [p.name for p in folder.iterdir() if re.match(r"\..*\.(tmp|old)-\d+", p.name)]


def one_line_error(capsys, argv, code=1) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code and len(err) == 1 and err[0].startswith(f"na64reco {argv[0]}: error:"), (rc, err)
    return err[0]


# ---- reco: the output is never the input ---------------------------------------------------
@pytest.mark.parametrize("alias", ["same", "dot", "hardlink", "symlink_out", "symlink_in"])
def test_reco_refuses_to_replace_its_raw_file(small_na64mu_files, tmp_path, monkeypatch, capsys, alias):
    import na64reco.export

    raw = tmp_path / "mu.root"
    shutil.copy(small_na64mu_files["mc"], raw)
    before = raw.read_bytes()
    monkeypatch.chdir(tmp_path)
    given, output = "mu.root", "mu.root"
    if alias == "dot":
        given, output = "./mu.root", str(tmp_path / "mu.root")
    elif alias == "hardlink":
        os.link(raw, tmp_path / "other.root")
        output = "other.root"
    elif alias == "symlink_out":
        (tmp_path / "other.root").symlink_to(raw)
        output = "other.root"
    elif alias == "symlink_in":
        (tmp_path / "other.root").symlink_to(raw)
        given = "other.root"

    def no_work(*args, **kwargs):
        raise AssertionError("reconstruction started")

    monkeypatch.setattr(na64reco.export, "reconstruct_file", no_work)
    err = one_line_error(capsys, ["reco", given, "-o", output, "--quiet"])
    assert "refusing to replace" in err and f"input {given}" in err and output in err
    assert raw.read_bytes() == before and not leftovers(tmp_path)


def test_check_new_output_refuses_a_file_that_is_an_input(tmp_path):
    a = tmp_path / "a.root"
    a.write_text("raw")
    os.link(a, tmp_path / "b.root")
    for out in (a, tmp_path / "b.root"):
        with pytest.raises(atomic.OutputExists, match="is the input"):
            atomic.check_new_output(out, overwrite=True, inputs=[a])
    assert atomic.check_new_output(tmp_path / "c.root", overwrite=True, inputs=[a]) == tmp_path / "c.root"
    assert atomic.check_new_output(a, overwrite=True, inputs=["https://example.org/a.root"]) == a


# ---- simulate: the file appears whole or not at all ---------------------------------------
SIM = ["simulate", "--setup", "na64mu", "--events", "400", "--spill-particles", "100", "--chunk-size", "100",
       "--seed", "3", "--quiet"]


@pytest.mark.parametrize("signal_exc, code, words", [
    (KeyboardInterrupt, "EXIT_INTERRUPTED", "interrupted"),
    (cli._Terminated, "EXIT_TERMINATED", "terminated (SIGTERM)"),
])
def test_a_signal_inside_a_compiled_kernel_is_an_interruption_not_a_bug(tmp_path, monkeypatch, capsys, signal_exc,
                                                                      code, words):
    """(Ctrl-C or SIGTERM arriving inside a numba kernel surfaces as "SystemError: CPUDispatcher(...) returned
    a result with an exception set", caused by the signal's exception: reported as an internal error with a
    crash file, exit 3, instead of 130 / 143)"""
    import na64reco.sim.generate as generate

    def in_kernel(*args, **kwargs):
        try:
            raise signal_exc()
        except BaseException as exc:
            raise SystemError("CPUDispatcher(<function _kernel>) returned a result with an exception set") from exc

    monkeypatch.setattr(generate, "simulate_spill", in_kernel)
    monkeypatch.setenv("NA64RECO_CRASH_DIR", str(tmp_path / "crash"))
    assert cli.main([*SIM, "--output", str(tmp_path / "beam.root")]) == getattr(cli, code)
    err = capsys.readouterr().err
    assert words in err and "internal error" not in err, err
    assert not (tmp_path / "crash").exists() and not leftovers(tmp_path)


def test_a_closed_output_pipe_ends_the_command_quietly(monkeypatch, capsys):
    """(`na64reco cutflow out/ --json | head` printed "error: [Errno 32] Broken pipe")"""
    import na64reco.commands.limit as limit

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(limit, "run", closed)
    assert cli.main(["limit", "--mot", "1e10", "--efficiency", "0.1", "--masses", "0.1"]) == cli.EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_interrupted_simulate_leaves_the_old_file_and_no_part(tmp_path, monkeypatch, capsys):
    import na64reco.sim.generate as generate

    out = tmp_path / "beam.root"
    out.write_bytes(b"an older file")
    real, calls = generate.simulate_spill, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after two spills were written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "simulate_spill", interrupted)
    assert cli.main([*SIM, "--output", str(out)]) == cli.EXIT_INTERRUPTED
    capsys.readouterr()
    assert len(calls) == 3 and out.read_bytes() == b"an older file" and not leftovers(tmp_path)
    out.unlink()

    def crash(*args, **kwargs):
        raise RuntimeError("crash")

    monkeypatch.setattr(generate, "simulate_spill", crash)
    with pytest.raises(RuntimeError):  # the Python API too
        generate.simulate("na64mu", 100, 1, 1, out)
    assert list(tmp_path.iterdir()) == []


def test_simulate_replaces_a_hard_linked_output_without_writing_into_it(tmp_path, capsys):
    from na64reco.io.raw import open_raw

    keep = tmp_path / "keep.root"
    keep.write_bytes(b"another name's content")
    os.link(keep, tmp_path / "beam.root")
    assert cli.main([*SIM, "--output", str(tmp_path / "beam.root")]) == 0
    assert keep.read_bytes() == b"another name's content"
    with open_raw(tmp_path / "beam.root") as f:
        assert f.spills()["n_beam"].sum() == 400
    assert not leftovers(tmp_path)


def test_simulate_first_spill_follows_the_duplicate_files_advice(tmp_path, capsys):
    """Two files of one seed's spills are refused as the same events, with the advice to simulate
    other spills with ``--first-spill``: an option of simulate, whose file holds the next spills."""
    import uproot

    from na64reco.campaign import campaign_exposure
    from na64reco.errors import ConfigError

    first, again = tmp_path / "first.root", tmp_path / "again.root"
    base = ["simulate", "--setup", "na64mu", "--events", "200", "--spill-particles", "100", "--seed", "5", "--quiet"]
    assert cli.main([*base, "--output", str(first)]) == 0
    assert cli.main([*base, "--output", str(again)]) == 0
    with pytest.raises(ConfigError, match="--first-spill"):
        campaign_exposure([first, again])
    assert cli.main([*base, "--first-spill", "2", "--output", str(again)]) == 0
    with uproot.open(again) as f:
        assert list(f["spills"]["spill"].array(library="np")) == [3, 4]
    assert campaign_exposure([first, again])[0] == 400
    err = one_line_error(capsys, [*base, "--first-spill", "-1", "--output", str(tmp_path / "x.root")])
    assert "--first-spill" in err and "-1" in err


# ---- simulate: options that would be ignored, and the mass in GeV ------------------------
@pytest.mark.parametrize("extra, named", [(["--process", "beam", "--mass", "0.1"], "--mass"),
                                          (["--process", "beam", "--coupling", "1e-4"], "--coupling"),
                                          (["--mass", "0.1"], "--mass")])  # the default mixture has no signal
def test_simulate_refuses_signal_options_without_signal(tmp_path, capsys, extra, named):
    out = tmp_path / "x.root"
    err = one_line_error(capsys, ["simulate", "--setup", "na64mu", "--events", "10", "--output", str(out), *extra])
    assert named in err and "signal" in err and not out.exists()


def test_simulate_mass_error_says_gev(tmp_path, capsys):
    err = one_line_error(capsys, ["simulate", "--setup", "na64mu", "--events", "10", "--process", "signal",
                                  "--mass", "-1", "--output", str(tmp_path / "x.root")])
    assert "--mass" in err and "got -1" in err and "1000" not in err


def test_simulate_signal_still_takes_mass_and_coupling(tmp_path, capsys):
    from na64reco.io.raw import open_raw

    out = tmp_path / "sig.root"
    assert cli.main(["simulate", "--setup", "na64mu", "--events", "50", "--process", "signal", "--mass", "0.1",
                     "--coupling", "1e-4", "--output", str(out), "--quiet"]) == 0
    with open_raw(out) as f:
        assert f.meta["simulation"]["mass_gev"] == pytest.approx(0.1) and f.meta["simulation"]["coupling"] == 1e-4


# ---- simulate --faults: YAML errors name the file, line and column ------------------------
@pytest.mark.parametrize("text, line", [("faults:\n  - {spill: 2, kind: dead_plane, plane: MM2Y\n  - {spill: 3}\n", 3),
                                        ("faults:\n  - spill: 2\n   kind: x\n", 3),
                                        ("- {spill: 2, spill: 3, kind: dead_plane, plane: MM2Y}\n", 1)])
def test_faults_yaml_errors_name_file_line_and_column(tmp_path, capsys, text, line):
    faults = tmp_path / "faults.yaml"
    faults.write_text(text)
    err = one_line_error(capsys, ["simulate", "--setup", "na64mu", "--events", "10", "--faults", str(faults),
                                  "--output", str(tmp_path / "x.root")])
    assert f"{faults}: malformed YAML (line {line}, column" in err and "<unicode string>" not in err
    assert re.search(r"expected|not allowed|twice", err), err


# ---- display ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def na64e_file(tmp_path_factory):
    from na64reco.sim.generate import simulate

    path = tmp_path_factory.mktemp("na64e") / "e.root"
    simulate("na64e", 300, 1, 1, path)
    return path


def test_display_draws_na64e_events(na64e_file, tmp_path, capsys):
    import uproot

    with uproot.open(na64e_file) as f:
        first = int(f["events"]["event"].array(library="np")[0])
    out = tmp_path / "e.png"
    assert cli.main(["display", str(na64e_file), "--event", str(first), "-o", str(out)]) == 0, capsys.readouterr()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not leftovers(tmp_path)


@pytest.mark.parametrize("name", ["x.txt", "x"])
def test_display_checks_the_image_name_first(na64e_file, tmp_path, monkeypatch, capsys, name):
    import na64reco.io.raw

    monkeypatch.setattr(na64reco.io.raw, "open_raw", lambda *a, **k: pytest.fail("the raw file was opened"))
    err = one_line_error(capsys, ["display", str(na64e_file), "--event", "1", "-o", str(tmp_path / name)])
    assert name in err and ".png" in err and ".pdf" in err and not list(tmp_path.iterdir())


def test_display_of_a_file_without_events(tmp_path, capsys):
    from na64reco.io.raw import open_raw
    from na64reco.sim.generate import simulate

    empty = tmp_path / "empty.root"
    simulate("na64mu", 1, 1, 1, empty)  # one beam muon: not triggered
    with open_raw(empty) as f:
        assert f.n_events == 0
    err = one_line_error(capsys, ["display", str(empty), "--event", "1", "-o", str(tmp_path / "e.png")])
    assert str(empty) in err and "no events" in err and not (tmp_path / "e.png").exists()


# ---- limit --------------------------------------------------------------------------------
LIMIT = ["limit", "--efficiency", "0.1", "--masses", "0.01", "0.1"]


def test_limit_checks_the_plot_name(tmp_path, capsys):
    err = one_line_error(capsys, [*LIMIT, "--mot", "1e10", "--plot", str(tmp_path / "x.txt")])
    assert "--plot" in err and "x.txt" in err and ".png" in err and not list(tmp_path.iterdir())


def test_limit_names_x_min(capsys):
    err = one_line_error(capsys, [*LIMIT, "--mot", "1e10", "--x-min", "1.2"])
    assert "--x-min" in err and "1.2" in err and "m < E0 (1 - x_min)" not in err
    err = one_line_error(capsys, ["limit", "--efficiency", "0.1", "--masses", "100", "--mot", "1e10",
                                  "--x-min", "0.5"])
    assert "--x-min 0.5" in err and "m < E0 (1 - x_min) = 80 GeV" in err


@pytest.mark.parametrize("args, words", [
    (["--efficiency", "1e-300", "--masses", "0.1"], ("no finite limit at 0.1 GeV", "--efficiency 1e-300")),
    (["--efficiency", "0.1", "--masses", "0.1", "--cl", "0.99999"], ("99.999% CL upper limit on signal events",)),
])
def test_limit_at_the_edges_of_floating_point_and_confidence(capsys, args, words):
    """(an efficiency of 1e-300 printed an infinite g90; --cl 0.99999 failed in the root finder's bracket)"""
    code = cli.main(["limit", "--mot", "1e10", *args])
    out, err = capsys.readouterr()
    assert code == (1 if "no finite" in words[0] else 0), err
    assert all(w in (err if code else out) for w in words), (out, err)


@pytest.mark.parametrize("setup, wrong, right", [("na64mu", "--eot", "--mot"), ("na64e", "--mot", "--eot")])
def test_limit_refuses_the_other_setups_exposure(capsys, setup, wrong, right):
    err = one_line_error(capsys, [*LIMIT, "--setup", setup, right, "1e10", wrong, "1e12"])
    assert wrong in err and right in err and setup in err


# ---- found by a review of the fixes above -----------------------------------------------------
def test_reco_refuses_its_raw_file_given_as_a_file_url(small_na64mu_files, tmp_path, monkeypatch, capsys):
    """(`reco file://$PWD/b.root --output b.root` read the file through the URL and replaced it)"""
    raw = tmp_path / "b.root"
    shutil.copy(small_na64mu_files["mc"], raw)
    before = raw.read_bytes()
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, ["reco", f"file://{raw}", "-o", "b.root", "--quiet"])
    assert "refusing to replace" in err and raw.read_bytes() == before


def test_the_python_api_refuses_to_export_onto_its_raw_file(small_na64mu_files, tmp_path):
    """(`reconstruct_file('api.root', 'api.root')` destroyed the raw file: the check was in the command only)"""
    from na64reco.export import reconstruct_file

    raw = tmp_path / "api.root"
    shutil.copy(small_na64mu_files["mc"], raw)
    before = raw.read_bytes()
    with pytest.raises(atomic.OutputExists, match="refusing to replace"):
        reconstruct_file(raw, raw)
    assert raw.read_bytes() == before


def test_a_terminated_simulate_leaves_no_part(tmp_path, monkeypatch, capsys):
    """SIGTERM (a batch system's kill, `timeout`) unwinds like Ctrl-C: it left `.beam.tmp-<pid>.root`,
    which no later run removes (the name holds the process id)."""
    import signal

    import na64reco.sim.generate as generate

    real, calls = generate.simulate_spill, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "simulate_spill", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main([*SIM, "--output", str(tmp_path / "beam.root")]) == cli.EXIT_TERMINATED
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == before


def test_simulate_refuses_a_fault_outside_its_spills(tmp_path, capsys):
    """(`--first-spill 2` with a fault in spill 1 injected nothing, silently)"""
    faults = tmp_path / "faults.yaml"
    faults.write_text("- {spill: 1, kind: dead_plane, plane: MM1X}\n")
    err = one_line_error(capsys, [*SIM, "--output", str(tmp_path / "f.root"), "--first-spill", "2",
                                  "--faults", str(faults)])
    assert "fault in spill 1: the file holds spills 3-" in err and not (tmp_path / "f.root").exists()


def test_limit_with_both_exposures_names_the_one_to_leave_out(capsys):
    err = one_line_error(capsys, ["limit", "--mot", "1e10", "--eot", "1e10", "--efficiency", "0.1",
                                  "--masses", "0.1"])
    assert "--eot 1e+10 is an option of setup na64e" in err and "leave it out" in err


@pytest.mark.parametrize("setup_name", ["na64mu", "na64e"])
def test_the_display_summary_names_what_the_setup_has(setup_name, small_na64mu_files, na64e_file):
    """NA64e: no p_out (one spectrometer), the SRD energy; NA64mu: p_out, no SRD (it showed
    "E_SRD = nan MeV" after the NA64e fix)."""
    from na64reco.conditions import load_conditions
    from na64reco.display import draw_event
    from na64reco.geometry import load_setup
    from na64reco.io.raw import open_raw

    path = na64e_file if setup_name == "na64e" else small_na64mu_files["mc"]
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        fig = draw_event(raw.events(0, 1), 0, setup, load_conditions(setup, raw.run, None))
    summary = fig.axes[0].get_title(loc="left")
    assert ("SRD" in summary) == (setup_name == "na64e") and ("p_{out}" in summary) == (setup_name == "na64mu")
    assert "nan" not in summary
