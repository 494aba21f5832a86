"""Metrics agree with independent implementations; efficiency counts agree with counts written out by hand."""
import hashlib
import math
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BRISQUE_FILES, SHARED, requires_brisque_model, requires_shared
from scipy.ndimage import correlate
from scipy.special import gamma

import metrics
from baselines import ZeroDCENet
from files import read_image
from model import EnhanceNet

DATA = SHARED / "data/test_data"
# basicsr 1.4.2's calculate_niqe(img, 0, convert_to='y') on these images (its MATLAB-faithful imresize).
BASICSR_NIQE = {"DICM/01.jpg": 3.3567884, "LIME/1.bmp": 4.0029942, "real/101_0_.png": 7.0521674}


def rgb_u8(name: str) -> np.ndarray:
    return metrics.to_uint8(read_image(DATA / name))


@requires_shared
@pytest.mark.parametrize("name", ["1.png", "111.png", "146.png"])
def test_psnr_and_ssim_agree_with_torchmetrics_and_piq_on_lol_pairs(name):
    piq = pytest.importorskip("piq")
    pytest.importorskip("torchmetrics")
    from torchmetrics.functional.image import peak_signal_noise_ratio
    from torchmetrics.functional.regression import mean_squared_error
    low, high = rgb_u8(f"LOL/low/{name}"), rgb_u8(f"LOL/high/{name}")
    t = [torch.from_numpy(a).permute(2, 0, 1)[None].double().contiguous() for a in (low, high)]
    assert metrics.psnr(low, high) == pytest.approx(float(peak_signal_noise_ratio(*t, data_range=255.0)), abs=1e-3)
    assert metrics.mse(low, high) == pytest.approx(float(mean_squared_error(*t)), rel=1e-6)
    # The Gaussian-window convention: piq excludes the border as scikit-image does.
    piq_ssim = float(piq.ssim(*t, data_range=255.0, kernel_size=11, kernel_sigma=1.5, downsample=False))
    assert metrics.ssim(low, high, gaussian=True) == pytest.approx(piq_ssim, abs=1e-3)


@requires_shared
def test_wang_ssim_agrees_with_piqs_downsampled_ssim_on_grey_lol_pairs():
    piq = pytest.importorskip("piq")
    low, high = rgb_u8("LOL/low/1.png"), rgb_u8("LOL/high/1.png")
    grey = [torch.from_numpy(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))[None, None].double() for a in (low, high)]
    assert metrics.ssim_wang(low, high) == pytest.approx(float(piq.ssim(*grey, data_range=255.0)), abs=1e-3)


def test_ssim_of_an_image_with_itself_is_one_and_psnr_is_infinite():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert metrics.ssim(img, img) == pytest.approx(1.0) and metrics.ssim(img, img, gaussian=True) == pytest.approx(1.0)
    assert metrics.psnr(img, np.clip(img.astype(int) + 1, 0, 255).astype(np.uint8)) > 48
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "divide by zero" came with it
        assert metrics.psnr(img, img) == math.inf and metrics.gap_scores(img, img)["PSNR-Y"] == math.inf


def test_gt_mean_matching_removes_a_global_exposure_error():
    gt = np.random.default_rng(1).integers(60, 200, (64, 64, 3)).astype(np.uint8)
    dark = (gt * 0.5).round().astype(np.uint8)
    scores = metrics.gap_scores(dark, gt)
    assert metrics.psnr(dark, gt) < 15 and scores["PSNR GT-mean"] > 45


def test_to_uint8_rounds_as_save_image_does():
    assert metrics.to_uint8(np.array([0.0, 0.5 / 255, 1.4999 / 255, 1.2, -3])).tolist() == [0, 1, 1, 255, 0]


def test_vendored_niqe_parameters_are_basicsrs_unchanged():
    digest = hashlib.sha256(metrics.NIQE_PARAMS.read_bytes()).hexdigest()
    assert digest == "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"


@requires_shared
@pytest.mark.parametrize("name", list(BASICSR_NIQE))
def test_niqe_agrees_with_basicsr(name):
    assert metrics.Niqe()(rgb_u8(name)) == pytest.approx(BASICSR_NIQE[name], abs=0.01)


def test_niqe_refuses_an_image_smaller_than_two_blocks():
    with pytest.raises(ValueError, match="at least 192x192"):
        metrics.Niqe()(np.zeros((150, 300, 3), np.uint8))


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    """Reference asymmetric generalised Gaussian fit (Mittal et al. 2012, §III-A), one array at a time."""
    x = x.ravel().astype(np.float64)
    left, right = np.sqrt(np.mean(x[x < 0] ** 2)), np.sqrt(np.mean(x[x > 0] ** 2))
    g, r = left / right, np.abs(x).mean() ** 2 / np.mean(x ** 2)
    grid = np.arange(0.2, 10, 0.001)
    ratio = gamma(2 / grid) ** 2 / (gamma(1 / grid) * gamma(3 / grid))
    return float(grid[np.argmin(np.abs(ratio - r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2))]), left, right


