"""evaluate.py end to end: tables written, bad pairs reported per image, the LOL numbers the README states."""
import csv

import cv2
import numpy as np
import pytest
from conftest import SHARED, requires_brisque_model, requires_shared

import metrics
from evaluate import main
from files import read_image, to_uint8

DATA = SHARED / "data/test_data"
WEIGHTS = SHARED / "weights"
NETS = ["--weights", str(WEIGHTS / "sgz_official_epoch99.pth"),
        "--zero_dce_pp_weights", str(WEIGHTS / "zero_dce_pp_epoch99.pth"),
        "--zero_dce_weights", str(WEIGHTS / "zero_dce_epoch99.pth"), "--sci_weights", str(WEIGHTS / "sci_medium.pt")]


def means(path) -> dict:
    with open(path) as f:
        return {(r["method"], r["dataset"], r["metric"]): float(r["mean"]) for r in csv.DictReader(f)}


def write(path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    """A paired set of two real LOL pairs at half size, one low image without ground truth and one whose ground
    truth has another size; an unpaired set of two DICM photos at 256x192."""
    root = tmp_path_factory.mktemp("data")
    for name in ["1.png", "111.png", "146.png"]:
        for side in ["low", "high"]:
            img = cv2.imread(str(DATA / "LOL" / side / name))
            write(root / "pairs" / side / name, cv2.cvtColor(cv2.resize(img, (300, 200), interpolation=cv2.INTER_AREA),
                                                             cv2.COLOR_BGR2RGB))
    (root / "pairs/high/146.png").unlink()
    write(root / "pairs/low/odd.png", np.full((200, 300, 3), 20, np.uint8))
    write(root / "pairs/high/odd.png", np.full((200, 296, 3), 90, np.uint8))
    for name in ["01.jpg", "02.jpg"]:
        img = cv2.resize(cv2.imread(str(DATA / "DICM" / name)), (256, 192), interpolation=cv2.INTER_AREA)
        write(root / "photos" / name.replace(".jpg", ".png"), cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return root


@pytest.fixture(scope="module")
def run(small_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    status = main(["--data_dir", str(small_sets), "--paired", "pairs", "--unpaired", "photos", *NETS,
                   "--out_dir", str(out), "--efficiency_size", "120", "90", "--warmup", "0", "--repeats", "1",
                   "--save_images"])
    return status, out


@requires_shared
@requires_brisque_model
def test_run_completes_and_writes_every_table(run):
    status, out = run
    assert status == 0
    for name in ["table5_unpaired", "table6_paired", "table7_efficiency", "gap", "per_image"]:
        assert (out / f"{name}.csv").stat().st_size > 0
    for name in ["table5_unpaired", "table6_paired", "table7_efficiency", "gap"]:
        assert "Convention: " in (out / f"{name}.md").read_text()


@requires_shared
@requires_brisque_model
def test_missing_ground_truth_and_size_mismatch_are_reported_per_image(run):
    table = (run[1] / "table6_paired.md").read_text()
    assert "146.png: no ground truth" in table
    assert "odd.png: size 300x200 differs from ground truth odd.png 296x200" in table
    assert "Images scored per method: pairs 2." in table


@requires_shared
@requires_brisque_model
def test_paired_scores_are_those_of_the_written_outputs(run, small_sets):
    out = run[1]
    table = means(out / "table6_paired.csv")
    for method in ["SGZ", "Zero-DCE", "SCI", "LIME"]:
        expected = np.mean([metrics.psnr(to_uint8(read_image(out / "images" / method / "pairs" / n)),
                                         to_uint8(read_image(small_sets / "pairs/high" / n)))
                            for n in ["1.png", "111.png"]])
        assert table[method, "pairs", "PSNR"] == pytest.approx(expected, abs=1e-6)
    assert table["SGZ", "pairs", "PSNR"] > table["Input", "pairs", "PSNR"] + 5


@requires_shared
@requires_brisque_model
def test_unpaired_table_has_every_method_and_an_average(run):
    table = means(run[1] / "table5_unpaired.csv")
    for method in ["Input", "SGZ", "Zero-DCE++", "Zero-DCE", "SCI", "HE", "CLAHE", "Gamma", "LIME"]:
        assert 0 < table[method, "photos", "BRISQUE"] <= 100 and 0 < table[method, "photos", "NIQE"] < 20
        assert table[method, "Average", "NIQE"] == table[method, "photos", "NIQE"]


@requires_shared
@requires_brisque_model
def test_efficiency_table_counts_sgz_zero_dce_and_sci(run):
    table = means(run[1] / "table7_efficiency.csv")
    assert table["SGZ", "120x90", "Params"] == 10_561 and table["Zero-DCE", "120x90", "Params"] == 79_416
    assert table["Zero-DCE", "120x90", "FLOPs (G)"] > 100 * table["SGZ", "120x90", "FLOPs (G)"]
    assert table["SCI", "120x90", "Params"] == 258
    assert table["SCI", "120x90", "FLOPs (G)"] == pytest.approx(2 * 3 * 81 * 120 * 90 / 1e9, abs=1e-6)
    assert table["SCI", "120x90", "Time (ms)"] > 0
    assert table["Gamma", "120x90", "Time (ms)"] > 0


@requires_shared
@requires_brisque_model
def test_a_missing_weights_file_skips_its_method_with_one_line(small_sets, tmp_path, capsys):
    status = main(["--data_dir", str(small_sets), "--paired", "pairs", "--tables", "6", "--methods", "SGZ", "Gamma",
                   "--weights", str(tmp_path / "absent.pth"), "--out_dir", str(tmp_path)])
    assert status == 0
    assert f"SGZ skipped: {tmp_path / 'absent.pth'}: no such weight file" in capsys.readouterr().err
    assert {m for m, _, _ in means(tmp_path / "table6_paired.csv")} == {"Gamma"}


def test_a_missing_set_folder_is_skipped_with_one_line(tmp_path, capsys):
    for side in ("low", "high"):
        write(tmp_path / "pairs" / side / "a.png", np.full((32, 48, 3), 30 if side == "low" else 120, np.uint8))
    assert main(["--data_dir", str(tmp_path), "--paired", "absent", "pairs", "--tables", "6", "--methods", "Gamma",
                 "--out_dir", str(tmp_path / "out")]) == 0
    assert f"{tmp_path / 'absent' / 'low'}: no such folder, set skipped" in capsys.readouterr().err


@requires_shared
@requires_brisque_model
def test_authors_sgz_weights_on_lol_eval15_give_the_readme_numbers(tmp_path):
    assert main(["--data_dir", str(DATA), "--paired", "LOL", "--tables", "6", "--methods", "SGZ", *NETS[:2],
                 "--out_dir", str(tmp_path)]) == 0
    table, gap = means(tmp_path / "table6_paired.csv"), means(tmp_path / "gap.csv")
    assert table["SGZ", "LOL", "PSNR"] == pytest.approx(16.04, abs=0.005)
    assert table["SGZ", "LOL", "SSIM"] == pytest.approx(0.5756, abs=5e-4)
    assert table["SGZ", "LOL", "SSIM-G"] == pytest.approx(0.5702, abs=5e-4)
    # With each output's brightness matched to its ground truth, PSNR lands on the paper's 20.60.
    assert gap["SGZ", "LOL", "PSNR GT-mean"] == pytest.approx(20.58, abs=0.005)
    assert gap["SGZ", "LOL", "SSIM-G-Y"] == pytest.approx(0.7470, abs=5e-4)
    # Wang's reference ssim.m (grey, 2x downsampled) lands on the paper's 0.79.
    assert gap["SGZ", "LOL", "SSIM-W"] == pytest.approx(0.7946, abs=5e-4)


def test_no_test_images_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no test images under --data_dir {tmp_path}")
    assert not (tmp_path / "out").exists()


def test_without_the_brisque_model_table_5_has_niqe_and_one_line_says_why(tmp_path, capsys):
    (tmp_path / "set").mkdir()
    cv2.imwrite(str(tmp_path / "set" / "a.png"), np.random.default_rng(0).integers(0, 60, (256, 256, 3), np.uint8))
    status = main(["--data_dir", str(tmp_path), "--tables", "5", "--unpaired", "set", "--methods", "Input", "Gamma",
                   "--brisque_model", str(tmp_path / "absent.yml"), "--out_dir", str(tmp_path / "out")])
    assert status == 0
    assert f"BRISQUE skipped: {tmp_path / 'absent.yml'}: BRISQUE model file missing" in capsys.readouterr().err
    table = (tmp_path / "out" / "table5_unpaired.md").read_text()
    assert "set NIQE" in table and "BRISQUE" not in table.split("Convention")[1].split("\n", 1)[1]
