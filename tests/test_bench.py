"""bench.py and bench_folder.py run in a CI-sized form: the default path beside the reference, test.py beside
the codec floor."""
import sys

import pytest
import torch

import bench
import bench_folder
from model import EnhanceNet, recurrent_enhance


def bench_rows(capsys, *args: str) -> tuple[list[list[str]], str]:
    """The table's rows, split into cells, and what was printed before the table, of a small bench.py run."""
    bench.main(["--sizes", "48x36,30x20", "--threads", "1", "--warmup", "1", "--repeats", "2",
                "--weight_dir", "absent.pth", *args])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]], out.split("\ntorch ")[0]


def test_bench_prints_reference_default_and_onnxruntime_rows_that_agree(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    rows, _ = bench_rows(capsys)
    paths = ["reference (authors' math)", "default (inference.enhance)", "default without a C compiler", "onnxruntime"]
    assert [row[2] for row in rows if not row[2].startswith("floor: ")] == paths * 2
    for row in rows:
        assert float(row[3]) > 0 and (row[2].startswith("floor: ") or float(row[6].removesuffix("/255")) <= 1.0)


def test_each_size_ends_with_its_arithmetic_floor_and_each_row_says_how_far_above_it_it_is(capsys):
    rows, _ = bench_rows(capsys)
    for size in ("48x36", "30x20"):
        *paths, floor = [row for row in rows if row[0] == size]
        width, height = map(int, size.split("x"))
        assert floor[2] == f"floor: {bench.multiply_adds(EnhanceNet(), (width, height)) / 1e6:.0f} M multiply-adds " \
                           f"at torch.mm's {floor[2].split()[-2]} G/s" and floor[8] == "1.0x"
        floor_ms = float(floor[3])
        for row in paths:
            # the ratio of the unrounded times, to 1 decimal, against the times as printed (a row's to 2 decimals of
            # a ms, the floor's to 4): at these tiny sizes the printing's rounding alone can move it by a quarter
            ms, ratio = float(row[3]), float(row[8].removesuffix("x"))
            assert (ms - 0.005) / (floor_ms + 5e-5) - 0.05 <= ratio <= (ms + 0.005) / (floor_ms - 5e-5) + 0.05


def test_the_floor_counts_the_efe_on_the_downscaled_image_and_two_operations_a_step_of_rie():
    # 1200x900 at scale 12: 100 x 75 small pixels x (9 x 291 depthwise + 7456 pointwise weights), and 3 x 1200 x 900
    # values x 8 steps x 2
    assert bench.multiply_adds(EnhanceNet(), (1200, 900)) == 7500 * (9 * 291 + 7456) + 3 * 1200 * 900 * 8 * 2


def test_bench_without_onnxruntime_skips_its_rows_with_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rows, before_table = bench_rows(capsys)
    assert [row[2] for row in rows if not row[2].startswith("floor: ")] == [
        "reference (authors' math)", "default (inference.enhance)", "default without a C compiler"] * 2
    assert len(before_table.splitlines()) == 1 and "pip install onnxruntime" in before_table


def test_bench_folder_prints_test_py_beside_the_codec_floor_and_memory_beside_the_image(capsys):
    bench_folder.main(["--images", "4", "--size", "40x30", "--huge", "256", "--threads", "1", "--repeats", "1",
                       "--weight_dir", "absent.pth"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [row[:2] for row in rows] == [["4 x 40x30 JPEG", "test.py --batch_size 1 --num_workers 0"],
                                         ["4 x 40x30 JPEG", "test.py (defaults)"],
                                         ["4 x 40x30 JPEG", "decode + encode alone, no network, threads: 1"],
                                         ["1 x 256x256 PNG", "test.py (defaults), peak RSS above a 64x64 run"]]
    assert all(float(row[3].split()[0]) > 0 for row in rows[:3])  # the codec floor, per image
    assert all(float(row[5].split()[0]) > 0 and row[6].endswith("x") for row in rows[:2])  # on test.py's outputs
    assert rows[2][5:] == rows[3][5:] == ["", ""]
    assert all(row[4].endswith("x") and float(row[2].split()[0]) == float(row[2].split()[0]) for row in rows)
    assert rows[3][3] == "0 MiB (the image, 8-bit RGB)"  # 256 x 256 x 3 bytes, rounded


def test_reference_path_is_eq1_on_the_upsampled_factor():
    net = EnhanceNet().eval()
    x = torch.rand(1, 3, 36, 48)
    with torch.no_grad():
        torch.testing.assert_close(bench.reference_forward(net, x), recurrent_enhance(x, net.enhancement_factor(x)))
