"""SGZ's enhancement network: EFE (enhancement factor extraction) and RIE (recurrent image enhancement).

Zheng & Gupta, "Semantic-Guided Zero-Shot Learning for Low-Light Image/Video Enhancement", WACV 2022, §3.1-3.2.
Parameter names follow the authors' released code (itself Zero-DCE++'s), so their checkpoints load unchanged.
Inference on a CPU runs the same math as C (cpu_kernel.py); training and other devices run the PyTorch code here.
"""
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import cpu_kernel

NUM_FEATURES = 32
NUM_ITERATIONS = 8
# Elements per band in fused_forward on CPU: 256 KB of float32, measured fastest on a 2-core Xeon.
CPU_BAND_ELEMENTS = 2**18


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

    The EFE runs on the input bilinearly downscaled by `scale_factor`; x_r is resized back to exactly HxW
    (the authors' code instead upscales by `scale_factor`, so it crops inputs to multiples of it first).
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

    def downscale_size(self, x: torch.Tensor) -> tuple[int, int]:
        """The EFE's input size: x's divided by `scale_factor`, at least 1x1."""
        h, w = x.shape[-2:]
        return max(1, h // self.scale_factor), max(1, w // self.scale_factor)

    def downscale(self, x: torch.Tensor) -> torch.Tensor:
        """x bilinearly downscaled by `scale_factor`, the EFE's input."""
        if self.scale_factor == 1:
            return x
        return F.interpolate(x, size=self.downscale_size(x), mode="bilinear", align_corners=False)

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
        """x_r at x's resolution. align_corners=True: the authors upsample with nn.UpsamplingBilinear2d."""
        x_r = self.low_resolution_factor(x)
        if self.scale_factor == 1:
            return x_r
        return F.interpolate(x_r, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.plain_forward(x) if torch.is_grad_enabled() else self.fused_forward(x)

    def plain_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EFE then RIE, op by op: differentiable, and what torch.compile fuses best."""
        x_r = self.enhancement_factor(x)
        return recurrent_enhance(x, x_r), x_r

    def fused_forward(self, x: torch.Tensor, factor: torch.Tensor | None = None,
                      c_kernel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The same math as `forward` for inference, without autograd, several times faster.

        `factor` is the EFE's low-resolution output to use instead of computing it from x (video.py passes
        one smoothed across frames).

        On a CPU, for float32, it runs as C (cpu_kernel.c): the EFE with no per-operator overhead, then x_r's
        upsampling and the 8 RIE steps in one pass over memory with the recurrence in registers. Elsewhere, or with
        `c_kernel=False`, or without a C compiler, it runs in PyTorch: on a CPU in bands of rows of one image, small
        enough to stay in cache, in place, with each step written as x <- x * ((1 - x_r) + x_r * x): two operations
        instead of four and no new tensors. Bilinear upsampling is separable: x_r is upsampled vertically once at
        low width, then horizontally band by band as a product with an interpolation matrix, which a CPU's matrix
        kernels run far faster than the bilinear kernel.
        """
        x = x.contiguous()  # a strided input is copied once here, not by the EFE and by RIE each
        factor = self.fused_low_resolution_factor(x, c_kernel) if factor is None else factor
        kernel = cpu_kernel.library_for(x, [factor], NUM_ITERATIONS) if c_kernel else None
        if kernel is not None:
            return cpu_kernel.enhance(kernel, x, factor, torch.get_num_threads())
        batch, channels, h, w = x.shape
        widen = None
        if self.scale_factor != 1:
            factor = F.interpolate(factor, size=(h, factor.shape[-1]), mode="bilinear", align_corners=True)
            widen = linear_interpolation_matrix(factor.shape[-1], w, x.device)
        enhanced, x_r = torch.empty_like(x), torch.empty_like(x)
        on_cpu = x.device.type == "cpu"
        rows = max(1, CPU_BAND_ELEMENTS // (channels * w)) if on_cpu else h
        images = [slice(i, i + 1) for i in range(batch)] if on_cpu else [slice(None)]
        for image, top in itertools.product(images, range(0, h, rows)):
            band = (image, slice(None), slice(top, top + rows))
            r, y = x_r[band], enhanced[band]
            r.copy_(factor[band] if widen is None else factor[band] @ widen)
            y.copy_(x[band])
            one_minus_r, step = 1 - r, torch.empty_like(y)
            for _ in range(NUM_ITERATIONS):
                torch.addcmul(one_minus_r, r, y, out=step)
                y.mul_(step)
        return enhanced, x_r

    def fused_low_resolution_factor(self, x: torch.Tensor, c_kernel: bool = True) -> torch.Tensor:
        """`low_resolution_factor` for inference: in C on a CPU (cpu_kernel.c) where it can run, else in PyTorch."""
        parameters = list(self.parameters())
        kernel = cpu_kernel.library_for(x, parameters, NUM_ITERATIONS) if c_kernel else None
        if kernel is None or self.conv_type != "dsc":
            return self.low_resolution_factor(x)
        return cpu_kernel.efe(kernel, parameters, x, self.downscale_size(x), torch.get_num_threads())


def linear_interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """The n_in x n_out matrix M with v @ M = 1-D linear interpolation of v, align_corners=True; the product
    matches F.interpolate to float rounding.
    """
    first, second, weight = cpu_kernel.interpolation_weights(n_in, n_out, True)
    columns = torch.arange(n_out)
    matrix = torch.zeros(n_in, n_out)
    matrix.index_put_((first.long(), columns), 1 - weight, accumulate=True)
    matrix.index_put_((second.long(), columns), weight, accumulate=True)
    return matrix.to(device)


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """The authors' training init: conv weights N(0, std), biases 0."""
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


def extract_state_dict(checkpoint: dict) -> dict:
    """The EFE state dict from a bare state dict, a DataParallel one, or a train.py checkpoint."""
    if "model" in checkpoint and isinstance(checkpoint["model"], dict):
        checkpoint = checkpoint["model"]
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def read_checkpoint(path: str | Path) -> dict:
    """The dict saved in `path`, loaded on the CPU with weights_only (no code runs from the file).

    Raises FileNotFoundError when the file is missing and ValueError when it holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(e).__name__})") from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a state dict")
    return checkpoint


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
