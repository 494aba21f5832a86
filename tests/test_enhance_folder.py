"""test.py: parity with the authors' outputs, sizes kept, and bad input handled file by file."""
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, TiffImagePlugin

import files
import images
import inference
import test as enhance_script
from clips import moving_frames, write_clip
from conftest import ROOT, SHARED, cut_inside_packet, requires_shared
from files import BadInputError, read_image, to_uint8, write_image
from images import enhance_each, enhance_images, uint8_enhancer
from model import EnhanceNet, init_weights, load_enhance_net

OFFICIAL = SHARED / "weights" / "sgz_official_epoch99.pth"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = EnhanceNet()
    init_weights(net)
    path = tmp_path_factory.mktemp("weights") / "random.pth"
    torch.save(net.state_dict(), path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "test.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def dark(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)


@requires_shared
def test_outputs_match_the_authors_released_outputs_within_one_level(tmp_path):
    assert enhance_script.main(["--weight_dir", str(OFFICIAL), "--input_dir", str(SHARED / "data/test_data/lowCUT"),
                                "--test_dir", str(tmp_path), "--device", "cpu"]) == 0
    references = sorted((SHARED / "parity/sgz_official_lowCUT").glob("*.png"))
    assert len(references) == 15
    for ref in references:
        ours = np.asarray(Image.open(tmp_path / ref.name), dtype=np.int16)
        theirs = np.asarray(Image.open(ref).convert("RGB"), dtype=np.int16)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1, ref.name
        assert (ours != theirs).mean() < 1e-4, ref.name  # float rounding flips a few values, nothing systematic


@requires_shared
@pytest.mark.parametrize("weights, inputs, references, size, crop", [
    ("sgz_official_epoch99.pth", "LOL/low", "sgz_official_lowCUT", (600, 400), (600, 396)),
    ("zero_dce_pp_epoch99.pth", "real", "zero_dce_pp_official_real", (512, 512), (504, 504)),
], ids=["SGZ-LOL", "Zero-DCE++-real"])
def test_any_size_keeps_its_size_and_equals_the_authors_output_on_their_crop(tmp_path, weights, inputs, references,
                                                                            size, crop):
    """The authors' scripts crop to a multiple of 12 (lowCUT is LOL low's top 396 rows; Zero-DCE++'s script crops
    real/'s 512x512 images to 504x504); test.py keeps the whole image and equals theirs on that crop."""
    expected = sorted((SHARED / "parity" / references).glob("*.png"))
    assert len(expected) in (15, 32)
    (tmp_path / "in").mkdir()
    for ref in expected:
        (tmp_path / "in" / ref.name).symlink_to(SHARED / "data/test_data" / inputs / ref.name)
    assert enhance_script.main(["--weight_dir", str(SHARED / "weights" / weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out"), "--device", "cpu"]) == 0
    for ref in expected:
        ours = Image.open(tmp_path / "out" / ref.name)
        assert ours.size == size, ref.name
        ours = np.asarray(ours, dtype=np.int16)[:crop[1], :crop[0]]
        theirs = np.asarray(Image.open(ref).convert("RGB"), dtype=np.int16)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1, ref.name
        assert (ours != theirs).mean() < 1e-4, ref.name


@requires_shared
@pytest.mark.parametrize("folder", ["LIME", "LOL/low"])
def test_odd_and_full_size_images_come_out_at_their_own_size(tmp_path, folder):
    source = SHARED / "data/test_data" / folder
    assert enhance_script.main(["--weight_dir", str(OFFICIAL), "--input_dir", str(source),
                                "--test_dir", str(tmp_path)]) == 0
    inputs = sorted(p for p in source.iterdir() if p.suffix in {".bmp", ".png"})
    for src in inputs:
        assert Image.open(tmp_path / src.name).size == Image.open(src).size


def make_messy_folder(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(dark((40, 30))).save(root / "ok.jpg", quality=95)
    good = (root / "ok.jpg").read_bytes()
    (root / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(dark((33, 21))[..., 0]).save(root / "gray.png")
    Image.fromarray(np.dstack([dark((31, 17)), np.full((17, 31), 128, np.uint8)])).save(root / "rgba.png")
    Image.fromarray(dark((25, 19))).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "nested" / "palette.png")
    Image.fromarray(np.full((23, 29), 16384, np.uint16)).save(root / "nested" / "deeper" / "sixteen.png")
    Image.fromarray(dark((26, 14))).save(root / "nested" / "image.bmp")
    Image.fromarray(dark((26, 14))).save(root / "nested" / "image.webp")
    Image.fromarray(dark((26, 14))).save(root / "nested" / "image.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees on display
    Image.fromarray(dark((40, 20))).save(root / "rotated.jpg", exif=exif)


def test_messy_folder_enhances_every_decodable_image_and_names_each_bad_file_once(tmp_path, random_weights):
    make_messy_folder(tmp_path / "in")
    result = run_cli("--weight_dir", random_weights, "--input_dir", tmp_path / "in", "--test_dir", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    bad_lines = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(bad_lines) == 2
    assert sum("corrupt.jpg" in line for line in bad_lines) == 1
    assert sum("empty.png" in line and "empty file" in line for line in bad_lines) == 1
    expected_sizes = {"ok.jpg": (40, 30), "gray.png": (33, 21), "rgba.png": (31, 17), "rotated.jpg": (20, 40),
                      "nested/palette.png": (25, 19), "nested/deeper/sixteen.png": (29, 23),
                      "nested/image.bmp": (26, 14), "nested/image.webp": (26, 14), "nested/image.tif": (26, 14)}
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == sorted(expected_sizes)
    for name, size in expected_sizes.items():
        with Image.open(tmp_path / "out" / name) as out:
            assert out.mode == "RGB" and out.size == size, name
    assert "9 images enhanced" in result.stdout and "2 skipped" in result.stdout


def test_sixteen_bit_gray_keeps_its_full_range(tmp_path):
    Image.fromarray(np.full((4, 5), 32768, np.uint16)).save(tmp_path / "half.png")
    image = read_image(tmp_path / "half.png")
    assert image.shape == (4, 5, 3)
    np.testing.assert_allclose(image, 32768 / 65535, rtol=1e-6)


def test_float_gray_reads_as_its_values_clipped_to_unit_range(tmp_path):
    Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0], [1.7, -0.2, np.nan, 0.01]], np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    image = read_image(tmp_path / "f.tif")
    assert np.array_equal(image[..., 0], image[..., 2])
    np.testing.assert_allclose(image[..., 0], [[0.0, 0.25, 0.5, 1.0], [1.0, 0.0, 0.0, 0.01]], rtol=1e-6)


def test_32_bit_integer_gray_is_scaled_by_its_declared_range_or_refused_on_one_line(tmp_path):
    values = np.array([[0, 51, 255, 300]], np.int32)
    declared = TiffImagePlugin.ImageFileDirectory_v2()
    declared[281] = 255  # MaxSampleValue
    Image.fromarray(values).save(tmp_path / "declared.tif", tiffinfo=declared)
    np.testing.assert_allclose(read_image(tmp_path / "declared.tif")[..., 1], [[0, 0.2, 1, 1]])
    Image.fromarray(values).save(tmp_path / "bare.tif")
    assert Image.open(tmp_path / "bare.tif").mode == "I"
    with pytest.raises(BadInputError) as e:
        read_image(tmp_path / "bare.tif")
    assert str(e.value).startswith(f"{tmp_path / 'bare.tif'}: 32-bit integer samples with no declared range")


@pytest.mark.parametrize("pipeline", ["batches", "one image per thread"])
def test_an_input_removed_or_an_output_unwritable_is_named_and_the_run_goes_on(tmp_path, random_weights, pipeline):
    for name in ("here.png", "blocked.png", "also.png"):
        Image.fromarray(dark((16, 12))).save(tmp_path / name)
    (tmp_path / "out" / "blocked.png").mkdir(parents=True)  # a folder where the output should go
    plan = {tmp_path / name: tmp_path / "out" / name for name in ("gone.png", "here.png", "blocked.png", "also.png")}
    net = load_enhance_net(random_weights)
    if pipeline == "batches":
        done, skipped, _ = enhance_images(uint8_enhancer(net, torch.device("cpu")), plan, 2, 1)
    else:
        done, skipped, _ = enhance_each(uint8_enhancer(net, torch.device("cpu"), threads=1), plan, 2)
    assert done == 2 and skipped[0] == f"{tmp_path / 'gone.png'}: no longer there (removed during the run)"
    assert len(skipped) == 2 and skipped[1].startswith(f"{tmp_path / 'out' / 'blocked.png'}: cannot write (")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == ["also.png", "here.png"]
    expected = to_uint8(net(torch.from_numpy(read_image(tmp_path / "also.png")).permute(2, 0, 1)[None])[0][0])
    written = np.asarray(Image.open(tmp_path / "out" / "also.png"), dtype=np.int16)
    assert np.abs(written - expected.detach().permute(1, 2, 0).numpy()).max() <= 1  # float rounding at most


def test_a_folder_that_cannot_be_listed_is_named_and_the_rest_is_enhanced(tmp_path, random_weights, unlistable,
                                                                           capsys):
    (tmp_path / "in" / "locked").mkdir(parents=True)
    for name in ("a.png", "locked/b.png"):
        Image.fromarray(dark((16, 12))).save(tmp_path / "in" / name)
    unlistable.add(str(tmp_path / "in" / "locked"))
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("skipped")] == [
        f"skipped {tmp_path / 'in' / 'locked'}: cannot list this folder (Permission denied)"]
    assert captured.out.splitlines()[-1].startswith(f"1 image enhanced into {tmp_path / 'out'}, 1 skipped")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]
    unlistable.add(str(tmp_path / "in"))
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'in'}: cannot list this folder (Permission denied)\n"


def test_output_format_png_converts_every_output(tmp_path, random_weights):
    (tmp_path / "in").mkdir()
    Image.fromarray(dark((16, 12))).save(tmp_path / "in" / "a.jpg")
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out"), "--output_format", "png"]) == 0
    assert Image.open(tmp_path / "out" / "a.png").format == "PNG"


def test_single_file_input(tmp_path, random_weights):
    Image.fromarray(dark((16, 12))).save(tmp_path / "one.png")
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "one.png"),
                                "--test_dir", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "one.png").size == (16, 12)


