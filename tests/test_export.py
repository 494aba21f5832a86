"""export.py and deploy.py: one portable ONNX graph for any size, whose onnxruntime outputs are test.py's to 1/255."""
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deploy
import export as export_script
import test as enhance_script
from conftest import ROOT, SHARED, random_net, requires_shared
from files import read_image, to_uint8

OURS = ROOT / "snapshots" / "sgz_ours.pth"
OFFICIAL = SHARED / "weights" / "sgz_official_epoch99.pth"
WEIGHTS = [pytest.param(OURS, id="ours"), pytest.param(OFFICIAL, id="authors", marks=requires_shared)]


def run_export(*args) -> tuple[int, str, str]:
    """export.py's exit status and what it printed on stdout and on stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = export_script.main(list(map(str, args)))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def export_once(tmp_path_factory):
    """export.py on a weight file, run once per file in this module: weights -> (graph, what it printed)."""
    for package in deploy.OPTIONAL_PACKAGES:
        pytest.importorskip(package)
    runs = {}

    def export(weights: Path) -> tuple[Path, str]:
        if weights not in runs:
            path = tmp_path_factory.mktemp("onnx") / "sgz.onnx"
            runs[weights] = (path, *run_export("--weight_dir", weights, "--onnx", path))
        path, status, printed, error = runs[weights]
        assert status == 0, error
        return path, printed
    return export


def test_export_writes_the_checked_graph_and_prints_each_largest_difference(export_once):
    path, printed = export_once(OURS)
    lines = printed.splitlines()
    assert [p.name for p in path.parent.iterdir()] == ["sgz.onnx"]  # no temporary file left
    checks = [line.split(": largest difference ") for line in lines[:-1]]
    assert [label for label, _ in checks] == [f"onnxruntime vs PyTorch, random {size}" for size in
                                              ["600x396", "600x400", "301x203, batch of 2", "29x11"]]
    assert all(0 <= float(difference.split("/255")[0]) <= 1 for _, difference in checks)
    assert lines[-1].startswith(f"wrote {path}: ONNX opset 18")


def test_graph_has_dynamic_sizes_no_pow_and_only_portable_ops(export_once):
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(export_once(OURS)[0])
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert "Pow" not in ops and "Resize" in ops and ops <= deploy.PORTABLE_OPS
    dims = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in [*graph.graph.input, *graph.graph.output]]
    assert dims[0] == ["batch", 3, "height", "width"] and all(len(d) == 4 and d[1] == 3 for d in dims[1:])
    assert [value.name for value in graph.graph.output] == deploy.OUTPUT_NAMES


def assert_within_one_level_of_test_py(graph: Path, weights: Path, inputs: Path, outputs: Path) -> None:
    """onnxruntime's enhanced images, rounded as test.py rounds, are within 1 of 255 of what test.py writes."""
    assert enhance_script.main(["--weight_dir", str(weights), "--input_dir", str(inputs), "--test_dir", str(outputs),
                                "--device", "cpu"]) == 0
    session = deploy.session(graph, threads=1)
    sources = sorted(inputs.glob("*.png"))
    assert sources
    for src in sources:
        x = torch.from_numpy(read_image(src)).permute(2, 0, 1)[None]
        ours = to_uint8(deploy.run(session, x)[0][0]).permute(1, 2, 0).numpy().astype(np.int16)
        written = np.asarray(Image.open(outputs / src.name), dtype=np.int16)
        assert ours.shape == written.shape, src.name
        assert np.abs(ours - written).max() <= 1, src.name
        assert (ours != written).mean() < 1e-3, src.name  # float rounding tips a few values, nothing systematic


@requires_shared
@pytest.mark.parametrize("weights", WEIGHTS)
def test_onnxruntime_is_within_1_255_of_test_py_on_lol(tmp_path, export_once, weights):
    graph = export_once(weights)[0]
    assert_within_one_level_of_test_py(graph, weights, SHARED / "data/test_data/LOL/low", tmp_path)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_onnxruntime_is_within_1_255_of_test_py_at_odd_sizes(tmp_path, export_once, weights):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sample = Image.open(ROOT / "data/test_data/samples/chelsea.png")
    for width, height in [(301, 203), (29, 11), (7, 30)]:  # the last two: a side shorter than the scale factor
        sample.crop((3, 5, 3 + width, 5 + height)).save(inputs / f"{width}x{height}.png")
    assert_within_one_level_of_test_py(export_once(weights)[0], weights, inputs, tmp_path / "out")


def test_a_graph_that_disagrees_with_pytorch_is_one_line_exit_1_and_not_written(tmp_path, export_once, monkeypatch):
    onnx = pytest.importorskip("onnx")
    ours = onnx.load(export_once(OURS)[0])
    monkeypatch.setattr(deploy, "to_onnx", lambda net, opset: ours)  # our graph beside other weights
    weights = tmp_path / "random.pth"
    torch.save(random_net().state_dict(), weights)
    status, _, error = run_export("--weight_dir", weights, "--onnx", tmp_path / "out.onnx")
    assert status == 1 and error.count("\n") == 1 and "over 1/255" in error
    assert not (tmp_path / "out.onnx").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["random.pth"]


def test_an_op_outside_the_portable_set_is_refused(export_once, monkeypatch):
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(export_once(OURS)[0])
    deploy.check_portable(graph)
    monkeypatch.setattr(deploy, "PORTABLE_OPS", deploy.PORTABLE_OPS - {"Tanh"})
    with pytest.raises(ValueError, match=r"\['Tanh'\]"):
        deploy.check_portable(graph)


def test_check_images_are_each_run_and_printed(tmp_path):
    for package in deploy.OPTIONAL_PACKAGES:
        pytest.importorskip(package)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name, size in (("a.png", (37, 25)), ("sub/b.jpg", (24, 36))):
        pixels = np.random.default_rng(0).integers(0, 60, (*size[::-1], 3), np.uint8)
        Image.fromarray(pixels).save(tmp_path / "in" / name)
    status, printed, error = run_export("--weight_dir", OURS, "--onnx", tmp_path / "sgz.onnx", "--check_images",
                                        tmp_path / "in")
    assert status == 0, error
    labels = [line.split(": largest difference ")[0] for line in printed.splitlines()[:-1]]
    assert labels[-2:] == [f"onnxruntime vs PyTorch, {tmp_path / 'in' / 'a.png'} 37x25",
                           f"onnxruntime vs PyTorch, {tmp_path / 'in' / 'sub' / 'b.jpg'} 24x36"]


def test_missing_weights_are_one_line_and_exit_2(tmp_path):
    status, _, error = run_export("--weight_dir", tmp_path / "absent.pth", "--onnx", tmp_path / "out.onnx")
    assert status == 2 and error.count("\n") == 1 and "absent.pth: no such weight file" in error
    assert not (tmp_path / "out.onnx").exists()


def test_without_onnxruntime_export_says_how_to_install_it_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    status, _, error = run_export("--onnx", tmp_path / "out.onnx")
    assert status == 2 and error.count("\n") == 1 and "pip install onnxruntime" in error
