"""The peer methods: Zero-DCE's and SCI's networks with their released weights, and the classical enhancers."""
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import SHARED, requires_shared

from baselines import (CLASSICAL, SCINet, ZeroDCENet, _smooth_illumination, gamma_correction, lime, load_sci,
                       load_zero_dce)
from files import read_image, to_uint8
from metrics import count_flops, count_params

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
@pytest.mark.parametrize("load, weights, message", [(load_zero_dce, "sgz_official_epoch99.pth", "Zero-DCE"),
                                                    (load_sci, "zero_dce_epoch99.pth", "SCI's network")],
                         ids=["Zero-DCE", "SCI"])
def test_another_networks_weights_do_not_fit(load, weights, message):
    with pytest.raises(ValueError, match=f"{weights}: does not fit {message}"):
        load(WEIGHTS / weights)


@pytest.mark.parametrize("load", [load_zero_dce, load_sci], ids=["Zero-DCE", "SCI"])
def test_missing_weights_name_the_file(tmp_path, load):
    with pytest.raises(FileNotFoundError, match="nope.pth: no such weight file"):
        load(tmp_path / "nope.pth")


@pytest.mark.parametrize("load", [load_zero_dce, load_sci], ids=["Zero-DCE", "SCI"])
def test_a_file_that_is_no_checkpoint_is_refused_in_one_line(tmp_path, load):
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match="notes.pth: not a PyTorch checkpoint"):
        load(tmp_path / "notes.pth")


def test_sci_has_258_parameters_at_inference():
    assert count_params(SCINet()) == 258  # three 3x3 convs of 3->3 channels (3 x 84) and one BatchNorm (6)


def test_sci_flops_are_its_three_convolutions_exactly():
    assert count_flops(SCINet(), 90, 120) == 2 * 3 * (3 * 3 * 9) * 90 * 120  # 2 per multiply-add, no bias


def test_sci_divides_the_input_by_its_clamped_illumination():
    net = SCINet().eval()
    torch.nn.init.zeros_(net.out_conv[0].weight)
    net.out_conv[0].bias.data.fill_(float(torch.logit(torch.tensor(0.25))))  # u = sigmoid(bias) = 0.25 everywhere
    x = torch.tensor([0.0, 0.05, 0.5, 0.9]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    out, illumination = net(x)
    expected = (x + 0.25).clamp(1e-4, 1)  # SCI Eq. 1: x = y + u; 0.9 + 0.25 clamps to 1
    assert torch.allclose(illumination, expected)
    assert torch.allclose(out, x / expected)  # the Retinex division z = y / x


@requires_shared
def test_sci_matches_scis_released_outputs_within_one_level():
    # SCI's writer truncates (x*255 clipped, cast to uint8); the harness rounds, as it does for every method.
    net = load_sci(WEIGHTS / "sci_medium.pt")
    references = sorted((SHARED / "parity/sci_official_medium").glob("*.png"))
    assert len(references) == 5
    truncated_differ, rounded_differ, values = 0, 0, 0
    for ref in references:
        low = read_image(SHARED / "data/test_data/sci_medium" / ref.name)
        with torch.no_grad():
            out = net(torch.from_numpy(low).permute(2, 0, 1)[None])[0][0].permute(1, 2, 0).numpy()
        theirs = np.asarray(Image.open(ref).convert("RGB"), dtype=np.int16)
        truncated = np.clip(out * 255, 0, 255).astype(np.uint8).astype(np.int16)
        rounded = to_uint8(out).astype(np.int16)
        assert np.abs(truncated - theirs).max() <= 1 and np.abs(rounded - theirs).max() <= 1, ref.name
        truncated_differ += (truncated != theirs).sum()
        rounded_differ += (rounded != theirs).sum()
        values += theirs.size
    # Truncated: 70 of 3,601,800 values differ, each within 5e-5 of a level boundary (float summation order).
    assert truncated_differ / values < 1e-4
    # Rounded: about half the values come out one level above SCI's truncated ones, nothing else.
    assert 0.4 < rounded_differ / values < 0.6


@requires_shared
def test_sci_ignores_the_training_only_calibrator_but_refuses_any_other_key(tmp_path):
    state = torch.load(WEIGHTS / "sci_medium.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("calibrate.") for k in state)
    enhance_only = tmp_path / "enhance_only.pt"
    torch.save({k: v for k, v in state.items() if k.startswith("enhance.")}, enhance_only)
    full, alone = load_sci(WEIGHTS / "sci_medium.pt").state_dict(), load_sci(enhance_only).state_dict()
    assert all(torch.equal(full[k], alone[k]) for k in full)
    extra = tmp_path / "extra.pt"
    torch.save({**state, "enhance.extra.weight": torch.zeros(3)}, extra)
    with pytest.raises(ValueError, match="extra.pt: does not fit SCI's network"):
        load_sci(extra)


@requires_shared
def test_sci_refuses_a_checkpoint_whose_two_names_for_its_block_differ(tmp_path):
    state = torch.load(WEIGHTS / "sci_medium.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "split.pt"
    torch.save({**state, "enhance.blocks.0.0.bias": state["enhance.conv.0.bias"] + 1}, path)
    with pytest.raises(ValueError, match="split.pt: does not fit SCI's network"):
        load_sci(path)


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
