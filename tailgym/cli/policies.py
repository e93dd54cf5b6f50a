"""``tailgym policies``: each policy with the signals it reads and its knobs."""
from . import common

NAME = "policies"
HELP = "list the policies, the signals they read and their knobs"


def add_arguments(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="only these policies (default: all)")


def run(args) -> int:
    from ..policies import POLICIES
    unknown = [n for n in args.names if n not in POLICIES]
    if unknown:
        raise common.CLIError(common.suggest(unknown[0], POLICIES, "policy"))
    for name, spec in POLICIES.items():
        if args.names and name not in args.names:
            continue
        print(f"{name}  (reads: {', '.join(spec.signals)}; output lengths: {spec.knowledge})")
        for knob, default in spec.params.items():
            shown = "auto" if isinstance(default, float) and default != default else default
            print(f"    {knob} = {shown}: {spec.knob_docs.get(knob, '')}")
    return 0
