"""Make the repo's own low-light sample images, so `python test.py` has input on a fresh clone.

Sources: public-domain / CC0 photographs that scikit-image ships in `skimage.data` (no download). Each is
scaled to at most 512 px, darkened with a gamma curve and an exposure scale, given sensor-like noise
(Poisson shot noise plus Gaussian read noise) with a fixed seed, and written as PNG. Rerunning gives the same
files. Usage: python data/make_samples.py [--out data/test_data/samples]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from files import to_uint8, write_atomically  # noqa: E402

# name in skimage.data -> licence as its docstring states it
SOURCES = {
    "astronaut": "public domain (NASA)",
    "coffee": "CC0 (Rachel Michetti)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
}
MAX_SIDE = 512
GAMMA = 2.2  # darkens mid-tones more than highlights, as under-exposure does after a camera's tone curve
EXPOSURE = 0.35
PHOTONS = 400.0  # photons at full scale: sets the shot-noise level
READ_NOISE = 0.004
SEED = 2022


def darken(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB -> uint8 RGB low-light version."""
    x = EXPOSURE * (image.astype(np.float64) / 255.0) ** GAMMA
    x = rng.poisson(x * PHOTONS) / PHOTONS + rng.normal(0.0, READ_NOISE, x.shape)
    return to_uint8(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "test_data" / "samples"),
                        help="output folder (default: data/test_data/samples next to this script)")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for name, licence in SOURCES.items():
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        low = Image.fromarray(darken(np.asarray(image), rng))
        path = out / f"{name}.png"
        write_atomically(path, lambda f: low.save(f, format="PNG", optimize=True))
        print(f"{path}  {low.size[0]}x{low.size[1]}  mean {np.asarray(low).mean() / 255:.3f}  from skimage.data."
              f"{name}, {licence}")


if __name__ == "__main__":
    main()
