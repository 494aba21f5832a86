"""Image-quality and efficiency metrics for the paper's Tables 5-7, each with its convention stated.

Full-reference (Table 6) metrics take uint8 HxWx3 RGB arrays, i.e. exactly what is written to disk.
No-reference (Table 5) metrics work offline from model files on disk:
- BRISQUE (Mittal et al., TIP 2012): OpenCV-contrib's `quality` module with the LIVE-R2 SVM model that Debian's
  `opencv-data` installs (or any pair of files given).
- NIQE (Mittal et al., SPL 2013): the MATLAB release's algorithm on the Y channel, 96x96 blocks, with the pristine
  model vendored in metrics_data/ (from basicsr, Apache-2.0).
"""
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate
from scipy.special import gamma as gamma_fn
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from torch.utils.flop_counter import FlopCounterMode

from files import to_uint8

BRISQUE_DIR = Path("/usr/share/opencv4/quality")
NIQE_PARAMS = Path(__file__).resolve().parent / "metrics_data" / "niqe_pris_params.npz"

PAIRED_CONVENTION = ("scikit-image 0.2x, uint8 outputs as written to disk; PSNR and MSE over RGB, data_range 255; "
                     "SSIM: default 7x7 uniform window, sample covariance, per-channel mean (channel_axis); "
                     "SSIM-G: 11x11 Gaussian window (sigma 1.5), population covariance, border excluded; "
                     "MSE in (0-255)^2 units; every value a per-image mean")
UNPAIRED_CONVENTION = ("BRISQUE: OpenCV-contrib quality module, LIVE-R2 SVM (brisque_model_live.yml, Debian "
                       "opencv-data), 0 best - 100 worst; NIQE: MATLAB release algorithm, Y channel of "
                       "MATLAB's rgb2ycbcr, 96x96 blocks, pristine model from basicsr; both lower = better; "
                       "per-image mean")
GAP_CONVENTION = ("scikit-image, uint8; -Y: luminance only (Y of MATLAB's rgb2ycbcr, 16-235), data_range 255; "
                  "SSIM-W: Wang's reference ssim.m (grey, 2x2-averaged and subsampled for LOL's 600x400, "
                  "11x11 Gaussian, border excluded); "
                  "GT-mean: each output rescaled so its mean equals its ground truth's, then scored as in Table 6; "
                  "per-image mean")


def luma(img: np.ndarray) -> np.ndarray:
    """Y of MATLAB's rgb2ycbcr (BT.601, range 16-235) as float64, for a uint8 RGB image."""
    return 16 + img.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255


