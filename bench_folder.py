"""test.py end to end, beside the floor it cannot beat: the codec's own cost, and the image's own size.

    python bench_folder.py                       # 300 JPEGs of 1200x900, and one 8000x8000 PNG
    python bench_folder.py --images 8 --size 64x48 --huge 512    # a quick check

Speed: `python test.py` in a fresh process, as a user runs it, on a short and a long folder of the same generated
dark JPEGs, into a new, empty folder each time, as a first run writes (replacing an earlier run's files costs the
file system more: 0.85 ms a 1200x900 JPEG on the README's VM); the slope between the two is its cost per image with
start-up excluded (median of --repeats, in turns). Beside it, the floor measured in the same run and timed the same
way (wall time over the folder): decoding each JPEG and encoding it again as test.py writes (PIL, quality 95) on
one thread, with no enhancement; decoding it and encoding the enhanced image test.py wrote for it, which costs the
encoder more (brighter, more detail to code); and the first on test.py's thread count, what the cores give the
codec alone.
Memory: test.py's peak RSS on one --huge x --huge PNG above its peak on a 64x64 one, beside the image's size as
8-bit RGB.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import metrics
from files import SAVE_OPTIONS
from model import EnhanceNet, init_weights

ROOT = Path(__file__).resolve().parent


def dark_jpegs(folder: Path, n: int, width: int, height: int) -> list[Path]:
    """n dim JPEGs of one size (a soft random scene, shifted a little for each), quality 90."""
    folder.mkdir(parents=True)
    base = np.random.default_rng(0).integers(0, 50, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    paths = [folder / f"{i:04d}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        Image.fromarray(np.roll(base, i, axis=1)).resize((width, height), Image.Resampling.BILINEAR).save(
            path, quality=90)
    return paths


def codec_seconds(paths: list[Path], outputs: list[Path] | None = None, threads: int = 1) -> float:
    """Wall seconds per image to decode each of `paths` and encode as test.py writes a JPEG, timed over the whole
    folder as test.py's own cost is: the decoded image itself, or the image in its `outputs` file (decoded
    beforehand, not timed); on `threads` threads. Encoded into /dev/null: a file, as test.py's outputs are (PIL's
    JPEG encoder releases the GIL into one, holds it into memory), with no file system behind it."""
    encoded = [Image.open(path) for path in outputs] if outputs else None
    for image in encoded or []:
        image.load()

    def one(i: int) -> None:
        with Image.open(paths[i]) as img, open(os.devnull, "wb") as nowhere:
            img.load()
            (encoded[i] if encoded else img).save(nowhere, format="JPEG", **SAVE_OPTIONS["JPEG"])
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(paths))))
    return (time.perf_counter() - start) / len(paths)


def run_test_script(weights: Path, input_dir: Path, test_dir: Path, extra: list[str], threads: int,
                    measure: str = "seconds") -> float:
    """Wall seconds of `python test.py` on `input_dir` in a fresh process, or (`measure="peak_mb"`) its peak RSS."""
    command = [sys.executable, str(ROOT / "test.py"), "--weight_dir", str(weights), "--input_dir", str(input_dir),
               "--test_dir", str(test_dir), "--device", "cpu", *extra]
    if measure == "peak_mb":  # the child reports its own VmHWM as its last act
        code = ("import runpy, sys; sys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')"
                "\nexcept SystemExit:\n    pass\nprint(next(l for l in open('/proc/self/status') "
                "if l.startswith('VmHWM')), file=sys.stderr)")
        command = [sys.executable, "-c", code, *command[1:]]
    start = time.perf_counter()
    child = subprocess.run(command, check=True, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS=str(threads)), cwd=ROOT)
    if measure == "peak_mb":
        return int(child.stderr.strip().splitlines()[-1].split()[-2]) / 1024  # "VmHWM:  123456 kB"
    return time.perf_counter() - start


def speed_rows(weights: Path, work: Path, args) -> list[list[str]]:
    width, height = map(int, args.size.split("x"))
    paths = dark_jpegs(work / "in", args.images, width, height)
    short = work / "short"  # the first quarter again: start-up cancels in the slope between the two runs
    short.mkdir()
    for path in paths[:max(1, args.images // 4)]:
        shutil.copy(path, short)
    extra_images = args.images - len(list(short.iterdir()))
    runs = {"test.py --batch_size 1 --num_workers 0": ["--batch_size", "1", "--num_workers", "0"],
            "test.py (defaults)": []}
    slopes, floors, output_floors, codec_walls = {label: [] for label in runs}, [], [], []
    for _ in range(args.repeats):  # every run in turns, so that the machine's slow spells fall on all of them
        for label, extra in runs.items():
            seconds = []
            for source in (short, work / "in"):
                shutil.rmtree(work / "out", ignore_errors=True)  # see the module docstring: a new folder each run
                seconds.append(run_test_script(weights, source, work / "out", extra, args.threads))
            slopes[label].append((seconds[1] - seconds[0]) / max(extra_images, 1))
            floors.append(codec_seconds(paths))
            output_floors.append(codec_seconds(paths, [work / "out" / path.name for path in paths]))
            codec_walls.append(codec_seconds(paths, threads=args.threads))
    floor, output_floor = statistics.median(floors), statistics.median(output_floors)
    rows = [[f"{args.images} x {args.size} JPEG", label, f"{statistics.median(s) * 1e3:.2f} ms/image",
             f"{floor * 1e3:.2f} ms/image", f"{statistics.median(s) / floor:.2f}x",
             f"{output_floor * 1e3:.2f} ms/image", f"{statistics.median(s) / output_floor:.2f}x"]
            for label, s in slopes.items()]
    codec_wall = statistics.median(codec_walls)
    return rows + [[f"{args.images} x {args.size} JPEG", f"decode + encode alone, no network, threads: {args.threads}",
                    f"{codec_wall * 1e3:.2f} ms/image", f"{floor * 1e3:.2f} ms/image", f"{codec_wall / floor:.2f}x",
                    "", ""]]


def memory_row(weights: Path, work: Path, args) -> list[str]:
    side = args.huge
    y, x = np.mgrid[0:side, 0:side]
    scene = np.stack([x * 40 // side, y * 40 // side, (x + y) * 30 // (2 * side)], -1).astype(np.uint8)
    for name, image in (("huge", scene), ("tiny", scene[:64, :64])):
        (work / name).mkdir()
        Image.fromarray(image).save(work / name / f"{name}.png", compress_level=1)
    del scene
    peaks = {name: run_test_script(weights, work / name, work / f"out_{name}", [], args.threads, "peak_mb")
             for name in ("tiny", "huge")}
    image_mb = side * side * 3 / 2**20
    return [f"1 x {side}x{side} PNG", "test.py (defaults), peak RSS above a 64x64 run",
            f"{peaks['huge'] - peaks['tiny']:.0f} MiB", f"{image_mb:.0f} MiB (the image, 8-bit RGB)",
            f"{(peaks['huge'] - peaks['tiny']) / image_mb:.2f}x", "", ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weight_dir", type=Path, default=ROOT / "snapshots/sgz_ours.pth",
                        help="EFE weights; random N(0, 0.02) when the file is missing "
                             "(default: snapshots/sgz_ours.pth)")
    parser.add_argument("--images", type=int, default=300,
                        help="generated JPEGs; the slope spans three quarters of them, so that start-up's jitter "
                             "(tenths of a second) moves it by under 1 ms an image at 1200x900 (default: 300)")
    parser.add_argument("--size", default="1200x900", help="their WxH (default: 1200x900)")
    parser.add_argument("--huge", type=int, default=8000, help="side of the PNG for the memory row; 0 skips it "
                        "(default: 8000)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for test.py (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, in turns; medians shown (default: 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = args.weight_dir
        if not weights.is_file():
            torch.manual_seed(0)
            net = EnhanceNet()
            init_weights(net)
            weights = work / "random.pth"
            torch.save(net.state_dict(), weights)
        rows = speed_rows(weights, work / "speed", args)
        if args.huge:
            (work / "memory").mkdir()
            rows.append(memory_row(weights, work / "memory", args))
    print(f"\n{metrics.cpu_name()}, test.py with OMP_NUM_THREADS={args.threads}, torch {torch.__version__}")
    print("| input | run | test.py | floor | test.py / floor | floor, encoding test.py's output | test.py / that |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
