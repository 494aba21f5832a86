"""USS: the FPN layout and init, where its weights come from, and that training never changes it."""
import urllib.error

import pytest
import torch
from torchvision.models import resnet50

import segmentation
from loss import SGZLoss
from model import EnhanceNet, init_weights
from segmentation import USS, SegWeightsError


@pytest.fixture(scope="module")
def uss():
    torch.manual_seed(0)
    return USS(seg_weights="none")


def test_logits_have_21_classes_at_a_quarter_of_the_input_size(uss):
    with torch.no_grad():
        logits = uss(torch.rand(2, 3, 64, 96))
    assert logits.shape == (2, 21, 16, 24)


def test_fpn_has_four_laterals_smooth_layers_and_gaussian_init(uss):
    convs = dict(uss.fpn.named_children())
    assert {"toplayer", "latlayer1", "latlayer2", "latlayer3", "classify"} <= set(convs)
    assert sum(name.startswith("smooth") for name in convs) == 8
    assert convs["classify"].in_channels == 4 * 128
    weights = torch.cat([m.weight.flatten() for m in convs.values()])
    assert weights.std().item() == pytest.approx(0.01, rel=0.02)
    assert all(not m.bias.any() for m in convs.values())


def test_a_local_resnet50_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    reference = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    loaded = USS(seg_weights=str(path)).resnet.state_dict()
    for name, value in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], value), name


def test_missing_imagenet_weights_name_both_options(monkeypatch):
    def offline():
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(segmentation, "imagenet_state_dict", offline)
    with pytest.raises(SegWeightsError) as e:
        USS()
    message = str(e.value)
    assert "--seg_weights PATH" in message and "--seg_weights none" in message and "\n" not in message


def test_a_missing_or_wrong_weight_file_is_named(tmp_path):
    with pytest.raises(SegWeightsError, match="nowhere.pth: no such weight file"):
        USS(seg_weights=str(tmp_path / "nowhere.pth"))
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(SegWeightsError, match="other.pth: not a torchvision resnet50"):
        USS(seg_weights=str(other))


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_bn_mode_survives_train_and_eval_calls(bn_mode):
    uss = USS(seg_weights="none", bn_mode=bn_mode)
    for call in (uss.train, uss.eval):
        call()
        assert uss.resnet.bn1.training == (bn_mode == "train")


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_a_training_step_reaches_every_efe_parameter_and_leaves_uss_unchanged(bn_mode):
    torch.manual_seed(0)
    uss = USS(seg_weights="none", bn_mode=bn_mode)
    before = {k: v.clone() for k, v in uss.state_dict().items()}  # parameters and every BatchNorm buffer
    net = EnhanceNet(scale_factor=1)
    init_weights(net)
    criterion = SGZLoss("code", segmenter=uss)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    low = torch.rand(2, 3, 32, 32) * 0.3
    enhanced, x_r = net(low)
    terms = criterion(low, enhanced, x_r)
    semantic_grads = torch.autograd.grad(terms["sem"], list(net.parameters()), retain_graph=True)
    assert all(g.abs().sum() > 0 for g in semantic_grads)  # the semantic term alone reaches the EFE
    optimizer.zero_grad()
    terms["total"].backward()
    optimizer.step()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in uss.parameters())
    for name, value in uss.state_dict().items():
        assert torch.equal(value, before[name]), name
