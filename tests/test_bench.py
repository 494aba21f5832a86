"""bench.py runs in a CI-sized form and reports the default path beside the reference."""
import sys

import pytest
import torch

import bench
from model import EnhanceNet, recurrent_enhance


def bench_rows(capsys, *args: str) -> tuple[list[list[str]], str]:
    """The table's rows, split into cells, and what was printed before the table, of a small bench.py run."""
    bench.main(["--sizes", "48x36,30x20", "--threads", "1", "--warmup", "1", "--repeats", "2", "--folder_size",
                "40x30", "--weight_dir", "absent.pth", *args])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]], out.split("\ntorch ")[0]


def test_bench_prints_reference_default_and_onnxruntime_rows_that_agree(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    rows, _ = bench_rows(capsys, "--folder_images", "3")
    paths = ["reference (authors' math)", "default (inference.enhance)", "default without a C compiler", "onnxruntime"]
    folder_rows = ["test.py --batch_size 1 --num_workers 0, start-up excluded", "test.py (defaults), start-up excluded"]
    assert [row[2] for row in rows] == paths * 2 + folder_rows
    for row in rows[:8]:
        assert float(row[3]) > 0 and float(row[6].removesuffix("/255")) <= 1.0
    assert rows[8][0] == "3 x 40x30 JPEG" and all(float(row[3]) == float(row[3]) for row in rows[8:])


def test_bench_without_onnxruntime_skips_its_rows_with_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rows, before_table = bench_rows(capsys, "--folder_images", "0")
    assert [row[2] for row in rows] == ["reference (authors' math)", "default (inference.enhance)",
                                        "default without a C compiler"] * 2
    assert len(before_table.splitlines()) == 1 and "pip install onnxruntime" in before_table


def test_reference_path_is_eq1_on_the_upsampled_factor():
    net = EnhanceNet().eval()
    x = torch.rand(1, 3, 36, 48)
    with torch.no_grad():
        torch.testing.assert_close(bench.reference_forward(net, x), recurrent_enhance(x, net.enhancement_factor(x)))