def _brisque_reference(rgb: np.ndarray) -> float:
    """BRISQUE written from the paper with numpy/scipy/torch, scoring with the same LIVE-R2 SVM in numpy."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    k = np.exp(-(np.arange(7) - 3) ** 2 / (2 * (7 / 6) ** 2))
    k = (np.outer(k, k) / np.outer(k, k).sum()).astype(np.float32)
    feats = []
    for img in (grey, F.interpolate(torch.from_numpy(grey)[None, None], size=(grey.shape[0] // 2, grey.shape[1] // 2),
                                    mode="bicubic", align_corners=False)[0, 0].numpy()):
        mu = correlate(img, k, mode="nearest")
        mscn = (img - mu) / (np.sqrt(np.abs(correlate(img * img, k, mode="nearest") - mu * mu)) + 1 / 255)
        a, left, right = _aggd(mscn)
        feats += [a, (left ** 2 + right ** 2) / 2]
        h, w = mscn.shape
        for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            shifted = np.zeros_like(mscn)  # neighbour at (i + dy, j + dx), zero outside the image
            shifted[max(-dy, 0):h - max(dy, 0), :w - dx] = mscn[max(dy, 0):h - max(-dy, 0), dx:]
            a, left, right = _aggd(mscn * shifted)
            mean = (right - left) * gamma(2 / a) / gamma(1 / a) * np.sqrt(gamma(1 / a) / gamma(3 / a))
            feats += [a, mean, left ** 2, right ** 2]
    svm = cv2.ml.SVM_load(str(BRISQUE_FILES[0]))
    storage = cv2.FileStorage(str(BRISQUE_FILES[1]), cv2.FILE_STORAGE_READ)
    lo, hi = storage.getNode("range").mat()
    x = -1 + 2 * (np.array(feats) - lo) / (hi - lo)
    rho, alpha, index = svm.getDecisionFunction(0)
    distances = ((svm.getSupportVectors()[index.ravel()] - x) ** 2).sum(1)
    return float(np.clip((alpha.ravel() * np.exp(-svm.getGamma() * distances)).sum() - rho, 0, 100))


@requires_shared
@requires_brisque_model
@pytest.mark.parametrize("name", ["DICM/01.jpg", "LIME/1.bmp", "real/101_0_.png", "LOL/low/1.png"])
def test_brisque_agrees_with_a_reference_written_from_the_paper(name):
    img = rgb_u8(name)
    assert metrics.Brisque()(img) == pytest.approx(_brisque_reference(img), abs=0.02)


def test_brisque_names_a_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yml: BRISQUE model file missing"):
        metrics.Brisque(tmp_path / "missing.yml", tmp_path / "missing.yml")


def test_sgz_has_10561_parameters():
    assert metrics.count_params(EnhanceNet()) == 10_561


def _dsc_macs_per_pixel(layers: list[tuple[int, int]]) -> int:
    """A 3x3 depthwise conv then a 1x1 pointwise conv: cin*9 + cin*cout multiply-adds per output pixel."""
    return sum(cin * 9 + cin * cout for cin, cout in layers)


SGZ_LAYERS = [(3, 32), (32, 32), (32, 32), (32, 32), (64, 32), (64, 32), (64, 3)]


def test_sgz_flops_at_1200x900_match_the_analytic_count():
    # The EFE runs on the input downscaled 12x: 100x75 pixels.
    analytic = 2 * _dsc_macs_per_pixel(SGZ_LAYERS) * 100 * 75
    assert analytic == pytest.approx(151.1e6, rel=1e-3)
    assert metrics.count_flops(EnhanceNet(), 900, 1200) == analytic


def test_zero_dce_flops_match_the_analytic_count():
    macs_per_pixel = 9 * (3 * 32 + 3 * 32 * 32 + 2 * 64 * 32 + 64 * 24)  # plain 3x3 convs at full resolution
    assert metrics.count_flops(ZeroDCENet(), 90, 120) == 2 * macs_per_pixel * 90 * 120


def test_time_per_image_times_repeats_after_warmup():
    calls = []
    seconds = metrics.time_per_image(lambda x: calls.append(x.shape), 9, 12, warmup=2, repeats=5)
    assert calls == [(1, 3, 9, 12)] * 7 and 0 <= seconds < 1
