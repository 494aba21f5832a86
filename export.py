"""Export SGZ's network to ONNX: one graph for any batch size, height and width, checked against PyTorch.

    python export.py --weight_dir snapshots/sgz_ours.pth --onnx sgz.onnx
    python export.py --weight_dir weights/sgz_official_epoch99.pth --onnx sgz_official.onnx \
        --check_images data/test_data/LOL/low

The graph takes "image", float32 Nx3xHxW in [0, 1], and returns "enhanced" and "x_r". It is EnhanceNet.forward
traced with symbolic sizes (deploy.py), so it applies the size rule that test.py runs. Before the file is written,
onnxruntime runs the graph beside PyTorch (inference.enhance) on random images of several sizes and on each
--check_images image, and prints each largest difference.
Exit status: 0 when written; 1 when onnxruntime differs from PyTorch by more than 1/255 or fails to run the graph
(nothing is written); 2 on a setup error (missing weights, onnxruntime or onnxscript not installed).
"""
import argparse
import sys
from pathlib import Path

import torch

import deploy
import inference
from files import IMAGE_EXTENSIONS, BadInputError, find_inputs, read_image, to_uint8, write_atomically
from model import load_enhance_net

TOLERANCE = 1 / 255


class SetupError(Exception):
    """A problem that stops the export before it starts (exit status 2)."""


class MismatchError(Exception):
    """onnxruntime does not give PyTorch's output (exit status 1); nothing is written."""


def random_checks(scale_factor: int) -> list[tuple[str, torch.Tensor]]:
    """(label, Nx3xHxW image) pairs, sizes WxH: a multiple of the scale factor, LOL's 600x400, an odd size as
    a batch of 2, and one with a side shorter than the scale factor."""
    s = scale_factor
    shapes = [(1, 33 * s, 50 * s), (1, 400, 600), (2, 203, 301), (1, max(1, s - 1), 2 * s + 5)]
    generator = torch.Generator().manual_seed(0)
    return [(f"random {w}x{h}" + (f", batch of {n}" if n > 1 else ""), torch.rand(n, 3, h, w, generator=generator))
            for n, h, w in shapes]


def image_checks(path: Path | None) -> list[tuple[str, torch.Tensor]]:
    """(label, 1x3xHxW image) for each image under `path`, read as test.py reads it."""
    if path is None:
        return []
    if not path.exists():
        raise SetupError(f"{path}: no such file or folder (--check_images)")
    try:
        sources, unlisted = find_inputs(path, IMAGE_EXTENSIONS)
        if unlisted:
            raise BadInputError(unlisted[0])
        return [(f"{src} {image.shape[1]}x{image.shape[0]}", torch.from_numpy(image).permute(2, 0, 1)[None])
                for src in sources for image in [read_image(src)]]
    except BadInputError as e:
        raise SetupError(str(e)) from None


def compare(session, net, x: torch.Tensor) -> tuple[float, int]:
    """The largest difference between onnxruntime's outputs and PyTorch's (either output, in 1/255), and how many
    of the enhanced image's uint8 values round differently."""
    with torch.inference_mode():
        expected = inference.enhance(net, x.contiguous())
    try:
        got = deploy.run(session, x)
    except Exception as e:  # onnxruntime's errors share no base class below Exception
        raise MismatchError(f"onnxruntime failed on {tuple(x.shape)}: {str(e).splitlines()[0]}") from None
    if [tuple(t.shape) for t in got] != [tuple(t.shape) for t in expected]:
        raise MismatchError(f"onnxruntime's outputs for {tuple(x.shape)} are {[tuple(t.shape) for t in got]}")
    largest = max((a - b).abs().max().item() for a, b in zip(got, expected)) * 255
    return largest, (to_uint8(got[0]) != to_uint8(expected[0])).sum().item()


def run(args: argparse.Namespace) -> None:
    try:
        net = load_enhance_net(args.weight_dir, args.scale_factor, args.conv_type)
    except FileNotFoundError as e:
        raise SetupError(f"{e}: pass --weight_dir with ours (snapshots/sgz_ours.pth) or the authors' "
                         "(README: Weights and data)") from None
    except ValueError as e:
        raise SetupError(str(e)) from None
    missing = deploy.missing_packages()
    if missing:
        raise SetupError(f"export.py needs {' and '.join(missing)}: {deploy.INSTALL_HINT}")
    checks = random_checks(args.scale_factor) + image_checks(args.check_images)
    try:
        graph = deploy.to_onnx(net, args.opset)
    except ValueError as e:
        raise MismatchError(f"{args.onnx} not written: {e}") from None
    serialized = graph.SerializeToString()
    session = deploy.session(serialized, torch.get_num_threads())
    for label, x in checks:
        largest, rounded_apart = compare(session, net, x)
        print(f"onnxruntime vs PyTorch, {label}: largest difference {largest:.5f}/255, "
              f"{rounded_apart} of {x.numel()} uint8 values round differently")
        if largest > TOLERANCE * 255:
            raise MismatchError(f"{args.onnx} not written: onnxruntime differs from PyTorch by {largest:.3f}/255 "
                                f"on {label}, over 1/255")
    write_atomically(args.onnx, lambda f: f.write(serialized))
    opset = next(entry.version for entry in graph.opset_import if entry.domain == "")
    print(f"wrote {args.onnx}: ONNX opset {opset}, {len(graph.graph.node)} nodes; input {deploy.INPUT_NAME!r} "
          f"float32 Nx3xHxW, outputs {', '.join(map(repr, deploy.OUTPUT_NAMES))}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weight_dir", type=Path, default=Path("snapshots/sgz_ours.pth"),
                        help="EFE weights, as test.py takes them (default: snapshots/sgz_ours.pth)")
    parser.add_argument("--onnx", type=Path, default=Path("sgz.onnx"), help="the graph to write (default: sgz.onnx)")
    parser.add_argument("--opset", type=int, default=deploy.DEFAULT_OPSET,
                        help=f"ONNX opset (default: {deploy.DEFAULT_OPSET}, the lowest torch.onnx writes without "
                             "converting down)")
    parser.add_argument("--scale_factor", type=int, default=12,
                        help="the EFE sees the input downscaled by this (default: 12, the authors' test setting)")
    parser.add_argument("--conv_type", choices=["dsc", "tc"], default="dsc",
                        help="EFE convolutions the weights were trained with (default: dsc, paper §3.1)")
    parser.add_argument("--check_images", type=Path, default=None,
                        help="images (a folder, searched recursively, or one file) to check the graph on as well "
                             "(default: none, random images only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
