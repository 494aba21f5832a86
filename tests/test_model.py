"""EnhanceNet: the authors' parameter layout, Eq. 1, and outputs at the input's own size."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SHARED, random_net, requires_shared
from model import EnhanceNet, load_enhance_net, recurrent_enhance

OFFICIAL = SHARED / "weights" / "sgz_official_epoch99.pth"


def test_dsc_net_has_10561_parameters_as_the_authors():
    assert sum(p.numel() for p in EnhanceNet().parameters()) == 10_561


def test_tc_net_uses_plain_3x3_convs():
    net = EnhanceNet(conv_type="tc")
    assert isinstance(net.e_conv2, nn.Conv2d) and net.e_conv2.kernel_size == (3, 3)
    assert sum(p.numel() for p in net.parameters()) == 67_299


def test_unknown_conv_type_is_refused():
    with pytest.raises(ValueError, match="conv_type"):
        EnhanceNet(conv_type="dw")


def test_recurrent_enhance_is_eq1_applied_eight_times():
    x, r = 0.2, -0.7
    for _ in range(8):
        x = x + r * (x * x - x)
    out = recurrent_enhance(torch.tensor([0.2]), torch.tensor([-0.7]))
    assert out.item() == pytest.approx(x, rel=1e-6)


def test_forward_applies_eight_rie_steps_with_the_efe_factor():
    net = random_net()
    with torch.no_grad():  # the last block outputs a constant: x_r = tanh(atanh(-0.5)) = -0.5 everywhere
        net.e_conv7.point_conv.weight.zero_()
        net.e_conv7.point_conv.bias.fill_(math.atanh(-0.5))
    out, x_r = net(torch.full((1, 3, 48, 60), 0.1))
    x = 0.1
    for _ in range(8):
        x = x + -0.5 * (x * x - x)
    torch.testing.assert_close(x_r, torch.full((1, 3, 48, 60), -0.5))
    torch.testing.assert_close(out, torch.full((1, 3, 48, 60), x))


@pytest.mark.parametrize("size", [(400, 600), (396, 600), (789, 1039), (13, 29), (5, 7), (1, 1)])
def test_output_keeps_input_size(size):
    with torch.inference_mode():
        enhanced, x_r = random_net()(torch.rand(2, 3, *size))
    assert enhanced.shape == x_r.shape == (2, 3, *size)
    assert torch.isfinite(enhanced).all()


def test_resizing_equals_the_authors_on_multiples_of_the_scale_factor():
    net = random_net()
    x = torch.rand(1, 3, 96, 144)
    authors_down = F.interpolate(x, scale_factor=1 / 12, mode="bilinear")
    small = EnhanceNet(scale_factor=1)
    small.load_state_dict(net.state_dict())
    _, x_r_small = small(authors_down)
    authors_x_r = nn.UpsamplingBilinear2d(scale_factor=12)(x_r_small)
    torch.testing.assert_close(net.enhancement_factor(x), authors_x_r, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size, crop", [((400, 600), (396, 600)), ((203, 301), (192, 300)), ((5, 30), (5, 24))])
def test_any_size_equals_the_authors_on_the_crop_and_repeats_its_edge_beyond(size, crop):
    net = random_net()
    x = torch.rand(1, 3, *size)
    h, w = crop
    cropped = x[..., :h, :w]
    small = EnhanceNet(scale_factor=1)
    small.load_state_dict(net.state_dict())
    authors_down = F.interpolate(cropped, size=(max(1, h // 12), w // 12), mode="bilinear", align_corners=False)
    authors_x_r = F.interpolate(small(authors_down)[1], size=crop, mode="bilinear", align_corners=True)
    with torch.no_grad():
        enhanced, x_r = net(x)
    torch.testing.assert_close(x_r[..., :h, :w], authors_x_r, rtol=0, atol=1e-6)
    assert torch.equal(x_r[..., h:, :], x_r[..., h - 1:h, :].expand(-1, -1, size[0] - h, -1))
    assert torch.equal(x_r[..., :, w:], x_r[..., :, w - 1:w].expand(-1, -1, -1, size[1] - w))
    torch.testing.assert_close(enhanced, recurrent_enhance(x, x_r), rtol=0, atol=1e-6)


@requires_shared
def test_authors_and_zero_dce_pp_checkpoints_load_unchanged():
    for name in ["sgz_official_epoch99.pth", "zero_dce_pp_epoch99.pth"]:
        net = load_enhance_net(SHARED / "weights" / name)
        reference = torch.load(SHARED / "weights" / name, map_location="cpu", weights_only=True)
        assert net.state_dict().keys() == reference.keys()
        torch.testing.assert_close(net.e_conv7.point_conv.weight, reference["e_conv7.point_conv.weight"])


@requires_shared
def test_zero_dce_checkpoint_is_refused_with_one_line():
    with pytest.raises(ValueError) as err:
        load_enhance_net(SHARED / "weights" / "zero_dce_epoch99.pth")
    assert "zero_dce_epoch99.pth" in str(err.value) and "\n" not in str(err.value)


def test_train_checkpoint_and_data_parallel_keys_load(tmp_path):
    net = random_net()
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pth")
    for name in ["ckpt.pth", "dp.pth"]:
        loaded = load_enhance_net(tmp_path / name)
        torch.testing.assert_close(loaded.e_conv1.depth_conv.weight, net.e_conv1.depth_conv.weight)


def test_missing_and_non_checkpoint_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        load_enhance_net(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_enhance_net(tmp_path / "junk.pth")


def test_training_path_stays_differentiable():
    net = random_net().train()
    enhanced, x_r = net(torch.rand(2, 3, 48, 36))
    (enhanced.mean() + x_r.mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@requires_shared
def test_subnormal_weights_are_flushed_without_changing_outputs():
    reference = torch.load(OFFICIAL, map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    assert sum(((v.abs() < tiny) & (v != 0)).sum().item() for v in reference.values()) > 5000
    net = load_enhance_net(OFFICIAL)
    assert all(((p.abs() < tiny) & (p != 0)).sum() == 0 for p in net.parameters())
    as_released = EnhanceNet().eval()
    as_released.load_state_dict(reference)
    x = torch.rand(1, 3, 96, 120)
    with torch.no_grad():
        assert torch.equal(net(x)[0], as_released(x)[0])
