"""The zero-reference losses: parity with the authors' code on real data, and each term's defining property."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import loss
from conftest import SHARED, requires_shared
from model import load_enhance_net

PARITY_KEYS = {"tv_A_x1600": "tv", "spa8_mean": "spa", "color_mean_x5": "col", "exp_mean_x10_E0.6": "exp",
               "total_without_sem": "total"}


@requires_shared
def test_code_form_terms_match_the_authors_losses_on_lol_images():
    ref = json.loads((SHARED / "parity" / "sgz_official_losses.json").read_text())
    images = [np.asarray(Image.open(SHARED / "data" / "test_data" / "lowCUT" / name).convert("RGB")
                         .resize((512, 512), Image.LANCZOS)) / 255.0 for name in ("1.png", "111.png")]
    low = torch.from_numpy(np.stack(images)).float().permute(0, 3, 1, 2)
    net = load_enhance_net(SHARED / "weights" / "sgz_official_epoch99.pth", scale_factor=1)
    with torch.no_grad():
        enhanced, x_r = net(low)
        terms = loss.SGZLoss("code", sem_weight=0)(low, enhanced, x_r)
    assert enhanced.mean().item() == pytest.approx(ref["enhanced_mean"], rel=1e-5)
    assert x_r.mean().item() == pytest.approx(ref["A_mean"], rel=1e-5)
    for ref_key, key in PARITY_KEYS.items():
        assert terms[key].item() == pytest.approx(ref[ref_key], rel=1e-5), key


@pytest.mark.parametrize("form", loss.LOSS_FORMS)
def test_spatial_consistency_is_zero_when_the_output_keeps_the_input_contrast(form):
    low = torch.rand(2, 3, 32, 32) * 0.2
    assert loss.spatial_consistency(low, low, form=form).item() == 0.0
    assert loss.spatial_consistency(low * 3, low, form=form).item() > 0.0


def test_spatial_consistency_weighs_diagonal_neighbours_by_alpha():
    low = torch.zeros(1, 3, 12, 12)
    enhanced = low.clone()
    enhanced[..., 4:8, 4:8] = 1.0  # one bright 4x4 region in the middle of a 3x3 grid of regions
    direct = loss.spatial_consistency(enhanced, low, alpha=0.0, form="paper").item()
    both = loss.spatial_consistency(enhanced, low, alpha=1.0, form="paper").item()
    # paper form: the centre differs by 1 from 4 direct and 4 diagonal neighbours, each pair counted from both ends
    assert direct == pytest.approx(8 / 9)
    assert both == pytest.approx(16 / 9)


@pytest.mark.parametrize("form", loss.LOSS_FORMS)
def test_exposure_is_zero_at_the_exposure_level_and_grows_away_from_it(form):
    at_level = torch.full((2, 3, 32, 32), 0.6)
    assert loss.exposure(at_level, 0.6, form).item() == pytest.approx(0.0, abs=1e-7)
    dark = torch.full((2, 3, 32, 32), 0.2)
    expected = 0.4 ** 2 if form == "code" else 0.4
    assert loss.exposure(dark, 0.6, form).item() == pytest.approx(expected, rel=1e-5)


def test_colour_constancy_of_a_grey_image_is_zero_in_code_form_and_three_eps_in_paper_form():
    grey = torch.full((2, 3, 16, 16), 0.4)
    assert loss.colour_constancy(grey, "code").item() == 0.0
    assert loss.colour_constancy(grey, "paper").item() == pytest.approx(3 * loss.CHARBONNIER_EPS, rel=1e-4)


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_code_form_colour_term_of_a_black_or_white_image_is_zero_with_a_finite_gradient(level):
    image = torch.full((2, 3, 8, 8), level, requires_grad=True)
    value = loss.colour_constancy(image, "code")
    value.backward()
    assert value.item() == 0.0 and torch.equal(image.grad, torch.zeros_like(image))


def test_colour_constancy_matches_its_formula_for_a_tinted_image():
    image = torch.stack([torch.full((8, 8), v) for v in (0.5, 0.3, 0.2)])[None]
    d_rg, d_rb, d_gb = 0.2 ** 2, 0.3 ** 2, 0.1 ** 2
    assert loss.colour_constancy(image, "code").item() == pytest.approx((d_rg ** 2 + d_rb ** 2 + d_gb ** 2) ** 0.5,
                                                                        rel=1e-5)
    eps2 = loss.CHARBONNIER_EPS ** 2
    paper = sum((d + eps2) ** 0.5 for d in (d_rg, d_rb, d_gb))
    assert loss.colour_constancy(image, "paper").item() == pytest.approx(paper, rel=1e-5)


def test_total_variation_of_a_horizontal_ramp():
    ramp = torch.arange(5.0).repeat(2, 3, 4, 1)  # each row 0..4: horizontal steps of 1, no vertical change
    # sum over 2 images x 3 channels x 4 rows x 4 steps of 1, / (4 x 4) positions, x 2, / 2 images
    assert loss.total_variation(ramp).item() == pytest.approx(2 * 3 * 16 / 16 * 2 / 2)


def test_tv_term_acts_on_x_r_in_code_form_and_on_the_image_in_paper_form():
    low = torch.rand(1, 3, 16, 16)
    smooth = torch.full_like(low, 0.5)
    rough = torch.rand_like(low)
    code, paper = loss.SGZLoss("code", sem_weight=0), loss.SGZLoss("paper", sem_weight=0)
    assert code(low, smooth, x_r=rough)["tv"].item() > 0 and code(low, rough, x_r=smooth)["tv"].item() == 0
    assert paper(low, smooth, x_r=rough)["tv"].item() == 0 and paper(low, rough, x_r=smooth)["tv"].item() > 0


def test_focal_loss_matches_its_formula_on_the_argmax_labels():
    logits = torch.tensor([2.0, 0.5, -1.0]).reshape(1, 3, 1, 1)
    p = torch.softmax(logits.flatten(), 0).max().item()
    assert loss.focal_loss(logits, gamma=2.0).item() == pytest.approx(-(1 - p) ** 2 * np.log(p), rel=1e-5)
    assert loss.focal_loss(logits, gamma=0.0).item() == pytest.approx(-np.log(p), rel=1e-5)


def test_default_weights_are_the_authors_and_the_semantic_term_needs_a_segmenter():
    assert loss.WEIGHTS["code"] == {"spa": 1.0, "col": 5.0, "exp": 10.0, "tv": 1600.0, "sem": 0.1}
    assert set(loss.SGZLoss("paper", sem_weight=0).weights.values()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="segmenter"):
        loss.SGZLoss("code")
    with pytest.raises(ValueError, match="loss form"):
        loss.SGZLoss("printed")
