"""Request workloads: the Workload container, CSV and JSONL traces, synthetic generators,
ServeGen's generated production workload, specs, and prefix content (engine block keys, the
cache-hit ceiling)."""

from .arrivals import ARRIVAL_PROCESSES, arrival_times, bursty_arrivals, gamma_arrivals, poisson_arrivals
from .core import UnsortedArrivalsWarning, Workload, WorkloadError
from .csv_loader import load_csv, parse_columns
from .jsonl_loader import load_jsonl
from .prefix import engine_block_keys, hit_ceiling
from .resolve import TRACES, load_workload
from .servegen import servegen_workload
from .synthetic import PRESETS, LengthDist, LogNormal, Mixture, Pareto, Prefixes, Resample, Uniform, preset, synthetic

__all__ = [
    "ARRIVAL_PROCESSES",
    "PRESETS",
    "TRACES",
    "LengthDist",
    "LogNormal",
    "Mixture",
    "Pareto",
    "Prefixes",
    "Resample",
    "Uniform",
    "UnsortedArrivalsWarning",
    "Workload",
    "WorkloadError",
    "arrival_times",
    "bursty_arrivals",
    "engine_block_keys",
    "gamma_arrivals",
    "hit_ceiling",
    "load_csv",
    "load_jsonl",
    "load_workload",
    "parse_columns",
    "poisson_arrivals",
    "preset",
    "servegen_workload",
    "synthetic",
]
