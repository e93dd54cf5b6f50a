"""``tailgym bench``: passes its arguments to ``tailgym.bench`` (its own parser)."""
NAME = "bench"
HELP = "speed benchmark of the simulator and the environments (python -m tailgym.bench)"


def main(argv: list[str]) -> int:
    from ..bench import main as bench
    return bench(argv)
