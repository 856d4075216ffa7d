"""API freeze: the public names users and notebooks rely on.  Removing or renaming one
must be a deliberate change of this list (and of the docs), not an accident."""

import importlib

import pytest

PUBLIC = {
    "na64reco.io": ["open_raw", "RawWriter", "RawFile", "FORMAT_VERSION", "PROCESSES"],
    "na64reco.io.location": ["is_url", "file_info", "open_bytes", "display_name", "FileInfo"],
    "na64reco.geometry": ["load_setup", "Setup", "SETUPS"],
    "na64reco.conditions": ["load_conditions", "default_tag", "publish", "nominal_content", "RunConditions"],
    "na64reco.sim": ["simulate"],
    "na64reco.reco.event": ["reconstruct", "attach_truth"],
    "na64reco.export": ["reconstruct_file", "read_reco", "iterate_reco"],
    "na64reco.reco.kinematics": ["momentum_vectors", "momentum_components", "muon_vectors", "restore_vectors",
                                 "MUON_VECTORS", "MUON_MASS_GEV"],
    "na64reco.reco.calo": ["reconstruct_calo"],
    "na64reco.reco.tracking": ["reconstruct_tracks", "event_display"],
    "na64reco.display": ["draw_event"],
    "na64reco.selection": ["load_selection"],
    "na64reco.selection.blinding": ["UnblindingToken", "apply_blinding", "load_protection", "protection_path"],
    "na64reco.runner": ["run_files", "RunOptions", "save_outputs", "write_outputs", "cutflow_summary",
                        "load_fileset", "fileset_from_files", "local_cluster"],
    "na64reco.atomic": ["output_dir", "output_file", "write_new_file", "check_new_output", "OutputExists"],
    "na64reco.dask_worker": ["dask_setup", "dask_teardown"],
    "na64reco.physics.darkbrem": ["dsigma_dx", "sigma_total", "x_pdf", "sample_x"],
    "na64reco.physics.gminus2": ["delta_a_mu", "g_band"],
    "na64reco.physics.yields": ["expected_signal"],
    "na64reco.stats.limits": ["cls_upper_limit", "poisson_upper_limit", "coupling_limit"],
    "na64reco.background": ["fit_tail", "misreconstruction_background", "mc_component", "BackgroundTable"],
    "na64reco.efficiency": [],
    "na64reco.unblinding": ["freeze", "verify", "unblind", "read_audit_log", "format_result", "AuditLogError",
                            "UnblindingResult", "user_registry"],
    "processors": ["get_processor"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_exist(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost public names: {missing}"


def test_processors_are_registered():
    from processors import PROCESSORS, get_processor

    assert set(PROCESSORS) == {"na64mu_invisible", "na64e_invisible"}
    for name in PROCESSORS:
        assert get_processor(name).NAME == name
