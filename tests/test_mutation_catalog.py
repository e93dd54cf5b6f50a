"""The mutation catalogue stays applicable: every mutant's snippet occurs exactly once in its
file (an edit that moves the code must move the mutant too), and its tests exist."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "mutation"))
from mutate import ROOT, load_mutants  # noqa: E402

MUTANTS = load_mutants()


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m["name"] for m in MUTANTS])
def test_mutant_applies_exactly_once(mutant):
    source = (ROOT / mutant["file"]).read_text()
    assert source.count(mutant["original"]) == 1, f"{mutant['name']}: snippet not found once"
    assert mutant["original"] != mutant["replacement"]
    assert all((ROOT / t).is_file() for t in mutant["tests"])
