"""The peer methods: Zero-DCE's network with its released weights, and the classical enhancers."""
import numpy as np
import pytest
import torch
from conftest import SHARED, requires_shared

from baselines import CLASSICAL, ZeroDCENet, _smooth_illumination, gamma_correction, lime, load_zero_dce
from files import read_image
from metrics import count_params

WEIGHTS = SHARED / "weights"


def lol_low_crop() -> np.ndarray:
    return read_image(SHARED / "data/test_data/LOL/low/1.png")[100:220, 200:380]


def test_zero_dce_has_the_papers_79416_parameters():
    assert count_params(ZeroDCENet()) == 79_416


def test_zero_dce_applies_its_eight_curve_maps_in_order():
    net = ZeroDCENet()
    for conv in (net.e_conv1, net.e_conv2, net.e_conv3, net.e_conv4, net.e_conv5, net.e_conv6, net.e_conv7):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    alphas = torch.linspace(-0.9, 0.9, 8)
    net.e_conv7.bias.data = torch.atanh(alphas).repeat_interleave(3)
    x = torch.rand(1, 3, 5, 7)
    expected = x.clone()
    for a in alphas:  # Zero-DCE Eq. 4 with A_n = alphas[n] everywhere
        expected = expected + a * (expected ** 2 - expected)
    out, curves = net(x)
    assert torch.allclose(curves[0, ::3, 0, 0], alphas, atol=1e-6)
    assert torch.allclose(out, expected, atol=1e-6)


@requires_shared
def test_zero_dce_released_weights_brighten_lol_and_keep_its_size():
    net = load_zero_dce(WEIGHTS / "zero_dce_epoch99.pth")
    low = lol_low_crop()
    with torch.no_grad():
        out, curves = net(torch.from_numpy(low).permute(2, 0, 1)[None])
    assert out.shape == (1, 3, *low.shape[:2]) and curves.shape == (1, 24, *low.shape[:2])
    assert out.mean() > 3 * low.mean()


@requires_shared
def test_sgz_weights_do_not_fit_zero_dce():
    with pytest.raises(ValueError, match="does not fit Zero-DCE"):
        load_zero_dce(WEIGHTS / "sgz_official_epoch99.pth")


def test_missing_zero_dce_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth: no such weight file"):
        load_zero_dce(tmp_path / "nope.pth")


@requires_shared
@pytest.mark.parametrize("name", list(CLASSICAL))
def test_classical_method_brightens_lol_keeping_size_and_range(name):
    # CLAHE limits contrast gain by design, so it brightens the least (1.9x here).
    low = lol_low_crop()
    out = CLASSICAL[name](low)
    assert out.shape == low.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    assert out.mean() > 1.5 * low.mean()


def test_gamma_correction_raises_to_one_over_gamma():
    img = np.full((2, 2, 3), 0.25, np.float32)
    assert np.allclose(gamma_correction(img), 0.25 ** (1 / 2.2))


def test_lime_illumination_of_a_flat_image_is_the_image_itself():
    # A constant max-RGB map has no gradients, so smoothing leaves it and out = in / in^0.8 = in^0.2.
    assert np.allclose(_smooth_illumination(np.full((6, 9), 0.3), 0.15, 1e-3), 0.3)
    assert np.allclose(lime(np.full((10, 12, 3), 0.2, np.float32)), 0.2 ** 0.2, atol=1e-5)


def test_lime_illumination_keeps_an_edge_and_smooths_noise():
    rng = np.random.default_rng(0)
    t_hat = np.where(np.arange(40) < 20, 0.2, 0.8)[None].repeat(30, 0) + rng.normal(0, 0.02, (30, 40))
    t = _smooth_illumination(t_hat, 0.15, 1e-3)
    assert t[:, :18].std() < t_hat[:, :18].std() / 2
    assert t[:, 22:].mean() - t[:, :18].mean() > 0.55
