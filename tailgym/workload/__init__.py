"""Request workloads: the Workload container, CSV traces, synthetic generators, specs."""

from .arrivals import ARRIVAL_PROCESSES, arrival_times, bursty_arrivals, gamma_arrivals, poisson_arrivals
from .core import UnsortedArrivalsWarning, Workload, WorkloadError
from .csv_loader import load_csv, parse_columns
from .resolve import TRACES, load_workload
from .synthetic import PRESETS, LengthDist, LogNormal, Mixture, Pareto, Resample, Uniform, preset, synthetic

__all__ = [
    "ARRIVAL_PROCESSES",
    "PRESETS",
    "TRACES",
    "LengthDist",
    "LogNormal",
    "Mixture",
    "Pareto",
    "Resample",
    "Uniform",
    "UnsortedArrivalsWarning",
    "Workload",
    "WorkloadError",
    "arrival_times",
    "bursty_arrivals",
    "gamma_arrivals",
    "load_csv",
    "load_workload",
    "parse_columns",
    "poisson_arrivals",
    "preset",
    "synthetic",
]
