"""Freeze an analysis, then open its signal box once, on the record.

The procedure (``docs/unblinding.md``), one module per concept:

1. Tune cuts on MC and on the sidebands of blinded data.
2. :func:`freeze` (:mod:`.ledger`) writes a *ledger*: the hashes (:mod:`.state`) of
   everything that defines the result -- selection file, calibration tag with every
   conditions file and the detector setup, library and processor sources with the
   installed blinding regions, processor name and options, every input file.  A ledger
   is never overwritten; freezing data that was unblinded before (:mod:`.registry`) needs
   ``force_new`` and a reason.
3. :func:`unblind` (:mod:`.procedure`) recomputes that state and refuses, naming each
   difference (:mod:`.diff`), unless it equals the frozen one; it needs an explicit
   confirmation, opens a session (:mod:`.guard`) whose token is bound to a secret held
   in memory, runs the processor unblinded, writes counts and plots (:mod:`.outputs`)
   and appends a record to hash-chained logs (:mod:`.audit`) beside the ledger, in
   ``audit_log`` and in the registries of the data set.  A frozen state that was
   unblinded before is not run again: the recorded result is returned.
"""

from na64reco.unblinding.audit import (
    AUDIT_FORMAT,
    DEFAULT_AUDIT_NAME,
    AuditLogError,
    append_audit_record,
    default_audit_log,
    previous_unblinding,
    read_audit_log,
)
from na64reco.unblinding.diff import Difference, diff_states
from na64reco.unblinding.ledger import LEDGER_FORMAT, LEDGER_VERSION, freeze, make_ledger, read_ledger, verify
from na64reco.unblinding.outputs import format_result, run_unblinded
from na64reco.unblinding.procedure import UnblindingResult, unblind
from na64reco.unblinding.registry import REGISTRY_ENV, registry_logs, user_registry
from na64reco.unblinding.state import (
    RUN_OPTIONS,
    analysis_state,
    calibration_state,
    canonical_json,
    check_options,
    code_roots,
    code_state,
    dataset_hash,
    files_state,
    sha256_file,
    state_hash,
)

__all__ = [
    "AUDIT_FORMAT", "DEFAULT_AUDIT_NAME", "LEDGER_FORMAT", "LEDGER_VERSION", "REGISTRY_ENV", "RUN_OPTIONS",
    "AuditLogError", "Difference", "UnblindingResult", "analysis_state", "append_audit_record",
    "calibration_state", "canonical_json", "check_options", "code_roots", "code_state", "dataset_hash",
    "default_audit_log", "diff_states", "files_state", "format_result", "freeze", "make_ledger",
    "previous_unblinding", "read_audit_log", "read_ledger", "registry_logs", "run_unblinded", "sha256_file",
    "state_hash", "unblind", "user_registry", "verify",
]
