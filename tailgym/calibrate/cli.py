"""``tailgym calibrate``: fit a profile JSON from a timing file; rebuild the shipped profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tailgym.calibrate.fit import calibrate
from tailgym.calibrate.readers import READERS, CalibrationError
from tailgym.data import DATASETS, DataError, data_path
from tailgym.hardware import PROFILES_DIR, StepTimeModel

# (data set, format, prefix, model, gpu, tp) of every shipped profile.
SHIPPED = (
    *(("splitwise-perf-model", "splitwise", "splitwise", "llama2-70b", gpu, tp)
      for gpu in ("a100-80gb", "h100-80gb", "h100-80gb-pcap") for tp in (2, 4, 8)),
    *(("splitwise-perf-model", "splitwise", "splitwise", "bloom-176b", gpu, 8)
      for gpu in ("a100-80gb", "h100-80gb", "h100-80gb-pcap")),
    ("vidur-h100-llama2-7b-mlp", "vidur-mlp", "vidur", "llama2-7b", "h100-80gb", 1),
    ("vidur-a100-llama3-8b-mlp", "vidur-mlp", "vidur", "llama3-8b", "a100-80gb", 1),
)


def resolve(file: str, data_dir=None) -> Path:
    """``file`` as a path if it exists, else as a data set name (:func:`tailgym.data.data_path`)."""
    if Path(file).is_file():
        return Path(file)
    if file in DATASETS:
        return data_path(file, data_dir=data_dir)
    raise CalibrationError(f"{file}: no such file, and not a data set name ({', '.join(sorted(DATASETS))})")


def _label(file: str, path: Path) -> str:
    return file if file in DATASETS else path.name


def calibrate_file(file: str, fmt: str, model: str, gpu: str, tp: int, *, name: str | None = None,
                   holdout: str | None = None, data_dir=None) -> StepTimeModel:
    """Read ``file`` (path or data set name) in format ``fmt`` and fit; ``holdout`` (a file in the
    same format) measures holdout_* on its grid points the fit never saw."""
    read = READERS[fmt]
    path = resolve(file, data_dir)
    source = f"tailgym calibrate {_label(file, path)} --format {fmt} --model {model} --gpu {gpu} --tp {tp}"
    held = None
    if holdout is not None:
        hpath = resolve(holdout, data_dir)
        held = read(hpath, model, gpu, tp)
        source += f" --holdout {_label(holdout, hpath)}"
    return calibrate(read(path, model, gpu, tp), model=model, gpu=gpu, tp=tp, name=name, source=source, holdout=held)


def build_shipped_profiles(out_dir=PROFILES_DIR, *, data_dir=None, splitwise_holdout: str | None = None) -> list[Path]:
    """Refit every profile in :data:`SHIPPED` from its data set and write them to ``out_dir``.

    ``splitwise_holdout``: a splitwise ``perf_model.csv`` with grid points the data set lacks
    (the public original has prompt 1024/4096 at batch 1 and batch 4/16 at prompt 512): the
    splitwise profiles' holdout. The vidur profiles hold out the rows their ladder skips.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset, fmt, prefix, model, gpu, tp in SHIPPED:
        name = f"{prefix}-{model}-{gpu}-tp{tp}"
        holdout = splitwise_holdout if fmt == "splitwise" else None
        profile = calibrate_file(dataset, fmt, model, gpu, tp, name=name, holdout=holdout, data_dir=data_dir)
        paths.append(profile.to_json(out_dir / f"{name}.json"))
        print(summary(profile, paths[-1]))
    return paths


def _pct(report: dict, key: str) -> str:
    v = report.get(key)
    return "n/a" if v is None else f"{100 * v:.1f}%"


def summary(profile: StepTimeModel, path) -> str:
    """Readable multi-line description of a fitted profile and its quality report."""
    r = profile.fit
    lines = [
        f"{profile.name}: {profile.model} on {profile.gpu} tp={profile.tp} -> {path}",
        f"  {r['n_points']} grid points ({r['n_points_prompt']} prefill, {r['n_points_token']} decode) "
        f"from {r['n_rows']} rows; {len(r['outliers'])} outliers",
        *(f"    outlier: {o}" for o in r["outliers"]),
    ]
    for label, prefix in (("leave-one-out", "loo_"), ("in-sample", "fit_"), ("holdout", "holdout_")):
        if f"{prefix}mape_prompt" in r:
            prefill, decode = ((_pct(r, f"{prefix}mape_{k}"), _pct(r, f"{prefix}max_err_{k}")) for k in ("prompt", "token"))
            lines.append(f"  {label:13s} prefill MAPE {prefill[0]} (max {prefill[1]}), decode MAPE {decode[0]} (max {decode[1]})")
    if "holdout_file" in r:
        lines[-1] += (f" on {r['holdout_n_points_prompt']} + {r['holdout_n_points_token']} unseen points "
                      f"of {r['holdout_file']}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tailgym calibrate",
        description="Fit a step-time profile JSON to GPU timings (see tailgym.calibrate.readers for formats).",
    )
    p.add_argument("file", nargs="?", help="timing file, or a data set name such as splitwise-perf-model")
    p.add_argument("--format", choices=sorted(READERS), help="input format")
    p.add_argument("--model", help="model name as it appears in the file (e.g. llama2-70b)")
    p.add_argument("--gpu", help="GPU name as it appears in the file (e.g. h100-80gb)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1)")
    p.add_argument("-o", "--output", help="profile JSON to write")
    p.add_argument("--name", help="profile name (default: the output file's stem)")
    p.add_argument("--holdout", metavar="FILE2",
                   help="also report errors on the grid points of FILE2 (same format) that FILE lacks; with "
                        "--rebuild-shipped: a splitwise perf_model.csv with more grid points (the public original)")
    p.add_argument("--json", metavar="REPORT", help="write the quality report as JSON")
    p.add_argument("--data-dir", help="data directory for data set names (default $TAILGYM_DATA_DIR)")
    p.add_argument("--rebuild-shipped", nargs="?", const=str(PROFILES_DIR), metavar="DIR",
                   help="refit all shipped profiles into DIR (default: the package's profiles/)")
    return p


def cli(argv: list[str] | None = None) -> int:
    """Entry point of ``tailgym calibrate`` and ``python -m tailgym.calibrate``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rebuild_shipped is None:
        missing = [opt for opt, v in (("FILE", args.file), ("--format", args.format), ("--model", args.model),
                                      ("--gpu", args.gpu), ("-o/--output", args.output)) if v is None]
        if missing:
            parser.error(f"missing {', '.join(missing)}")
    try:
        if args.rebuild_shipped is not None:
            build_shipped_profiles(args.rebuild_shipped, data_dir=args.data_dir, splitwise_holdout=args.holdout)
            return 0
        out = Path(args.output)
        profile = calibrate_file(args.file, args.format, args.model, args.gpu, args.tp,
                                 name=args.name or out.stem, holdout=args.holdout, data_dir=args.data_dir)
        profile.to_json(out)
        if args.json:
            Path(args.json).write_text(json.dumps(profile.fit, indent=1) + "\n")
        print(summary(profile, out))
    except (ValueError, DataError, OSError) as exc:  # CalibrationError is a ValueError
        print(f"tailgym calibrate: error: {exc}", file=sys.stderr)
        return 1
    return 0
