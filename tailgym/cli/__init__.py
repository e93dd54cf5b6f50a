"""The ``tailgym`` command: one module per subcommand over ``common`` (shared options, checks,
one-line errors). A subcommand module has ``NAME``, ``HELP`` and either ``add_arguments(parser)``
and ``run(args) -> int``, or ``main(argv) -> int`` where it parses its own arguments; adding
one is a module here and an entry in ``SUBCOMMANDS``. Nothing else in tailgym imports this
package."""
import argparse
import sys

from .. import __version__
from . import bench, calibrate, common, compare, data, hil, policies, run

SUBCOMMANDS = (compare, run, policies, data, calibrate, hil, bench)
DESCRIPTION = """\
Which scheduling and KV-cache preemption policy gives the best tail latency for my workload,
model and GPU? `tailgym compare` answers it on a simulated vLLM-style engine; `tailgym run`
simulates one policy; `tailgym hil` runs the same scheduler on a real PyTorch engine."""


def build_parser() -> common.Parser:
    parser = common.Parser(prog="tailgym", description=DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tailgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        own = hasattr(module, "main")
        p = sub.add_parser(module.NAME, help=module.HELP, add_help=not own,
                           description=module.__doc__.replace("``", ""))
        p.set_defaults(module=module, parser=p)
        if not own:
            module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tailgym`` command and ``python -m tailgym.cli``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = build_parser().parse_known_args(argv)
    if hasattr(args.module, "main"):
        return args.module.main(rest)
    if rest:
        args.parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return common.guarded(args.module.run, args, args.parser)
