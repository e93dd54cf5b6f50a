"""``tailgym calibrate``: passes its arguments to ``tailgym.calibrate.cli`` (its own parser)."""
NAME = "calibrate"
HELP = "fit a step-time profile to GPU timings (see tailgym calibrate --help)"


def main(argv: list[str]) -> int:
    from ..calibrate.cli import cli
    return cli(argv)
