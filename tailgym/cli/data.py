"""``tailgym data``: the named data sets, where each is found locally, and fetching them."""
from . import common

NAME = "data"
HELP = "list the named data sets (and which are here), or fetch them"


def add_arguments(p) -> None:
    p.add_argument("action", choices=("list", "fetch"))
    p.add_argument("names", nargs="*", metavar="NAME", help="data sets to fetch")


def where(name: str) -> str:
    """The local path of data set ``name``, or how it would be found."""
    from ..data import DATASETS, DataError, data_path
    try:
        return f"here: {data_path(name, download=False)}"
    except DataError:
        return (f"not here: downloaded on first use, or put it at "
                f"$TAILGYM_DATA_DIR/{DATASETS[name].relpath}")


def run(args) -> int:
    from ..data import DATASETS, data_path
    if args.action == "list":
        for name, ds in DATASETS.items():
            print(f"{name:<26} {where(name)}\n{'':<26} {ds.url}\n{'':<26} {ds.attribution}")
        return 0
    if not args.names:
        raise common.CLIError(f"name the data sets to fetch, e.g. tailgym data fetch azure-conv "
                              f"(known: {', '.join(DATASETS)})")
    for name in args.names:
        if name not in DATASETS:
            raise common.CLIError(common.suggest(name, DATASETS, "data set"))
        print(data_path(name))
    return 0
