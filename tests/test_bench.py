"""bench.py runs in a CI-sized form and reports the default path beside the reference."""
import torch

import bench
from model import EnhanceNet, recurrent_enhance


def test_bench_prints_reference_and_default_rows_that_agree(capsys):
    bench.main(["--sizes", "48x36,30x20", "--threads", "1", "--warmup", "1", "--repeats", "2", "--folder_images", "3",
                "--folder_size", "40x30", "--weight_dir", "absent.pth"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]]
    paths = ["reference (authors' math)", "default (inference.enhance)", "default without a C compiler"]
    folder_rows = ["test.py --batch_size 1 --num_workers 0, start-up excluded", "test.py (defaults), start-up excluded"]
    assert [row[2] for row in rows] == paths * 2 + folder_rows
    for row in rows[:6]:
        assert float(row[3]) > 0 and float(row[6].removesuffix("/255")) <= 1.0
    assert rows[6][0] == "3 x 40x30 JPEG" and all(float(row[3]) == float(row[3]) for row in rows[6:])


def test_reference_path_is_eq1_on_the_upsampled_factor():
    net = EnhanceNet().eval()
    x = torch.rand(1, 3, 36, 48)
    with torch.no_grad():
        torch.testing.assert_close(bench.reference_forward(net, x), recurrent_enhance(x, net.enhancement_factor(x)))
