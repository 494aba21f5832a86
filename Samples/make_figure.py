"""Make the README's figures: each shipped low-light sample beside SGZ's output and its peers' outputs.

    python Samples/make_figure.py --authors_weights weights/sgz_official_epoch99.pth \
        --zero_dce_pp_weights weights/zero_dce_pp_epoch99.pth --zero_dce_weights weights/zero_dce_epoch99.pth \
        --sci_weights weights/sci_medium.pt                                      # the README's figures
    python Samples/make_figure.py --out_dir /tmp/figures                       # ours and the classical methods

Writes one JPEG per input into --out_dir: a grid of tiles, each labelled with its method, each the same
full-resolution crop of its output (so noise and colour show at the README's width). The tracked figures in Samples/
show every method: writing there without every weight file stops with one line, and nothing is overwritten.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import inference  # noqa: E402
from baselines import CLASSICAL, load_networks  # noqa: E402
from files import IMAGE_EXTENSIONS, read_image, to_uint8, write_image  # noqa: E402

LABEL_HEIGHT = 22
NETWORK_FLAGS = {"SGZ (ours)": ("SGZ", "weights"), "SGZ (authors)": ("SGZ", "authors_weights"),
                 "Zero-DCE++": ("Zero-DCE++", "zero_dce_pp_weights"), "Zero-DCE": ("Zero-DCE", "zero_dce_weights"),
                 "SCI": ("SCI", "sci_weights")}


def build_methods(args: argparse.Namespace) -> tuple[dict, dict[str, str]]:
    """Label -> HxWx3 float enhancer for every method whose weights were given and load, and label -> reason for
    each given one that does not."""
    weights = {label: (method, getattr(args, flag)) for label, (method, flag) in NETWORK_FLAGS.items()
               if getattr(args, flag) is not None}
    networks, problems = load_networks(weights, torch.device("cpu"))
    enhancers = {label: inference.numpy_enhancer(net, torch.device("cpu")) for label, net in networks.items()}
    return {"Input": lambda img: img} | enhancers | CLASSICAL, problems


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size region (the whole image where it is smaller)."""
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def labelled_tile(image: np.ndarray, label: str) -> Image.Image:
    tile = Image.fromarray(to_uint8(image))
    canvas = Image.new("RGB", (tile.width, tile.height + LABEL_HEIGHT), "white")
    canvas.paste(tile, (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 5), label, fill="black")
    return canvas


def grid(tiles: list[Image.Image], columns: int) -> Image.Image:
    width, height = tiles[0].size
    rows = -(-len(tiles) // columns)
    figure = Image.new("RGB", (columns * width, rows * height), "white")
    for i, tile in enumerate(tiles):
        figure.paste(tile, ((i % columns) * width, (i // columns) * height))
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=ROOT / "data/test_data/samples",
                        help="folder of low-light images (default: data/test_data/samples)")
    parser.add_argument("--out_dir", type=Path, default=ROOT / "Samples", help="where figures go (default: Samples)")
    parser.add_argument("--weights", type=Path, default=ROOT / "snapshots/sgz_ours.pth",
                        help="our SGZ snapshot (default: snapshots/sgz_ours.pth)")
    parser.add_argument("--authors_weights", type=Path, help="the authors' SGZ Epoch99.pth (default: left out)")
    parser.add_argument("--zero_dce_pp_weights", type=Path, help="Zero-DCE++'s released weights (default: left out)")
    parser.add_argument("--zero_dce_weights", type=Path, help="Zero-DCE's released weights (default: left out)")
    parser.add_argument("--sci_weights", type=Path, help="SCI's released medium.pt (default: left out)")
    parser.add_argument("--crop", type=int, default=256, help="side of the central crop each tile shows, at full "
                        "resolution (default: 256)")
    parser.add_argument("--columns", type=int, default=5, help="tiles per row (default: 5)")
    args = parser.parse_args(argv)
    if args.crop < 1 or args.columns < 1:
        parser.error("--crop and --columns must be at least 1")
    methods, problems = build_methods(args)
    missing = [label for label, (_, flag) in NETWORK_FLAGS.items() if getattr(args, flag) is None]
    for label, reason in problems.items():
        print(f"error: {label}: {reason}", file=sys.stderr)
    if problems:
        return 2
    if missing and args.out_dir.resolve() == (ROOT / "Samples").resolve():
        print(f"error: Samples/ holds the README's figures with every method; give the weights of "
              f"{', '.join(missing)} or write elsewhere with --out_dir", file=sys.stderr)
        return 2
    for path in sorted(p for p in args.inputs.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        low = read_image(path)  # each method enhances the whole image; the tiles show the same crop of each output
        tiles = [labelled_tile(centre_crop(enhance(low), args.crop), label) for label, enhance in methods.items()]
        figure = grid(tiles, args.columns)
        write_image(np.asarray(figure), args.out_dir / f"{path.stem}.jpg")
        print(f"{args.out_dir / path.stem}.jpg: {', '.join(methods)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
