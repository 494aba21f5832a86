"""Shared test helpers: where ../shared is, a marker for tests that need it, a random network, a video's packets and
its cuts, folders that cannot be listed, and one torch thread per test."""
import errno
import os
from pathlib import Path

import av
import pytest
import torch

from model import EnhanceNet, init_weights

ROOT = Path(__file__).resolve().parents[1]
# The reference data: ../shared in CI, or any folder laid out like it (README: Tests) named by SGZ_REFERENCE_DATA.
SHARED = Path(os.environ.get("SGZ_REFERENCE_DATA") or ROOT.parent / "shared").resolve()

requires_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir(),
    reason=f"needs the reference data in {SHARED} (set SGZ_REFERENCE_DATA to a folder laid out like it)",
)

# BRISQUE's model files, as Debian's opencv-data installs them (metrics.Brisque, evaluate.py)
BRISQUE_FILES = [Path("/usr/share/opencv4/quality") / f"brisque_{kind}_live.yml" for kind in ("model", "range")]
requires_brisque_model = pytest.mark.skipif(not all(f.is_file() for f in BRISQUE_FILES),
                                            reason="needs Debian's opencv-data (apt-get install opencv-data)")


def random_net(std: float = 0.2, conv_type: str = "dsc", scale_factor: int = 12, seed: int = 0) -> EnhanceNet:
    """An EnhanceNet in eval mode with N(0, std) weights (0.2: x_r far from 0, so every step of RIE matters)."""
    torch.manual_seed(seed)
    net = EnhanceNet(scale_factor, conv_type)
    init_weights(net, std)
    return net.eval()


def nth_packet(path: Path, n: int, kind: str = "video") -> av.Packet:
    """The n-th packet with data of the file's first `kind` stream ("video" or "audio"): its pos and size say where
    to cut or damage it."""
    with av.open(str(path)) as container:
        return [packet for packet in container.demux(**{kind: 0}) if packet.size][n]


def cut_inside_packet(path: Path, n: int) -> av.Packet:
    """Cut the file halfway through its n-th video packet with data (see `nth_packet`), as a copy that stopped
    there; returns that packet. A byte count would land elsewhere each run: libx264's output varies."""
    packet = nth_packet(path, n)
    path.write_bytes(path.read_bytes()[:packet.pos + packet.size // 2])
    return packet


@pytest.fixture
def unlistable(monkeypatch) -> set[str]:
    """Folders (add their paths) that os.scandir refuses, as it does a folder without read permission; tests run
    as root, which may list every folder."""
    refused, scandir = set(), os.scandir

    def refusing(path="."):
        if os.fspath(path) in refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    return refused


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: a second intra-op thread only adds contention (10x slower on 2 shared cores), and
    it starves the decoder and encoder threads of the video tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
