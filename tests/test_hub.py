"""hubconf.py: torch.hub.load gives the network test.py runs, with the same outputs."""
import numpy as np
import pytest
import torch
from PIL import Image

import inference
import test as enhance_script
from baselines import ZeroDCENet
from conftest import ROOT, SHARED, requires_shared
from files import read_image, to_uint8

OURS = ROOT / "snapshots" / "sgz_ours.pth"
OFFICIAL = SHARED / "weights" / "sgz_official_epoch99.pth"


def hub_load(entry: str, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(ROOT), entry, source="local", **kwargs)


@pytest.mark.parametrize("weights", [pytest.param(OURS, id="ours"),
                                     pytest.param(OFFICIAL, id="authors", marks=requires_shared)])
def test_hub_network_gives_the_bytes_test_py_writes(tmp_path, weights):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sample = Image.open(ROOT / "data/test_data/samples/chelsea.png")
    for left, (width, height) in enumerate([(301, 203), (240, 180), (29, 11)]):
        sample.crop((left, 0, left + width, height)).save(inputs / f"{width}x{height}.png")
    assert enhance_script.main(["--weight_dir", str(weights), "--input_dir", str(inputs), "--test_dir", str(outputs),
                                "--device", "cpu"]) == 0
    net = hub_load("sgz", weights=str(weights))
    assert not net.training
    for src in sorted(inputs.iterdir()):
        x = torch.from_numpy(read_image(src)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            enhanced, _ = inference.enhance(net, x)
        expected = to_uint8(enhanced[0]).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(outputs / src.name)), expected, err_msg=src.name)


def test_hub_network_defaults_to_the_shipped_snapshot():
    default, ours = hub_load("sgz"), hub_load("sgz", weights=OURS)
    assert default.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(default.state_dict()[k], v) for k, v in ours.state_dict().items())


def test_hub_zero_dce_loads_its_weights_and_asks_for_them_in_one_line(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "zero_dce.pth"
    torch.save(ZeroDCENet().state_dict(), weights)
    net = hub_load("zero_dce", weights=weights)
    assert isinstance(net, ZeroDCENet) and not net.training
    assert torch.equal(net.e_conv7.weight, torch.load(weights)["e_conv7.weight"])
    with pytest.raises(ValueError, match="weights=PATH") as error:
        hub_load("zero_dce")
    assert "\n" not in str(error.value)