@pytest.mark.parametrize("case", ["missing_input", "missing_weights", "mismatched_weights", "integer_key",
                                  "nan_weights", "test_dir_inside_input"])
def test_setup_errors_exit_2_with_one_line_and_write_nothing(tmp_path, random_weights, case):
    (tmp_path / "in").mkdir()
    Image.fromarray(dark((16, 12))).save(tmp_path / "in" / "a.png")
    torch.save({"e_conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    torch.save({0: torch.zeros(1)}, tmp_path / "integer.pth")
    torch.save(dict(torch.load(random_weights), **{"e_conv7.point_conv.bias": torch.full((3,), torch.nan)}),
               tmp_path / "nan.pth")
    args = {"--input_dir": tmp_path / "in", "--test_dir": tmp_path / "out", "--weight_dir": random_weights}
    expected = {"missing_input": ("--input_dir", tmp_path / "absent", "absent"),
                "missing_weights": ("--weight_dir", tmp_path / "none.pth",
                                    "pass --weight_dir with ours (snapshots/sgz_ours.pth)"),
                "mismatched_weights": ("--weight_dir", tmp_path / "other.pth", "does not fit EnhanceNet"),
                "integer_key": ("--weight_dir", tmp_path / "integer.pth",
                                f"{tmp_path / 'integer.pth'}: not a state dict (key 0 is not a parameter name)"),
                "nan_weights": ("--weight_dir", tmp_path / "nan.pth",
                                f"{tmp_path / 'nan.pth'}: e_conv7.point_conv.bias holds NaN or Inf"),
                "test_dir_inside_input": ("--test_dir", tmp_path / "in" / "out", "inside --input_dir")}[case]
    args[expected[0]] = expected[1]
    result = run_cli(*[str(item) for pair in args.items() for item in pair])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and expected[2] in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "in" / "out").exists()


def test_output_that_would_overwrite_an_input_is_refused(tmp_path):
    (tmp_path / "a" / "a").mkdir(parents=True)
    for name in ["a/x.png", "a/a/x.png"]:
        Image.fromarray(dark((8, 8))).save(tmp_path / name)
    inputs, _ = enhance_script.find_inputs(tmp_path / "a", enhance_script.IMAGE_EXTENSIONS)
    with pytest.raises(enhance_script.SetupError, match="would overwrite an input"):
        enhance_script.plan_outputs(inputs, tmp_path / "a", tmp_path, "same")


def refused(random_weights, *args) -> str:
    """test.py's one error line; it must exit 2 before enhancing anything."""
    result = run_cli("--weight_dir", random_weights, *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_video_whose_output_becomes_mkv_never_lands_on_another_output(tmp_path, random_weights):
    (tmp_path / "in").mkdir()
    for name in ("clip.avi", "clip.mkv"):
        write_clip(tmp_path / "in" / name, moving_frames(32, 24, 2))
    err = refused(random_weights, "--input_dir", tmp_path / "in", "--test_dir", tmp_path / "out")
    assert f"{tmp_path / 'out' / 'clip.mkv'}: both " in err and "would be written here; rename one" in err
    assert not (tmp_path / "out").exists()


def test_a_video_whose_output_becomes_mkv_never_lands_on_an_input(tmp_path, random_weights):
    (tmp_path / "P" / "in" / "in").mkdir(parents=True)
    write_clip(tmp_path / "P" / "in" / "clip.mkv", moving_frames(32, 24, 2))
    write_clip(tmp_path / "P" / "in" / "in" / "clip.avi", moving_frames(32, 24, 2))
    data = (tmp_path / "P" / "in" / "clip.mkv").read_bytes()
    err = refused(random_weights, "--input_dir", tmp_path / "P" / "in", "--test_dir", tmp_path / "P")
    assert f"{tmp_path / 'P' / 'in' / 'clip.mkv'}: would overwrite an input" in err
    assert (tmp_path / "P" / "in" / "clip.mkv").read_bytes() == data


def test_a_png_output_never_replaces_an_existing_file_beside_its_input(tmp_path, random_weights):
    Image.fromarray(dark((16, 12))).save(tmp_path / "photo.jpg")
    Image.fromarray(dark((16, 12), seed=1)).save(tmp_path / "photo.png")
    data = (tmp_path / "photo.png").read_bytes()
    err = refused(random_weights, "--input_dir", tmp_path / "photo.jpg", "--test_dir", tmp_path,
                  "--output_format", "png")
    assert f"{tmp_path / 'photo.png'}: would replace a file beside its input" in err
    assert (tmp_path / "photo.png").read_bytes() == data


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(dark((8, 8)), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (3, 1), (8, 2)])
def test_batching_and_worker_threads_give_each_image_its_own_output(tmp_path, random_weights, batch_size, num_workers):
    (tmp_path / "in").mkdir(exist_ok=True)
    for i, size in enumerate([(24, 16)] * 4 + [(20, 30)] * 3 + [(24, 16)]):
        Image.fromarray(dark(size, seed=i)).save(tmp_path / "in" / f"{i}.png")
    out = tmp_path / f"out_{batch_size}_{num_workers}"
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(out), "--batch_size", str(batch_size),
                                "--num_workers", str(num_workers)]) == 0
    net = load_enhance_net(random_weights)
    for i in range(8):
        x = torch.from_numpy(read_image(tmp_path / "in" / f"{i}.png")).permute(2, 0, 1)[None]
        with torch.inference_mode():
            expected = to_uint8(net(x)[0][0]).permute(1, 2, 0).numpy().astype(np.int16)
        assert np.abs(np.asarray(Image.open(out / f"{i}.png"), dtype=np.int16) - expected).max() <= 1, i


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs an OS with CPU affinity (Linux)")
def test_the_default_worker_count_is_the_cores_the_process_may_use_plus_one():
    code = ("import os, test; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "print(test.parse_args([]).num_workers)")
    pinned = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert pinned.stdout.split() == ["2"]
    assert enhance_script.parse_args([]).num_workers == len(os.sched_getaffinity(0)) + 1


def test_worker_threads_wait_rather_than_hold_more_pixels_than_the_budget(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    plan = {tmp_path / "in" / f"{i}.png": tmp_path / f"{i}.png" for i in range(7)}
    for i, src in enumerate(plan):  # the last one alone is over the budget, and goes through on its own
        Image.fromarray(dark((32, 24) if i < 6 else (96, 72), seed=i)).save(src)
    monkeypatch.setattr(images, "PIXELS_IN_FLIGHT", 2 * 32 * 24)  # two of the small images
    held, peak, lock = [0], [0], threading.Lock()

    def slow_read(path, rgbx=False, before_decoding=None):
        def admitted(pixels):  # counted once the budget lets the image be decoded
            before_decoding(pixels)
            with lock:
                held[0] += 1
                peak[0] = max(peak[0], held[0])
            time.sleep(0.05)  # every worker has time to start its own image
        return files.read_pixels(path, rgbx, admitted)

    def counted_write(array, path):
        files.write_image(array, path)
        with lock:
            held[0] -= 1

    monkeypatch.setattr(images, "read_pixels", slow_read)
    monkeypatch.setattr(images, "write_image", counted_write)
    done, skipped, _ = enhance_each(lambda x: x, plan, num_workers=4)
    assert (done, skipped, peak[0]) == (7, [], 2)
    for src, dst in plan.items():
        assert np.array_equal(np.asarray(Image.open(dst)), np.asarray(Image.open(src)))


def test_an_output_that_cannot_be_written_is_named_and_the_run_goes_on(tmp_path, random_weights, capsys):
    (tmp_path / "in").mkdir()
    for name in ["a.png", "b.png"]:
        Image.fromarray(dark((16, 12))).save(tmp_path / "in" / name)
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.count("a.png: cannot write") == 1
    assert Image.open(tmp_path / "out" / "b.png").size == (16, 12)


def skipped_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("skipped ")]


def test_a_test_dir_that_names_a_file_is_one_line_per_image_and_video(tmp_path, random_weights, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(dark((16, 12))).save(tmp_path / "in" / "a.png")
    write_clip(tmp_path / "in" / "clip.mp4", moving_frames(32, 24, 2))
    (tmp_path / "out").write_text("a file, not a folder")
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out")]) == 1
    lines = skipped_lines(capsys.readouterr().err)
    assert len(lines) == 2 and all(": cannot write (" in line for line in lines)
    assert {Path(line.split()[1].rstrip(":")).name for line in lines} == {"a.png", "clip.mp4"}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_under_one_video_is_one_line_and_the_next_video_is_written(tmp_path, random_weights,
                                                                                monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_clip(tmp_path / "in" / name, moving_frames(32, 24, 4))
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=1))  # atomic_path's temporary names, known ahead
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f".a.mp4.{uuid.UUID(int=1).hex}.tmp").symlink_to("/dev/full")
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out")]) == 1
    assert skipped_lines(capsys.readouterr().err) == [
        f"skipped {tmp_path / 'out' / 'a.mp4'}: cannot write (No space left on device)"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.mp4"]


@pytest.mark.parametrize("flag, value, message", [("--crf", "99", "must be in 0..51"),
                                                  ("--scale_factor", "0", "must be at least 1"),
                                                  ("--batch_size", "0", "must be at least 1"),
                                                  ("--temporal_smoothing", "1.0", "must be in [0, 1)")])
def test_a_bad_flag_is_one_line_with_exit_status_2_before_any_image_is_enhanced(tmp_path, random_weights, flag,
                                                                               value, message):
    (tmp_path / "in").mkdir()
    Image.fromarray(dark((16, 12))).save(tmp_path / "in" / "a.png")
    result = run_cli("--weight_dir", random_weights, "--input_dir", tmp_path / "in", "--test_dir", tmp_path / "out",
                     flag, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(f"error: {flag} {value}: {message}")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_is_one_line_with_exit_status_130_and_leaves_no_partial_file(tmp_path, random_weights, monkeypatch,
                                                                           capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(dark((16, 12))).save(tmp_path / "in" / "a.png")

    def pressed_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "enhance_uint8", pressed_ctrl_c)
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (f"interrupted: the outputs written so far in {tmp_path / 'out'}"
                                                        " are whole; the ones in progress were not written")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_videos_in_the_folder_are_enhanced_beside_the_images_and_a_fake_one_is_named(tmp_path, random_weights):
    (tmp_path / "in" / "clips").mkdir(parents=True)
    Image.fromarray(dark((32, 24))).save(tmp_path / "in" / "a.png")
    write_clip(tmp_path / "in" / "clips" / "night.mp4", moving_frames(64, 48, 6), audio="aac")
    (tmp_path / "in" / "clips" / "fake.mp4").write_text("not a video")
    result = run_cli("--weight_dir", random_weights, "--input_dir", tmp_path / "in", "--test_dir", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if "fake.mp4" in line]
    assert len(named) == 1 and named[0].startswith("skipped ")
    assert "6 frames" in result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"1 image and 1 video enhanced into {tmp_path / 'out'}, "
                                                      "1 skipped; images: model ")
    with av.open(str(tmp_path / "out" / "clips" / "night.mp4")) as clip:
        assert clip.streams.video[0].frames == 6 and len(clip.streams.audio) == 1
    assert not (tmp_path / "out" / "clips" / "fake.mp4").exists()


def test_the_summary_counts_the_videos_from_a_cut_or_damaged_input(tmp_path, random_weights):
    (tmp_path / "in").mkdir()
    for name in ("cut.mkv", "whole.mkv"):
        write_clip(tmp_path / "in" / name, moving_frames(64, 48, 24))
    cut_inside_packet(tmp_path / "in" / "cut.mkv", 12)
    result = run_cli("--weight_dir", random_weights, "--input_dir", tmp_path / "in", "--test_dir", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "(truncated or damaged)" in next(line for line in result.stdout.splitlines() if "cut.mkv: 12 frames" in line)
    assert result.stdout.splitlines()[-1] == (f"0 images and 2 videos enhanced into {tmp_path / 'out'} (1 from a cut "
                                              "or damaged input), 0 skipped")


def test_a_later_run_removes_the_temporaries_a_killed_run_left_beside_its_outputs_and_nothing_else(
        tmp_path, random_weights):
    (tmp_path / "in").mkdir()
    Image.fromarray(dark((16, 12))).save(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    hex32 = "0123456789abcdef" * 2
    left = [f".a.png.{hex32}.tmp"]
    kept = [f".b.png.{hex32}.tmp", f".a.png.{hex32[:31]}.tmp", f".a.png.{hex32.upper()}.tmp", f"a.png.{hex32}.tmp",
            f".a.png.{hex32}.tmp.bak", "notes.txt"]
    for name in left + kept:
        (tmp_path / "out" / name).write_bytes(b"half an image")
    assert enhance_script.main(["--weight_dir", str(random_weights), "--input_dir", str(tmp_path / "in"),
                                "--test_dir", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(kept + ["a.png"])


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif"])
def test_an_image_is_written_as_the_file_pil_writes_itself(tmp_path, monkeypatch, suffix):
    """write_image's file (written atomically) is byte for byte the file PIL saves at that path with
    its default 64 KiB write buffer (its size sets a PNG's IDAT chunks), for an image whose file is many of them
    (coffee.png at 4x)."""
    image = np.asarray(Image.open(ROOT / "data/test_data/samples/coffee.png").convert("RGB").resize((2048, 1364)))
    write_image(image, tmp_path / f"written{suffix}")
    image_format = Image.registered_extensions()[suffix]
    monkeypatch.setattr(ImageFile, "MAXBLOCK", 65536)
    Image.fromarray(image).save(tmp_path / f"pil{suffix}", **files.SAVE_OPTIONS.get(image_format, {}))
    assert (tmp_path / f"written{suffix}").stat().st_size > 4 * 65536
    assert (tmp_path / f"written{suffix}").read_bytes() == (tmp_path / f"pil{suffix}").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pil{suffix}", f"written{suffix}"]


def test_a_jpeg_is_encoded_into_its_file_where_pil_releases_the_gil(tmp_path, monkeypatch):
    """PIL's JPEG encoder releases the GIL only when it is handed the output's file descriptor (encoding into memory
    holds it, and test.py's worker threads would take turns)."""
    handed = []

    def recording_encode_tile(im, fp, tile, bufsize, fh, exc=None):
        handed.append(fh)
        return encode_tile(im, fp, tile, bufsize, fh, exc)

    encode_tile = ImageFile._encode_tile
    monkeypatch.setattr(ImageFile, "_encode_tile", recording_encode_tile)
    write_image(dark((1200, 900)), tmp_path / "out.jpg")
    [fh] = handed
    assert fh is not None and Image.open(tmp_path / "out.jpg").size == (1200, 900)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif"])
def test_rgbx_pixels_write_the_file_their_rgb_writes(tmp_path, suffix):
    """PIL's own RGBX memory, read without a copy, is written as the same file as its RGB copy, in every format."""
    Image.fromarray(dark((40, 30))).save(tmp_path / "in.png")
    rgbx = files.read_pixels(tmp_path / "in.png", rgbx=True)
    rgb = files.read_pixels(tmp_path / "in.png")
    assert rgbx.shape == (30, 40, 4) and not rgbx.flags.writeable and np.array_equal(rgbx[..., :3], rgb)
    write_image(rgbx, tmp_path / f"rgbx{suffix}")
    write_image(rgb, tmp_path / f"rgb{suffix}")
    assert (tmp_path / f"rgbx{suffix}").read_bytes() == (tmp_path / f"rgb{suffix}").read_bytes()


@pytest.mark.parametrize("mode, size", [("L", (40, 30)), ("P", (40, 30)), ("I;16", (40, 30)), ("RGB", (2100, 2100))],
                         ids=["gray", "palette", "16-bit", "above one 16 MB block"])
def test_rgbx_reading_falls_back_to_a_copy_where_pil_cannot_hand_its_memory_out(tmp_path, mode, size):
    Image.new(mode, size, 7).save(tmp_path / "in.png")
    assert np.array_equal(files.read_pixels(tmp_path / "in.png", rgbx=True), files.read_pixels(tmp_path / "in.png"))
    assert files.read_pixels(tmp_path / "in.png", rgbx=True).shape[-1] == 3


def test_outputs_get_the_usual_file_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_image(dark((8, 8)), tmp_path / "out.png")
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
