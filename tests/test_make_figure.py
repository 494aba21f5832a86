"""Samples/make_figure.py: a grid of labelled, same-crop tiles per sample; the tracked figures are never degraded."""
import subprocess
import sys

from PIL import Image

from conftest import ROOT

SCRIPT = ROOT / "Samples" / "make_figure.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_without_every_weight_file_the_tracked_figures_are_left_alone():
    before = {p.name: p.read_bytes() for p in (ROOT / "Samples").glob("*.jpg")}
    result = run()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: Samples/ holds the README's figures with every method; give the weights")
    assert {p.name: p.read_bytes() for p in (ROOT / "Samples").glob("*.jpg")} == before


def test_a_missing_weight_file_stops_with_one_line(tmp_path):
    result = run("--sci_weights", tmp_path / "absent.pt", "--out_dir", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: SCI: {tmp_path / 'absent.pt'}: no such weight file"]
    assert not (tmp_path / "out").exists()


def test_elsewhere_it_writes_a_grid_of_crops_of_the_methods_it_has(tmp_path):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (300, 200), (20, 15, 10)).save(tmp_path / "in" / "dark.png")
    result = run("--inputs", tmp_path / "in", "--out_dir", tmp_path / "out", "--crop", "64", "--columns", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("dark.jpg: Input, SGZ (ours), HE, CLAHE, Gamma, LIME")
    assert Image.open(tmp_path / "out" / "dark.jpg").size == (3 * 64, 2 * (64 + 22))  # 6 tiles, 3 a row
