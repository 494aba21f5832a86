"""The methods SGZ is compared with (paper §4, Tables 5-7): Zero-DCE's and SCI's networks, four classical enhancers.

Zero-DCE (Guo et al., CVPR 2020) is SGZ's ancestor: the same 7-conv EFE with skips, but plain 3x3 convs at full
resolution and 24 output channels, i.e. a separate curve map r_i for each of the 8 RIE steps. Zero-DCE++ is
`model.EnhanceNet` itself. SCI (Ma et al., CVPR 2022) is the fastest zero-reference peer: a 258-parameter
illumination estimator and a Retinex division. The classical methods take and return float32 HxWx3 RGB arrays in
[0, 1].
"""
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.sparse import diags
from scipy.sparse.linalg import spsolve
from torch import nn

from files import extract_state_dict, read_checkpoint, to_uint8
from model import NUM_FEATURES, NUM_ITERATIONS, EnhanceNet, flush_subnormals_, load_enhance_net


class ZeroDCENet(EnhanceNet):
    """Zero-DCE's DCE-Net (Guo et al. 2020, §3.1; the authors' `enhance_net_nopool`): SGZ's EFE with plain 3x3
    convs ("tc"), no downscaling, and a 24-channel head. Parameter names match the authors' checkpoints.
    inference.enhance refuses it (its fast paths apply one 3-channel x_r); inference.forward_for runs this forward.

    `forward(x)` maps a Bx3xHxW image in [0, 1] to `(enhanced, curves)`, curves being the 8 stacked 3-channel r_i.
    """

    def __init__(self):
        super().__init__(scale_factor=1, conv_type="tc")
        self.e_conv7 = nn.Conv2d(NUM_FEATURES * 2, 3 * NUM_ITERATIONS, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        curves = self.enhancement_factor(x)
        # Zero-DCE Eq. 4: LE_n = LE_{n-1} + A_n * (LE_{n-1}^2 - LE_{n-1}), a new A_n at every step.
        for r in torch.split(curves, 3, dim=1):
            x = x + r * (x * x - x)
        return x, curves


def load_zero_dce(path: str | Path, device: str | torch.device = "cpu") -> ZeroDCENet:
    """A `ZeroDCENet` in eval mode with the weights in `path`, subnormals flushed (19,266 of the released 79,416
    weights are; flushing leaves outputs bit-identical and makes CPU inference ~20x faster).

    Raises FileNotFoundError when the file is missing and ValueError when it is not a Zero-DCE state dict.
    """
    state = extract_state_dict(read_checkpoint(path))
    model = ZeroDCENet()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not fit Zero-DCE's network (plain convs, 24 output channels)") from e
    return flush_subnormals_(model).to(device).eval()


class SCINet(nn.Module):
    """SCI's inference network (Ma et al., "Toward Fast, Flexible, and Robust Low-Light Image Enhancement", CVPR
    2022). In the paper's notation (y the low-light input, x the illumination, z the enhanced image): one stage of
    its illumination learning, §3.1 Eq. 1, u = H_theta(x^0), x = x^0 + u with x^0 = y, then the Retinex model
    y = z * x solved for z = y / x. The self-calibrated module (§3.2) only trains H_theta, so SCI's test script runs
    this network alone.

    H_theta as released (`EnhanceNetwork(layers=1, channels=3)`): a 3x3 conv + ReLU, one residual block (3x3 conv,
    BatchNorm, ReLU) added to its input, a 3x3 conv + sigmoid. In SCI's code, not its paper, and kept: the
    illumination is clamped to [1e-4, 1] and the output to [0, 1]. Parameter names are those of SCI's checkpoints
    less their `enhance.` prefix.

    `forward(x)` maps a Bx3xHxW image in [0, 1] to `(enhanced, illumination)`.
    """

    def __init__(self):
        super().__init__()
        self.in_conv = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        # SCI's code lists its one block under two names, so its checkpoints hold it twice: one module, both names.
        self.blocks = nn.ModuleList([self.conv])
        self.out_conv = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.in_conv(x)
        features = features + self.conv(features)
        illumination = (self.out_conv(features) + x).clamp(1e-4, 1)
        return (x / illumination).clamp(0, 1), illumination


def load_sci(path: str | Path, device: str | torch.device = "cpu") -> SCINet:
    """An `SCINet` in eval mode with the `enhance.*` weights of an SCI checkpoint; its `calibrate.*` entries, the
    training-only self-calibrated module, are dropped. Subnormals are flushed as the other loaders do (SCI's three
    released files hold none, so their outputs are unchanged).

    Raises FileNotFoundError when the file is missing and ValueError when it is not an SCI checkpoint.
    """
    state = extract_state_dict(read_checkpoint(path))
    enhance = {k.removeprefix("enhance."): v for k, v in state.items() if not k.startswith("calibrate.")}
    model = SCINet()
    try:
        model.load_state_dict(enhance)
        if any(not torch.equal(v, enhance["conv." + k.removeprefix("blocks.0.")])
               for k, v in enhance.items() if k.startswith("blocks.0.")):
            raise RuntimeError("blocks.0 and conv hold different weights")
    except RuntimeError as e:
        raise ValueError(f"{path}: does not fit SCI's network (enhance.* of a 3-channel EnhanceNetwork)") from e
    return flush_subnormals_(model).to(device).eval()


def histogram_equalisation(img: np.ndarray) -> np.ndarray:
    """Global histogram equalisation of the luma (Y of YCrCb), chroma kept: colours do not shift."""
    ycc = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.equalizeHist(ycc[..., 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB).astype(np.float32) / 255


def clahe(img: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive HE (Zuiderveld 1994) of CIELAB L; OpenCV's defaults (clip 2.0, 8x8 tiles)."""
    lab = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255


def gamma_correction(img: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """out = in^(1/gamma), gamma 2.2 (the sRGB display gamma): brightens shadows most."""
    return np.power(np.clip(img, 0, 1), 1 / gamma).astype(np.float32)


def _smooth_illumination(t_hat: np.ndarray, alpha: float, eps: float) -> np.ndarray:
    """LIME Eq. 19 with weighting strategy I: solve (I + alpha * sum_d D_d^T A_d D_d) t = t_hat,
    A_d = diag(1 / (|D_d t_hat| + eps)): smooths T inside regions, keeps its edges."""
    h, w = t_hat.shape
    n = h * w
    dx = np.zeros((h, w))
    dy = np.zeros((h, w))
    dx[:, :-1] = 1 / (np.abs(np.diff(t_hat, axis=1)) + eps)  # weight of the edge (i, j)-(i, j+1)
    dy[:-1, :] = 1 / (np.abs(np.diff(t_hat, axis=0)) + eps)  # weight of the edge (i, j)-(i+1, j)
    dx, dy = alpha * dx.ravel(), alpha * dy.ravel()
    centre = 1 + dx + dy + np.concatenate([[0], dx[:-1]]) + np.concatenate([np.zeros(w), dy[:-w]])
    laplacian = diags([centre, -dx[:-1], -dx[:-1], -dy[:-w], -dy[:-w]], [0, 1, -1, w, -w], shape=(n, n))
    # The matrix is symmetric: minimum-degree ordering on A + A^T keeps the LU fill-in small.
    return spsolve(laplacian.tocsc(), t_hat.ravel(), permc_spec="MMD_AT_PLUS_A").reshape(h, w)


def lime(img: np.ndarray, alpha: float = 0.15, gamma: float = 0.8, eps: float = 1e-3,
         max_pixels: int = 100_000) -> np.ndarray:
    """LIME-style enhancement (Guo, Li & Ling, TIP 2017): out = in / T^gamma, T the refined max-RGB illumination.

    T_hat = max over RGB (LIME Eq. 2), refined by Eq. 19 (strategy I), gamma 0.8 (LIME §III-C). Differences from
    LIME: no BM3D denoising, and T is solved at <= `max_pixels` and resized back bilinearly (T is smooth).
    """
    h, w = img.shape[:2]
    t_hat = img.max(axis=2).astype(np.float64)
    shrink = min(1.0, (max_pixels / (h * w)) ** 0.5)
    if shrink < 1:
        small = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        t_hat = cv2.resize(t_hat, small, interpolation=cv2.INTER_AREA)
    t = _smooth_illumination(t_hat, alpha, eps)
    if shrink < 1:
        t = cv2.resize(t, (w, h), interpolation=cv2.INTER_LINEAR)
    t = np.clip(t, eps, 1) ** gamma
    return np.clip(img / t[..., None], 0, 1).astype(np.float32)


CLASSICAL = {"HE": histogram_equalisation, "CLAHE": clahe, "Gamma": gamma_correction, "LIME": lime}


NETWORK_LOADERS = {"SGZ": load_enhance_net, "Zero-DCE++": load_enhance_net, "Zero-DCE": load_zero_dce,
                   "SCI": load_sci}


def load_networks(weights: dict[str, tuple[str, Path]], device: torch.device,
                  scale_factor: int = 12) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """label -> network in eval mode, for each label's (method in NETWORK_LOADERS, weights path) that loads, and
    label -> one line ("path: reason") for each that does not. SGZ and Zero-DCE++ run at `scale_factor`."""
    networks, problems = {}, {}
    for label, (method, path) in weights.items():
        load = NETWORK_LOADERS[method]
        try:
            if load is load_enhance_net:
                networks[label] = load_enhance_net(path, scale_factor, "dsc", device)
            else:
                networks[label] = load(path, device)
        except (FileNotFoundError, ValueError) as e:
            problems[label] = str(e)
    return networks, problems
