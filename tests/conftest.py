"""Point tailgym at the shared real data and at a per-session cache directory."""
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _tailgym_dirs(tmp_path_factory):
    os.environ.setdefault("TAILGYM_DATA_DIR", str(SHARED_DATA))
    os.environ["TAILGYM_CACHE_DIR"] = str(tmp_path_factory.mktemp("tailgym-cache"))
    yield
