"""Training images: every image under a folder, recursively, as CxSxS float tensors in [0, 1].

The authors' loader reads only `*.jpg` directly in the folder; this one reads any common format at any depth,
and checks every file once up front, so a bad file is named and left out before training rather than mid-epoch.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from test import IMAGE_EXTENSIONS, find_inputs


class DataError(Exception):
    """The training folder is unusable; the message names it and says why in one line."""


def find_images(root: str | Path) -> list[Path]:
    """Every file under `root` with an image extension (any case), in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (give the training images with --lowlight_images_path)")
    return find_inputs(root, IMAGE_EXTENSIONS)


def readable(path: Path) -> str | None:
    """None when `path` decodes as an image, else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEGs decode at reduced scale: the whole stream is read, quickly.
            im.load()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An RGB image as a 3xHxW float tensor in [0, 1], Lanczos-resized to size x size when `size` is given."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize((size, size), Image.LANCZOS)
        array = (np.asarray(im) / 255.0).astype(np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class LowLightDataset(Dataset):
    """The readable images under `root`, resized to image_size x image_size (512: the authors' loader).

    Unreadable files are named on stderr, one line each, and excluded. Raises DataError when none is left.
    """

    def __init__(self, root: str | Path, image_size: int = 512, verbose: bool = True):
        self.image_size = image_size
        self.paths = []
        for path in find_images(root):
            reason = readable(path)
            if reason is None:
                self.paths.append(path)
            elif verbose:
                print(f"skipping {path}: unreadable image ({reason})", file=sys.stderr)
        if not self.paths:
            raise DataError(f"{root}: no readable images ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.image_size)
