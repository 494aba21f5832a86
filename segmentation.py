"""USS, SGZ's unsupervised semantic segmentation network (paper §3.3): a frozen ResNet-50 + FPN.

It only supplies the semantic loss: its own argmax labels on the enhanced image are the focal loss's targets.
Nothing in it is trained. Its input is the enhanced image in [0, 1], unnormalised, as in the authors' code.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from files import read_checkpoint, strip_prefixes

BN_MODES = ("train", "eval")


class SegWeightsError(Exception):
    """The ResNet-50 weights could not be had; the message names the file or the fix in one line."""


def imagenet_state_dict() -> dict:
    """torchvision's ImageNet ResNet-50 weights, IMAGENET1K_V1 (resnet50-0676ba61.pth); may download. The authors'
    code loads torchvision's legacy resnet50-19c8e357.pth; both report 76.13% top-1, and whether their tensors are
    equal could not be checked offline."""
    return ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True)


def backbone_state_dict(seg_weights: str) -> dict | None:
    """The ResNet-50 state dict `seg_weights` names: "imagenet", a file path, or "none" (random init: None)."""
    if seg_weights == "none":
        return None
    if seg_weights == "imagenet":
        try:
            return imagenet_state_dict()
        except Exception as e:
            raise SegWeightsError(
                f"could not get the ResNet-50 ImageNet weights ({type(e).__name__}: {e}); "
                "pass --seg_weights PATH for a local torchvision resnet50 file, "
                "or --seg_weights none for a randomly initialised USS") from e
    try:
        return read_checkpoint(seg_weights)
    except (FileNotFoundError, ValueError) as e:
        raise SegWeightsError(f"{e} (--seg_weights takes imagenet, none, or a torchvision resnet50 file)") from e


class FPNHead(nn.Module):
    """Top-down FPN: 4 laterals to 256 channels, two 3x3 smooth convs per level to 128, the 4 levels upsampled
    to the finest and concatenated, a 3x3 classifier. Layer names follow the authors' `fpn_module`."""

    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.toplayer = nn.Conv2d(2048, 256, 1)
        self.latlayer1 = nn.Conv2d(1024, 256, 1)
        self.latlayer2 = nn.Conv2d(512, 256, 1)
        self.latlayer3 = nn.Conv2d(256, 256, 1)
        for level in range(1, 5):
            setattr(self, f"smooth{level}_1", nn.Conv2d(256, 256, 3, padding=1))
            setattr(self, f"smooth{level}_2", nn.Conv2d(256, 128, 3, padding=1))
        self.classify = nn.Conv2d(128 * 4, num_classes, 3, padding=1)
        for m in self.children():
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, c2, c3, c4, c5) -> torch.Tensor:
        p5 = self.toplayer(c5)
        p4 = self._up(p5, c4) + self.latlayer1(c4)
        p3 = self._up(p4, c3) + self.latlayer2(c3)
        p2 = self._up(p3, c2) + self.latlayer3(c2)
        levels = [getattr(self, f"smooth{i}_2")(getattr(self, f"smooth{i}_1")(p)) for i, p in
                  enumerate((p5, p4, p3, p2), 1)]
        return self.classify(torch.cat([self._up(p, p2) for p in levels[:3]] + [levels[3]], 1))


class USS(nn.Module):
    """Frozen ResNet-50 bottom-up + FPN top-down; `forward(x)` gives class logits at 1/4 of x's size.

    bn_mode "train" (the authors': they never call eval on it) normalises with each batch's statistics;
    "eval" uses the stored running statistics. Either way no parameter or running statistic ever changes,
    and `train()`/`eval()` calls from outside leave the chosen mode as it is.
    """

    def __init__(self, num_classes: int = 21, seg_weights: str = "imagenet", bn_mode: str = "train"):
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, not {bn_mode!r}")
        self.bn_mode = bn_mode
        self.resnet = resnet50()
        state = backbone_state_dict(seg_weights)
        if state is not None:
            state = strip_prefixes(state, "module.", "resnet.")
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = self.resnet.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if not k.startswith("fc.")]:
                raise SegWeightsError(f"{seg_weights}: not a torchvision resnet50 state dict")
        self.resnet.fc = nn.Identity()
        self.fpn = FPNHead(num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                # Batch statistics in train mode without updating the running ones.
                m.track_running_stats = bn_mode == "eval"
        self.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "USS":
        return super().train(self.bn_mode == "train")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        c1 = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        c2 = r.layer1(c1)
        c3 = r.layer2(c2)
        c4 = r.layer3(c3)
        c5 = r.layer4(c4)
        return self.fpn(c2, c3, c4, c5)
