"""Training images: every image under a folder, recursively, as CxSxS float tensors in [0, 1].

The authors' loader reads only `*.jpg` directly in the folder; this one reads any common format at any depth,
and checks every file once up front, so a bad file is named and left out before training rather than mid-epoch.
"""
import sys
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from files import IMAGE_EXTENSIONS, BadInputError, find_inputs, open_image, rgb_array


class DataError(Exception):
    """The training folder is unusable; the message names it and says why in one line."""


def find_images(root: str | Path) -> tuple[list[Path], list[str]]:
    """Every file under `root` with an image extension (any case), in sorted order, and one line for each folder
    below it that cannot be listed."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (give the training images with --lowlight_images_path)")
    try:
        return find_inputs(root, IMAGE_EXTENSIONS)
    except BadInputError as e:
        raise DataError(str(e)) from None


def unreadable_reason(path: Path) -> str | None:
    """Why `path` does not read as an image (files.open_image), or None when it does."""
    try:
        open_image(path, draft=(64, 64))  # JPEGs decode at reduced scale: the whole stream is read, quickly
    except Exception as e:
        return str(e).removeprefix(f"{path}: ") or type(e).__name__
    return None


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image as a 3xHxW float tensor in [0, 1], read as test.py reads it (files.read_image: EXIF, gray, alpha,
    palette, 16-bit, float), Lanczos-resized to size x size when `size` is given."""
    img = open_image(Path(path))
    if size is not None:
        img = resized(img, size)
    return torch.from_numpy(rgb_array(img)).permute(2, 0, 1).contiguous()


def resized(img: Image.Image, size: int) -> Image.Image:
    """`img` Lanczos-resized to size x size; 8-bit images as RGB, as the authors' loader does, deeper gray (mode F
    from open_image) as float, so its precision survives."""
    if img.mode == "F":
        return img.resize((size, size), Image.LANCZOS)
    return img.convert("RGB").resize((size, size), Image.LANCZOS)


class LowLightDataset(Dataset):
    """The readable images under `root`, resized to image_size x image_size (512: the authors' loader).

    Unreadable files and folders are named on stderr, one line each, and excluded. Raises DataError when none is
    left, or when `root` cannot be listed.
    """

    def __init__(self, root: str | Path, image_size: int = 512, verbose: bool = True):
        self.image_size = image_size
        self.paths = []
        paths, unlisted = find_images(root)
        for line in unlisted if verbose else []:
            print(f"skipping {line}", file=sys.stderr)
        for path in paths:
            reason = unreadable_reason(path)
            if reason is None:
                self.paths.append(path)
            elif verbose:
                print(f"skipping {path}: {reason}", file=sys.stderr)
        if not self.paths:
            raise DataError(f"{root}: no readable images ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.image_size)
