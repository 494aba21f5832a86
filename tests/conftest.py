"""Shared test helpers: where ../shared is, a marker for tests that need it, and one torch thread per test."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

requires_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir(),
    reason=f"needs the reference data in {SHARED} (present in CI, absent from a user's clone)",
)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: a second intra-op thread only adds contention (10x slower on 2 shared cores), and
    it starves the decoder and encoder threads of the video tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