def psnr(out: np.ndarray, gt: np.ndarray) -> float:
    """10 log10(255^2 / MSE) over all pixels and channels: inf for equal images (without numpy's warning)."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(gt, out, data_range=255))


def ssim(out: np.ndarray, gt: np.ndarray, gaussian: bool = False) -> float:
    """SSIM (Wang et al. 2004) per channel, averaged; `gaussian` selects the paper's 11x11, sigma 1.5 window."""
    channel_axis = -1 if out.ndim == 3 else None
    if gaussian:
        return float(structural_similarity(gt, out, data_range=255, channel_axis=channel_axis,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
    return float(structural_similarity(gt, out, data_range=255, channel_axis=channel_axis))


def ssim_wang(out: np.ndarray, gt: np.ndarray) -> float:
    """SSIM as Zhou Wang's reference MATLAB ssim.m computes it for colour files read with rgb2gray: grey (BT.601,
    rounded), f x f box-averaged and subsampled with f = max(1, round(min(H, W) / 256)), then the 11x11 Gaussian
    window (sigma 1.5) with the border excluded. Sizes are cropped to multiples of f (ssim.m pads symmetrically)."""
    f = max(1, round(min(gt.shape[:2]) / 256))
    grey = [cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64) for a in (out, gt)]
    h, w = grey[0].shape[0] // f * f, grey[0].shape[1] // f * f
    small = [g[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3)) for g in grey]
    return float(structural_similarity(small[1], small[0], data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def mse(out: np.ndarray, gt: np.ndarray) -> float:
    return float(mean_squared_error(gt.astype(np.float64), out.astype(np.float64)))


def paired_scores(out: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Table 6's columns for one uint8 output and its ground truth."""
    return {"PSNR": psnr(out, gt), "SSIM": ssim(out, gt), "SSIM-G": ssim(out, gt, gaussian=True), "MSE": mse(out, gt)}


def gap_scores(out: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The same output scored under conventions other papers use, to locate the gap to the paper's Table 6.

    Y: luminance only (MATLAB rgb2ycbcr, as in super-resolution code); SSIM-W: Wang's reference ssim.m;
    GT-mean: the output's channels rescaled so its mean brightness equals the ground truth's (KinD/LLFlow's
    "GT-mean"), removing any global exposure error.
    """
    y_out, y_gt = luma(out), luma(gt)
    matched = to_uint8(out.astype(np.float64) * (gt.mean() / max(out.mean(), 1e-6)) / 255)
    return {"PSNR-Y": psnr(y_out, y_gt),
            "SSIM-G-Y": float(structural_similarity(y_gt, y_out, data_range=255, gaussian_weights=True,
                                                    sigma=1.5, use_sample_covariance=False)),
            "SSIM-W": ssim_wang(out, gt),
            "PSNR GT-mean": psnr(matched, gt), "SSIM GT-mean": ssim(matched, gt),
            "SSIM-G GT-mean": ssim(matched, gt, gaussian=True)}


class Brisque:
    """BRISQUE via OpenCV-contrib's quality module; the SVM model and feature ranges are files on disk."""

    def __init__(self, model: Path = BRISQUE_DIR / "brisque_model_live.yml",
                 ranges: Path = BRISQUE_DIR / "brisque_range_live.yml"):
        for f in (model, ranges):
            if not Path(f).is_file():
                raise FileNotFoundError(f"{f}: BRISQUE model file missing (apt-get install opencv-data, "
                                        "or pass --brisque_model/--brisque_range)")
        self.scorer = cv2.quality.QualityBRISQUE_create(str(model), str(ranges))

    def __call__(self, img: np.ndarray) -> float:
        """Score for a uint8 RGB image (OpenCV converts BGR to grey itself)."""
        return float(self.scorer.compute(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[0])


_GAMMAS = np.arange(0.2, 10.001, 0.001)
_R_GAMMA = gamma_fn(2 / _GAMMAS) ** 2 / (gamma_fn(1 / _GAMMAS) * gamma_fn(3 / _GAMMAS))


def _aggd(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching fit of an asymmetric generalised Gaussian to each row (NIQE paper Eq. 5-6):
    shape alpha by table look-up of the generalised Gaussian ratio, left/right scales from one-sided variances."""
    neg, pos = np.minimum(blocks, 0), np.maximum(blocks, 0)
    # A flat block has no negative or positive values: its features are NaN and NIQE drops them, as MATLAB does.
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt((neg ** 2).sum(1) / (blocks < 0).sum(1))
        right = np.sqrt((pos ** 2).sum(1) / (blocks > 0).sum(1))
        g = left / right
        r_hat = np.abs(blocks).mean(1) ** 2 / (blocks ** 2).mean(1)
    r_norm = r_hat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    alpha = _GAMMAS[np.argmin((_R_GAMMA[None] - r_norm[:, None]) ** 2, axis=1)]
    scale = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left * scale, right * scale


def _niqe_features(img: np.ndarray, window: np.ndarray, block: int) -> np.ndarray:
    """18 natural-scene features for each non-overlapping block x block patch of a Y image (NIQE §III)."""
    mu = correlate(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(img * img, window, mode="nearest") - mu * mu))
    mscn = (img - mu) / (sigma + 1)
    h, w = mscn.shape[0] // block, mscn.shape[1] // block
    feats = []
    # Products with the 4 neighbours, circularly shifted inside each patch as MATLAB's circshift does.
    patches = mscn[:h * block, :w * block].reshape(h, block, w, block).transpose(2, 0, 1, 3)
    alpha, left, right = _aggd(patches.reshape(h * w, -1))
    feats += [alpha, (left + right) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        product = patches * np.roll(patches, shift, axis=(2, 3))
        alpha, left, right = _aggd(product.reshape(h * w, -1))
        feats += [alpha, (right - left) * gamma_fn(2 / alpha) / gamma_fn(1 / alpha), left, right]
    return np.stack(feats, 1)


class Niqe:
    """NIQE: the Mahalanobis-like distance between an image's patch statistics and a pristine-image Gaussian."""

    def __init__(self, params: Path = NIQE_PARAMS, block: int = 96):
        if not Path(params).is_file():
            raise FileNotFoundError(f"{params}: NIQE pristine parameters missing")
        p = np.load(params)
        self.mu, self.cov, self.window = p["mu_pris_param"][0], p["cov_pris_param"], p["gaussian_window"]
        self.block = block

    def __call__(self, img: np.ndarray) -> float:
        """Score for a uint8 RGB image at least 2 blocks (192 px) on each side."""
        y = luma(img).round()
        y = y[:y.shape[0] // self.block * self.block, :y.shape[1] // self.block * self.block]
        if min(y.shape) < 2 * self.block:
            raise ValueError(f"NIQE needs at least {2 * self.block}x{2 * self.block} pixels, got {img.shape[:2]}")
        # Second scale: bicubic halving with antialiasing, MATLAB imresize's kernel (a = -0.5).
        half = F.interpolate(torch.from_numpy(y / 255)[None, None], scale_factor=0.5, mode="bicubic",
                             antialias=True, align_corners=False)[0, 0].numpy() * 255
        feats = np.concatenate([_niqe_features(y, self.window, self.block),
                                _niqe_features(half, self.window, self.block // 2)], 1)
        diff = self.mu - np.nanmean(feats, 0)
        cov = np.cov(feats[~np.isnan(feats).any(1)], rowvar=False)
        return float(np.sqrt(diff @ np.linalg.pinv((self.cov + cov) / 2) @ diff))


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, height: int = 900, width: int = 1200) -> int:
    """FLOPs of one forward pass on a 1x3xHxW input as torch.utils.flop_counter counts them: convolutions and
    matmuls only (2 FLOPs per multiply-add); resizes, activations and RIE's elementwise steps are not counted.
    Counts the model's own op-by-op forward, not inference.enhance, whose PyTorch path widens x_r with a matmul
    against an interpolation matrix that the counter would add.
    """
    x = torch.rand(1, 3, height, width, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def median_seconds(fn, warmup: int = 3, repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Median wall-clock seconds of fn() over `repeats` runs after `warmup` untimed runs, synchronising CUDA."""
    return interleaved_median_seconds([fn], warmup, repeats, device)[0]


def interleaved_median_seconds(fns: list, warmup: int = 3, repeats: int = 20,
                               device: str | torch.device = "cpu") -> list[float]:
    """`median_seconds` of each of fns, timed in turns (f0, f1, ..., f0, f1, ...), so that a machine's slow spells
    fall on all of them alike and their ratios hold."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = [[] for _ in fns]
    for i in range(warmup + repeats):
        for fn, fn_times in zip(fns, times):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                fn_times.append(time.perf_counter() - start)
    return [statistics.median(fn_times) for fn_times in times]


def time_per_image(fn, height: int = 900, width: int = 1200, warmup: int = 3, repeats: int = 20,
                   device: str | torch.device = "cpu") -> float:
    """Median wall-clock seconds of fn(1x3xHxW), as `median_seconds` times it."""
    x = torch.rand(1, 3, height, width, device=device)
    with torch.no_grad():
        return median_seconds(lambda: fn(x), warmup, repeats, device)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or \"CPU\" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"
