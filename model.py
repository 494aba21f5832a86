"""SGZ's enhancement network: EFE (enhancement factor extraction) and RIE (recurrent image enhancement).

Zheng & Gupta, "Semantic-Guided Zero-Shot Learning for Low-Light Image/Video Enhancement", WACV 2022, §3.1-3.2.
Parameter names follow the authors' released code (itself Zero-DCE++'s), so their checkpoints load unchanged.
`forward` is always this plain, differentiable math; inference.py runs the same math faster for inference.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from files import extract_state_dict, read_checkpoint

NUM_FEATURES = 32
NUM_ITERATIONS = 8


class DepthwiseSeparableConv(nn.Module):
    """A 3x3 depthwise conv followed by a 1x1 pointwise conv (paper §3.1, "DSC"; the authors' `CSDN_Tem`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depth_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels)
        self.point_conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


def make_conv(conv_type: str, in_channels: int, out_channels: int) -> nn.Module:
    """"dsc": depthwise-separable (the paper's EFE); "tc": a plain 3x3 conv (the paper's comparison, Table 7)."""
    if conv_type == "dsc":
        return DepthwiseSeparableConv(in_channels, out_channels)
    if conv_type == "tc":
        return nn.Conv2d(in_channels, out_channels, 3, padding=1)
    raise ValueError(f"conv_type must be 'dsc' or 'tc', not {conv_type!r}")


def recurrent_enhance(x: torch.Tensor, x_r: torch.Tensor, iterations: int = NUM_ITERATIONS) -> torch.Tensor:
    """RIE, paper Eq. 1 (Order 2): x <- x + x_r * (x^2 - x), repeated with the same x_r."""
    for _ in range(iterations):
        x = x + x_r * (x * x - x)
    return x


class EnhanceNet(nn.Module):
    """EFE + RIE (paper Fig. 2). `forward(x)` maps a Bx3xHxW image in [0, 1] to `(enhanced, x_r)`.

    The size rule (the authors' test scripts crop every input to a multiple of `scale_factor`): x_r is computed as
    theirs on the largest top-left crop whose sides are multiples of `scale_factor` (a side shorter than it is
    taken whole), downscaled by exactly `scale_factor` and upsampled back by it; the fewer than `scale_factor` rows
    and columns beyond the crop take the nearest x_r. So the output keeps the input's size and equals the
    authors' output wherever their script writes one.
    """

    def __init__(self, scale_factor: int = 12, conv_type: str = "dsc"):
        super().__init__()
        self.scale_factor = scale_factor
        self.conv_type = conv_type
        n = NUM_FEATURES
        self.e_conv1 = make_conv(conv_type, 3, n)
        self.e_conv2 = make_conv(conv_type, n, n)
        self.e_conv3 = make_conv(conv_type, n, n)
        self.e_conv4 = make_conv(conv_type, n, n)
        self.e_conv5 = make_conv(conv_type, n * 2, n)
        self.e_conv6 = make_conv(conv_type, n * 2, n)
        self.e_conv7 = make_conv(conv_type, n * 2, 3)

    def crop_size(self, x: torch.Tensor) -> tuple[int, int]:
        """The top-left crop x_r is computed on: each side floored to a multiple of `scale_factor`, or whole
        where it is shorter than that."""
        s = self.scale_factor  # max/min rather than `if`: an exported graph (export.py) keeps both cases
        return tuple(max(side // s * s, min(side, s - 1)) for side in x.shape[-2:])

    def downscale_size(self, x: torch.Tensor) -> tuple[int, int]:
        """The EFE's input size: the crop's divided by `scale_factor`, at least 1x1."""
        return tuple(max(1, side // self.scale_factor) for side in self.crop_size(x))

    def downscale(self, x: torch.Tensor) -> torch.Tensor:
        """The crop of x bilinearly downscaled by `scale_factor`, the EFE's input."""
        if self.scale_factor == 1:
            return x
        h, w = self.crop_size(x)
        return F.interpolate(x[..., :h, :w], size=self.downscale_size(x), mode="bilinear", align_corners=False)

    def low_resolution_factor(self, x: torch.Tensor) -> torch.Tensor:
        """EFE (paper §3.1) on x downscaled by `scale_factor`: x_r in [-1, 1], with symmetric skip concatenations."""
        x = self.downscale(x)
        x1 = F.relu(self.e_conv1(x))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))

    def enhancement_factor(self, x: torch.Tensor) -> torch.Tensor:
        """x_r at x's resolution: upsampled to the crop with align_corners=True (the authors' nn.UpsamplingBilinear2d),
        then its last row and column repeated over the rest of x."""
        x_r = self.low_resolution_factor(x)
        if self.scale_factor == 1:
            return x_r
        (h, w), (height, width) = self.crop_size(x), x.shape[-2:]
        x_r = F.interpolate(x_r, size=(h, w), mode="bilinear", align_corners=True)
        return F.pad(x_r, (0, width - w, 0, height - h), mode="replicate") if (h, w) != (height, width) else x_r

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EFE then RIE, op by op: differentiable, and what torch.compile fuses best. inference.enhance runs the
        same math faster."""
        x_r = self.enhancement_factor(x)
        return recurrent_enhance(x, x_r), x_r


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """The init the paper's text describes: conv weights N(0, std), biases 0 (train.py --init paper). The authors'
    train.py never calls its weights_init, so their network starts from PyTorch's default init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


def flush_subnormals_(model: nn.Module) -> nn.Module:
    """Set subnormal weights (|w| < 1.2e-38) to zero, in place; returns `model`.

    Over half of the authors' released SGZ weights are subnormal, and CPUs compute with subnormals about 100x
    slower, which made the EFE 6x slower. The outputs are bit-identical without them.
    """
    with torch.no_grad():
        for p in model.parameters():
            p[p.abs() < torch.finfo(p.dtype).tiny] = 0
    return model


def load_enhance_net(path: str | Path, scale_factor: int = 12, conv_type: str = "dsc",
                     device: str | torch.device = "cpu") -> EnhanceNet:
    """An `EnhanceNet` in eval mode with weights from `path`.

    Raises FileNotFoundError when the file is missing and ValueError when it is not a matching checkpoint.
    """
    checkpoint = read_checkpoint(path)
    model = EnhanceNet(scale_factor, conv_type)
    try:
        model.load_state_dict(extract_state_dict(checkpoint))
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"{path}: does not fit EnhanceNet(conv_type={conv_type!r}): {first}") from e
    return flush_subnormals_(model).to(device).eval()
