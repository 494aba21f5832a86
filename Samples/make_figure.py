"""Make the README's figures: each shipped low-light sample beside SGZ's output and its peers' outputs.

    python Samples/make_figure.py                      # our snapshot and the classical methods
    python Samples/make_figure.py --authors_weights Epoch99.pth --zero_dce_pp_weights Zero-DCE++.pth \
        --zero_dce_weights Zero-DCE.pth                # as in the README
    python Samples/make_figure.py --sci_weights medium.pt    # adds an SCI tile (SCI's released medium.pt)

Writes one JPEG per input into --out_dir: a row of tiles, each labelled with its method.
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
from baselines import CLASSICAL, load_sci, load_zero_dce  # noqa: E402
from files import IMAGE_EXTENSIONS, read_image, to_uint8, write_image  # noqa: E402
from model import load_enhance_net  # noqa: E402

LABEL_HEIGHT = 22


def build_methods(args: argparse.Namespace) -> dict:
    """Label -> HxWx3 float enhancer, for every method whose weights were given and load."""
    device = torch.device("cpu")
    methods = {"Input": lambda img: img}
    paths = {"SGZ (ours)": args.weights, "SGZ (authors)": args.authors_weights,
             "Zero-DCE++": args.zero_dce_pp_weights, "Zero-DCE": args.zero_dce_weights, "SCI": args.sci_weights}
    loaders = {"Zero-DCE": load_zero_dce, "SCI": load_sci}
    for label, path in paths.items():
        if path is None:
            continue
        load = loaders.get(label, load_enhance_net)
        try:
            methods[label] = inference.numpy_enhancer(load(path), device)
        except (FileNotFoundError, ValueError) as e:
            print(f"{label} left out: {e}", file=sys.stderr)
    return methods | CLASSICAL


def labelled_tile(image: np.ndarray, label: str, width: int) -> Image.Image:
    tile = Image.fromarray(to_uint8(image))
    tile = tile.resize((width, round(tile.height * width / tile.width)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, tile.height + LABEL_HEIGHT), "white")
    canvas.paste(tile, (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 5), label, fill="black")
    return canvas


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--tile_width", type=int, default=240, help="width of each tile in pixels (default: 240)")
    args = parser.parse_args(argv)
    methods = build_methods(args)
    for path in sorted(p for p in args.inputs.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        low = read_image(path)
        with torch.no_grad():
            tiles = [labelled_tile(enhance(low), label, args.tile_width) for label, enhance in methods.items()]
        figure = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        for i, tile in enumerate(tiles):
            figure.paste(tile, (i * args.tile_width, 0))
        write_image(np.asarray(figure), args.out_dir / f"{path.stem}.jpg")
        print(f"{args.out_dir / path.stem}.jpg: {', '.join(methods)}")


if __name__ == "__main__":
    main()
