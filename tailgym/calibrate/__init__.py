"""Fit step-time profiles (:mod:`tailgym.hardware`) to real GPU timings.

``readers`` turns splitwise, vidur and tailgym timing files into step
observations, ``fit`` fits and scores the model, ``cli`` is ``tailgym calibrate``.
"""

from tailgym.calibrate.cli import SHIPPED, build_shipped_profiles, calibrate_file, cli
from tailgym.calibrate.fit import calibrate, fit_max_affine, holdout_errors, nnls, regimes
from tailgym.calibrate.readers import (
    READERS,
    TAILGYM_COLUMNS,
    CalibrationError,
    Observations,
    read_splitwise,
    read_tailgym_csv,
    read_vidur_mlp,
    write_tailgym_csv,
)

__all__ = [
    "READERS", "SHIPPED", "TAILGYM_COLUMNS", "CalibrationError", "Observations", "build_shipped_profiles",
    "calibrate", "calibrate_file", "cli", "fit_max_affine", "holdout_errors", "nnls", "read_splitwise", "regimes",
    "read_tailgym_csv", "read_vidur_mlp", "write_tailgym_csv",
]
