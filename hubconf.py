"""torch.hub entry points: the network test.py runs, in eval mode.

    net = torch.hub.load(".", "sgz", source="local")                                           # our snapshot
    net = torch.hub.load(".", "sgz", source="local", weights="weights/sgz_official_epoch99.pth")  # the authors'
    enhanced, x_r = net(x)   # x: Bx3xHxW in [0, 1]; inference.enhance(net, x) is the same, several times faster
"""
from pathlib import Path

from model import EnhanceNet, load_enhance_net

dependencies = ["torch", "torchvision"]
OUR_SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "sgz_ours.pth"


def sgz(weights: str | Path | None = None, scale_factor: int = 12, conv_type: str = "dsc",
        device: str = "cpu") -> EnhanceNet:
    """SGZ's EnhanceNet as test.py loads it (model.load_enhance_net): `weights` are ours, the authors'
    Epoch99.pth, Zero-DCE++'s or a train.py checkpoint; by default this repo's snapshots/sgz_ours.pth."""
    return load_enhance_net(OUR_SNAPSHOT if weights is None else weights, scale_factor, conv_type, device)


def zero_dce(weights: str | Path | None = None, device: str = "cpu"):
    """Zero-DCE's network (baselines.ZeroDCENet) with its released weights, which this repo does not ship."""
    if weights is None:
        raise ValueError("zero_dce needs weights=PATH: Zero-DCE's released Epoch99.pth (this repo ships none)")
    import baselines  # here, not above: it needs OpenCV and SciPy, which sgz() does not
    return baselines.load_zero_dce(weights, device)
