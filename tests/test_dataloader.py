"""Training data: every image format at any depth, resized to a float square, bad files named once and left out."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from dataloader import DataError, LowLightDataset, find_images

SAMPLE = ROOT / "data" / "test_data" / "samples" / "coffee.png"


@pytest.fixture
def image_tree(tmp_path):
    pixels = np.asarray(Image.open(SAMPLE).convert("RGB").resize((40, 30)))
    for i, name in enumerate(["a.jpg", "sub/b.PNG", "sub/deeper/c.bmp", "d.tiff", "e.webp", "f.JPEG", "g.tif"]):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(pixels, i, axis=1)).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_every_image_format_is_found_at_any_depth(image_tree):
    names = sorted(p.name for p in find_images(image_tree)[0])
    assert names == ["a.jpg", "b.PNG", "c.bmp", "d.tiff", "e.webp", "f.JPEG", "g.tif"]
    assert len(LowLightDataset(image_tree, 32)) == 7


def test_items_are_lanczos_resized_float_squares_in_unit_range(image_tree):
    dataset = LowLightDataset(image_tree, image_size=24)
    item = dataset[dataset.paths.index(image_tree / "sub" / "b.PNG")]
    assert item.shape == (3, 24, 24) and item.dtype == torch.float32
    assert 0.0 <= item.min() and item.max() <= 1.0
    expected = np.asarray(Image.open(image_tree / "sub" / "b.PNG").resize((24, 24), Image.LANCZOS)) / 255.0
    assert torch.allclose(item, torch.from_numpy(expected).float().permute(2, 0, 1))


def test_unreadable_files_are_named_once_and_left_out(image_tree, capsys):
    (image_tree / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (image_tree / "a.jpg").read_bytes()
    (image_tree / "sub" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    dataset = LowLightDataset(image_tree, 16)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert any("broken.jpg" in line for line in lines) and any("truncated.jpg" in line for line in lines)
    assert len(dataset) == 7 and all(dataset[i].shape == (3, 16, 16) for i in range(len(dataset)))


def test_a_folder_that_cannot_be_listed_is_named_once_and_left_out(image_tree, unlistable, capsys):
    unlistable.add(str(image_tree / "sub"))
    assert len(LowLightDataset(image_tree, 16)) == 5
    assert capsys.readouterr().err.splitlines() == [f"skipping {image_tree / 'sub'}: cannot list this folder "
                                                    "(Permission denied)"]
    unlistable.add(str(image_tree))
    with pytest.raises(DataError, match="cannot list this folder"):
        LowLightDataset(image_tree)


def test_a_missing_or_empty_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        LowLightDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no readable images"):
        LowLightDataset(tmp_path / "empty")


@pytest.mark.parametrize("name, white, mode", [("sixteen.png", 65535, "I;16"), ("float.tif", 1, "F")])
def test_a_16_bit_or_float_image_trains_as_what_it_shows(tmp_path, name, white, mode):
    gray = np.tile(np.linspace(0, white, 64), (64, 1)).astype(np.uint16 if white > 1 else np.float32)
    Image.fromarray(gray).save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    image = LowLightDataset(tmp_path, image_size=32, verbose=False)[0]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])
    assert image.mean().item() == pytest.approx(0.5, abs=0.01) and image.min() < 0.02 and image.max() > 0.98


def test_exif_orientation_is_applied_as_test_py_does(tmp_path):
    upright = np.zeros((40, 20, 3), np.uint8)
    upright[:10] = 200  # bright at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    Image.fromarray(upright).rotate(90, expand=True).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    image = LowLightDataset(tmp_path, image_size=40, verbose=False)[0]
    assert image[:, :10].mean() > 0.6 and image[:, 30:].mean() < 0.1
