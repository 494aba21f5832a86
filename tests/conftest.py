"""Shared test helpers: where ../shared is, and a marker for tests that need it."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

requires_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir(),
    reason=f"needs the reference data in {SHARED} (present in CI, absent from a user's clone)",
)
