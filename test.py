"""Enhance every image and video under --input_dir into --test_dir, keeping the folder structure.

    python test.py                                    # data/test_data/ -> data/test_output/, our snapshot
    python test.py --weight_dir weights/sgz_official_epoch99.pth --input_dir data/test_data/LOL/low --test_dir out/LOL

Flag names are the authors' (their lowlight_test.py), so their commands keep working. Unlike their script,
images of any size come back at their own size (theirs crop to a multiple of --scale_factor).
Exit status: 0 when every file was enhanced, 1 when some were skipped or came from a cut or damaged video (each
named on one line), 2 on a setup error (missing folder or weights, a bad flag) that stops the run before it starts,
130 on Ctrl-C.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

import inference
from files import IMAGE_EXTENSIONS, BadInputError, find_inputs, remove_temporaries
from images import enhance_each, enhance_images, uint8_enhancer
from model import load_enhance_net
from video import VIDEO_EXTENSIONS, VideoError, enhance_video, planned_output, plural

class SetupError(Exception):
    """A problem that stops the whole run before it starts (exit status 2)."""


def plan_outputs(inputs: list[Path], input_path: Path, test_dir: Path, output_format: str) -> dict[Path, Path]:
    """Map each input to the path its output will have (a video's after any change to .mkv); refuse any plan that
    would write over an input, over another output, or over an existing file in an input's own folder."""
    root = input_path if input_path.is_dir() else input_path.parent
    if input_path.is_dir() and test_dir.resolve().is_relative_to(input_path.resolve()):
        raise SetupError(f"--test_dir {test_dir} is inside --input_dir {input_path}: outputs would be read back "
                         "as inputs; choose a folder outside it")
    plan = {}
    for src in inputs:
        dst = test_dir / src.relative_to(root)
        if src.suffix.lower() in VIDEO_EXTENSIONS:
            plan[src] = planned_output(src, dst)
        else:
            plan[src] = dst.with_suffix(".png") if output_format == "png" else dst
    resolved_inputs = {p.resolve() for p in inputs}
    seen = {}
    for src, dst in plan.items():
        if dst.resolve() in resolved_inputs:
            raise SetupError(f"{dst}: would overwrite an input; choose another --test_dir")
        if dst.resolve() in seen:
            raise SetupError(f"{dst}: both {seen[dst.resolve()]} and {src} would be written here; rename one"
                             + (" or drop --output_format png" if output_format == "png" else ""))
        if dst.exists() and dst.parent.resolve() == src.parent.resolve():
            raise SetupError(f"{dst}: would replace a file beside its input {src}; choose another --test_dir")
        seen[dst.resolve()] = src
    return plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", type=Path, default=Path("data/test_data"),
                        help="folder searched recursively for images and videos, or one file (default: data/test_data)")
    parser.add_argument("--test_dir", type=Path, default=Path("data/test_output"),
                        help="where outputs go, mirroring the input folders (default: data/test_output)")
    parser.add_argument("--weight_dir", type=Path, default=Path("snapshots/sgz_ours.pth"),
                        help="EFE weights: ours, the authors' Epoch99.pth or Zero-DCE++'s "
                             "(default: snapshots/sgz_ours.pth)")
    parser.add_argument("--scale_factor", type=int, default=12,
                        help="the EFE sees the input downscaled by this (default: 12, the authors' test setting)")
    parser.add_argument("--conv_type", choices=["dsc", "tc"], default="dsc",
                        help="EFE convolutions the weights were trained with (default: dsc, paper §3.1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto picks CUDA when available (default: auto)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="video frames, and on a GPU images of the same size, enhanced together (default: 8)")
    workers = inference.usable_cores() + 1  # one more than the cores: it runs while another holds Python's lock
    parser.add_argument("--num_workers", type=int, default=workers,
                        help="on a CPU, threads that each take images through decoding, the network and encoding; "
                             "on a GPU, threads that decode and encode beside it; 0 does it all in one thread "
                             f"(default: the cores this process may use, plus one: {workers} here)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network's plain path, for GPUs and long runs of one image size; on a "
                             "CPU the default C path is faster, and compiling takes minutes for every new image "
                             "size (default: off)")
    parser.add_argument("--crf", type=int, default=18,
                        help="video quality, libx264's constant rate factor: 0 lossless, 51 worst (default: 18)")
    parser.add_argument("--temporal_smoothing", type=float, default=0.0, metavar="ALPHA",
                        help="video only: EMA of x_r across frames, s_t = ALPHA*s_(t-1) + (1-ALPHA)*x_r_t; "
                             "not in the paper (default: 0, off)")
    parser.add_argument("--output_format", choices=["same", "png"], default="same",
                        help="same: each output keeps its input's format; png: all PNG (default: same)")
    args = parser.parse_args(argv)
    for flag, low, high in (("scale_factor", 1, math.inf), ("batch_size", 1, math.inf), ("num_workers", 0, math.inf),
                            ("crf", 0, 51)):  # checked before any work starts
        if not low <= getattr(args, flag) <= high:
            parser.error(f"--{flag} {getattr(args, flag)}: must be "
                         + (f"in {low}..{high}" if high < math.inf else f"at least {low}"))
    if not 0 <= args.temporal_smoothing < 1:
        parser.error(f"--temporal_smoothing {args.temporal_smoothing}: must be in [0, 1)")
    return args


def run(args: argparse.Namespace) -> int:
    if not args.input_dir.exists():
        raise SetupError(f"{args.input_dir}: no such file or folder (--input_dir)")
    try:
        device = inference.pick_device(args.device)
    except ValueError as e:
        raise SetupError(str(e)) from None
    try:
        model = load_enhance_net(args.weight_dir, args.scale_factor, args.conv_type, device)
    except FileNotFoundError as e:
        raise SetupError(f"{e}: pass --weight_dir with ours (snapshots/sgz_ours.pth) or the authors' "
                         "(README: Weights and data), or train one with `python train.py`") from None
    except ValueError as e:
        raise SetupError(str(e)) from None
    try:
        inputs, unlisted = find_inputs(args.input_dir, (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS))
    except BadInputError as e:
        raise SetupError(e) from None
    for line in unlisted:
        print(f"skipped {line}", file=sys.stderr)
    everything = plan_outputs(inputs, args.input_dir, args.test_dir, args.output_format)
    plan = {src: dst for src, dst in everything.items() if src.suffix.lower() in IMAGE_EXTENSIONS}
    video_plan = {src: dst for src, dst in everything.items() if src not in plan}
    remove_temporaries(everything.values())
    if args.compile and device.type == "cpu":
        print("warning: --compile on a CPU is slower than the default C path, and compiles for minutes for every "
              "new image size", file=sys.stderr)
    # The C kernel is built (about 2 s, once per machine) before the clock starts: not model time.
    c_kernel = device.type == "cpu" and inference.library() is not None
    one_per_thread = c_kernel and not args.compile and args.num_workers > 0
    inference.settle_for_streaming()
    start = time.perf_counter()
    with torch.inference_mode():
        if one_per_thread:  # each worker decodes, enhances on one core and encodes its own images
            enhance = uint8_enhancer(model, device, threads=1)
            done, skipped, model_seconds = enhance_each(enhance, plan, args.num_workers)
        else:
            enhance = uint8_enhancer(model, device, torch.compile(model) if args.compile else None)
            done, skipped, model_seconds = enhance_images(enhance, plan, args.batch_size, args.num_workers)
    wall = time.perf_counter() - start
    video_problems, videos, damaged = enhance_videos(model, video_plan, device, args)
    not_written = len(unlisted) + len(skipped) + len(video_plan) - videos
    print(summary(done, videos, not_written, args.test_dir, model_seconds, wall, device, damaged))
    return 1 if unlisted + skipped + video_problems else 0


def summary(images: int, videos: int, skipped: int, test_dir: Path, model_seconds: float, wall: float,
            device: torch.device, damaged: int = 0) -> str:
    """The run's last line: what was written where, how many videos from a cut or damaged input, what was skipped,
    and per image the network's time and the wall time of the image part of the run."""
    line = f"{plural(images, 'image')}" + (f" and {plural(videos, 'video')}" if videos else "")
    line += f" enhanced into {test_dir}" + (f" ({damaged} from a cut or damaged input)" if damaged else "")
    line += f", {skipped} skipped"
    if images:
        line += (f"; images: model {1000 * model_seconds / images:.1f} ms/image, wall {1000 * wall / images:.1f} "
                 f"ms/image on {device}")
    return line


def enhance_videos(model: torch.nn.Module, plan: dict[Path, Path], device: torch.device,
                   args: argparse.Namespace) -> tuple[list[str], int, int]:
    """Enhance each video in `plan` (video.py); returns one line per video skipped or from a cut or damaged input,
    how many were written, and how many of those from a cut or damaged input."""
    problems, written, damaged = [], 0, 0
    threads = torch.get_num_threads()
    if device.type == "cpu":  # leave two cores to the decoder and encoder threads: faster on 2 cores (README: Video)
        torch.set_num_threads(max(1, threads - 2))
    try:
        for src, dst in plan.items():
            try:
                report = enhance_video(model, src, dst, device=device, batch_size=args.batch_size, crf=args.crf,
                                       temporal_smoothing=args.temporal_smoothing)
            except VideoError as e:
                problems.append(str(e))
                print(f"skipped {e}", file=sys.stderr)
                continue
            print(report.summary())
            written += 1
            if report.error:
                problems.append(report.error)
                damaged += 1
    finally:
        torch.set_num_threads(threads)
    return problems, written, damaged


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: the outputs written so far in {args.test_dir} are whole; the ones in progress were not "
              "written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
