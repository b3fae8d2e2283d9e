"""golfkit quant: int8 baseline, round-to-nearest int-k and GPTQ quantizers, Hessian calibration,
a versioned entropy-coded artifact, an exact byte-budget fitter and a per-tensor report.

Takes any torch module or state_dict; imports nothing from golf.
"""
from __future__ import annotations

from .artifact import (FORMAT_VERSION, MAGIC, SUPPORTED_VERSIONS, check_artifact_config,
                       load_artifact, parse_artifact, save_artifact)
from .baseline import baseline_int8_state, baseline_int8_zlib_blob
from .calibrate import collect_hessians, collect_error_weights
from .core import (BudgetFit, FitSession, QuantizedModel, QuantRun, loss_slopes, open_fit,
                   quantize_model)
from .errors import ArtifactError, BudgetError, ConfigMismatchError, QuantError
from .gptq import gptq_quantize
from .policy import ClassPolicy, ClipRule, QuantPolicy, classify
from .report import format_report, write_report

__all__ = ["collect_hessians", "collect_error_weights", "quantize_model", "open_fit", "FitSession", "BudgetFit", "QuantRun", "loss_slopes", "QuantizedModel", "QuantPolicy", "ClassPolicy",
           "ClipRule", "classify", "save_artifact", "load_artifact", "parse_artifact",
           "check_artifact_config", "baseline_int8_zlib_blob", "baseline_int8_state",
           "gptq_quantize", "write_report", "format_report", "QuantError", "BudgetError",
           "ArtifactError", "ConfigMismatchError", "MAGIC", "FORMAT_VERSION",
           "SUPPORTED_VERSIONS"]
