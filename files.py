"""Files in and out, for every script: finding images, the one image reader, the one writer, the one uint8
rounding, atomic writes and checkpoint reading. Imports no other module of this repo.
"""
import contextlib
import ctypes
import os
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
DEEP_MODES = SIXTEEN_BIT_MODES | {"I", "F"}  # one channel beyond 8 bits: 16-bit, 32-bit integer, 32-bit float
# TIFF tags that say what a sample's range is: SMaxSampleValue, MaxSampleValue, BitsPerSample
TIFF_S_MAX_SAMPLE, TIFF_MAX_SAMPLE, TIFF_BITS_PER_SAMPLE = 341, 281, 258
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
BAND_BYTES = 2**22  # `pixels` converts images larger than this a band of rows at a time
TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{32}\.tmp")  # atomic_path's temporary for NAME: .NAME.<uuid4 hex>.tmp


class BadInputError(Exception):
    """One input file that cannot be read; the message names it and says why in one line."""


def find_inputs(input_path: Path, extensions: Collection[str]) -> tuple[list[Path], list[str]]:
    """Files under `input_path` (or `input_path` itself) whose suffix is in `extensions`, sorted, and one line for
    each folder below it that cannot be listed. Raises BadInputError when `input_path` itself cannot be."""
    if input_path.is_file():
        return [input_path] if input_path.suffix.lower() in extensions else [], []
    found, unlisted = [], []

    def unlistable(e: OSError) -> None:
        line = f"{e.filename}: cannot list this folder ({e.strerror})"
        if e.filename == os.fspath(input_path):
            raise BadInputError(line)
        unlisted.append(line)

    for folder, _, names in os.walk(input_path, onerror=unlistable):
        found += [p for p in map(Path(folder).joinpath, names) if p.suffix.lower() in extensions and p.is_file()]
    return sorted(found), unlisted


def full_scale(img: Image.Image) -> float | None:
    """The sample value of white in a DEEP_MODES image: 1 in float (mode F), 65535 in 16-bit, and in 32-bit integer
    (mode I) what its TIFF tags declare (a maximum sample value, or a bit depth up to 16); None when unknown."""
    if img.mode == "F":
        return 1.0
    if img.mode in SIXTEEN_BIT_MODES:
        return 65535.0
    tags = getattr(img, "tag_v2", {})
    for tag in (TIFF_S_MAX_SAMPLE, TIFF_MAX_SAMPLE):
        if tag in tags:
            return float(max(tags[tag]))
    bits = tags.get(TIFF_BITS_PER_SAMPLE, (32,))[0]
    return float(2 ** bits - 1) if bits <= 16 else None


def open_image(path: Path, draft: tuple[int, int] | None = None,
               before_decoding: Callable[[int], None] | None = None) -> Image.Image:
    """The decoded image in `path`, EXIF orientation applied; a DEEP_MODES image as mode F in [0, 1] (NaN as 0).
    `draft`: JPEGs decode at about this size, a quick check that the whole stream reads. `before_decoding` is called
    with width x height once the header is read, before any pixel is decoded (images.py waits there for memory).
    Raises BadInputError naming the file, also for 32-bit integers of no declared range (never read as black)."""
    try:
        with Image.open(path) as img:
            if draft:
                img.draft("RGB", draft)
            if before_decoding:
                before_decoding(img.width * img.height)
            scale = full_scale(img) if img.mode in DEEP_MODES else 1.0
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: a copy would double a huge photo's memory
    except FileNotFoundError:
        raise BadInputError(f"{path}: no longer there (removed during the run)") from None
    except Image.DecompressionBombError as e:
        raise BadInputError(f"{path}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "empty file" if path.stat().st_size == 0 else f"not a readable image ({e})"
        raise BadInputError(f"{path}: {reason}") from None
    if img.mode not in DEEP_MODES:
        return img
    if scale is None:
        raise BadInputError(f"{path}: 32-bit integer samples with no declared range (TIFF MaxSampleValue); save it "
                            "as 8- or 16-bit, or as float in [0, 1]")
    return Image.fromarray(np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32) / scale), 0.0, 1.0))


def pixels(img: Image.Image) -> np.ndarray:
    """HxWx3 RGB at the image's own depth: uint8 for 8-bit images, float32 in [0, 1] for deeper ones (mode F from
    `open_image`); gray, alpha and palette made RGB."""
    if img.mode == "F":
        return np.repeat(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    img = img if img.mode == "RGB" else img.convert("RGB")
    rows = max(1, BAND_BYTES // (3 * img.width))
    if img.height <= rows:
        return np.asarray(img)
    # np.asarray(img) goes through img.tobytes(), which holds the whole image twice more while it joins its chunks:
    # a band at a time, a huge photo costs PIL's copy and this array only.
    rgb = np.empty((img.height, img.width, 3), np.uint8)
    for top in range(0, img.height, rows):
        rgb[top:top + rows] = np.asarray(img.crop((0, top, img.width, min(top + rows, img.height))))
    return rgb


def rgb_array(img: Image.Image) -> np.ndarray:
    """An HxWx3 float32 RGB array in [0, 1] (see `pixels`): 8-bit values v as v / 255."""
    rgb = pixels(img)
    return rgb if rgb.dtype == np.float32 else rgb.astype(np.float32) / 255.0


def read_image(path: Path) -> np.ndarray:
    """The image in `path` as HxWx3 float32 RGB in [0, 1] (see `open_image` and `rgb_array`)."""
    return rgb_array(open_image(path))


def read_pixels(path: Path, rgbx: bool = False, before_decoding: Callable[[int], None] | None = None) -> np.ndarray:
    """The image in `path` at its own depth (see `open_image` and `pixels`): what test.py enhances. `rgbx=True`:
    an 8-bit RGB image comes as `rgbx_view` gives it where it can, with no copy (H x W x 4)."""
    img = open_image(path, before_decoding=before_decoding)
    view = rgbx_view(img) if rgbx else None
    return pixels(img) if view is None else view


class ArrowArray(ctypes.Structure):
    """The Arrow C data interface's ArrowArray (arrow.apache.org/docs/format/CDataInterface.html), a stable ABI."""


ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                       ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                       ("buffers", ctypes.POINTER(ctypes.c_void_p)),
                       ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))), ("dictionary", ctypes.c_void_p),
                       ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]
capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
capsule_pointer.restype, capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


def rgbx_view(img: Image.Image) -> np.ndarray | None:
    """An 8-bit RGB image's pixels as PIL holds them, 4 bytes each (RGBX, X unused): an H x W x 4 read-only view of
    PIL's own memory, exported through the Arrow C data interface (Pillow 11.2 and later), which keeps the image
    alive. None where PIL cannot export it whole: other modes, older Pillow, an image held in several blocks
    (above 16 MB)."""
    if img.mode != "RGB" or not hasattr(img, "__arrow_c_array__"):
        return None
    try:
        _, capsule = img.__arrow_c_array__()
    except ValueError:  # "Image rows are not contiguous in memory"
        return None
    pixel_list = ArrowArray.from_address(capsule_pointer(capsule, b"arrow_array"))
    values = pixel_list.children[0].contents  # a fixed-size list of 4 uint8 per pixel
    if pixel_list.offset or values.offset or values.length != 4 * img.width * img.height:
        return None
    memory = (ctypes.c_uint8 * values.length).from_address(values.buffers[1])
    memory.owner = (img, capsule)  # the capsule releases PIL's export when it goes
    view = np.frombuffer(memory, np.uint8).reshape(img.height, img.width, 4)
    view.flags.writeable = False
    return view


def header_pixels(path: Path) -> int:
    """Width x height from the file's header, without decoding it; 0 when it has none that PIL reads."""
    try:
        with Image.open(path) as img:
            return img.width * img.height
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0


def to_uint8(image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Values in [0, 1] as uint8, rounded half up as torchvision's save_image (the authors' writer) does:
    clamp(x * 255 + 0.5, 0, 255), truncated. Same type and shape as `image`."""
    if isinstance(image, np.ndarray):
        return to_uint8(torch.from_numpy(np.ascontiguousarray(image))).numpy()
    return image.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to (named as TEMPORARY matches); when the block ends without an
    exception it is renamed into place, so `path` only ever holds an old file or the whole new one. Otherwise it is
    removed; a killed process leaves it, for `remove_temporaries` to clear."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(outputs: Iterable[Path]) -> None:
    """Remove the temporary files (TEMPORARY) that an interrupted run left beside `outputs`: only those of the
    outputs about to be written, so another run writing elsewhere in the folder keeps its own."""
    names: dict[Path, set[str]] = {}
    for path in outputs:
        names.setdefault(path.parent, set()).add(path.name)
    for folder, wanted in names.items():
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                match = TEMPORARY.fullmatch(entry.name)
                if match and match[1] in wanted and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a new file written atomically at `path` (see `atomic_path`), with the usual permissions
    (0666 less the umask)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        write(f)


def write_image(array: np.ndarray, path: Path) -> None:
    """Write an HxWx3 uint8 image (or HxWx4 RGBX, X unused) atomically, in the format its suffix names."""
    image_format = Image.registered_extensions()[path.suffix.lower()]
    if array.shape[-1] == 4:  # PIL's own layout, wrapped without a copy; only JPEG encodes RGBX as RGB
        image = Image.frombuffer("RGBX", array.shape[1::-1], np.ascontiguousarray(array), "raw", "RGBX", 0, 1)
        image = image if image_format == "JPEG" else image.convert("RGB")
    else:
        image = Image.fromarray(array)
    # Into the file, not into memory first: PIL's JPEG and BMP encoders hold the GIL while they encode into memory and
    # release it while they encode into a file (two threads encoding JPEGs: 1.03x one thread's rate into memory, 2.02x
    # into files), so test.py's worker threads took turns encoding: 19% of its time on a folder of 1200x900 JPEGs on
    # the README's VM. PNG and WebP release it either way.
    write_atomically(path, lambda f: image.save(f, format=image_format, **SAVE_OPTIONS.get(image_format, {})))


def read_checkpoint(path: str | Path) -> dict:
    """The dict saved in `path`, loaded on the CPU with weights_only (no code runs from the file).

    Raises FileNotFoundError when the file is missing and ValueError when it holds no dict of tensors, or weights
    holding NaN or Inf (which enhance every image to black).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(e).__name__})") from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a state dict")
    state = {**checkpoint, **checkpoint["model"]} if isinstance(checkpoint.get("model"), dict) else checkpoint
    odd = next((name for name in state if not isinstance(name, str)), None)
    if odd is not None:
        raise ValueError(f"{path}: not a state dict (key {odd!r} is not a parameter name)")
    bad = next((name for name, value in state.items() if torch.is_tensor(value) and value.is_floating_point()
                and not torch.isfinite(value).all()), None)
    if bad is not None:
        raise ValueError(f"{path}: {bad} holds NaN or Inf (weights of a diverged run?)")
    return checkpoint


def strip_prefixes(state: dict, *prefixes: str) -> dict:
    """`state` with each key's leading `prefixes` removed in order (DataParallel's "module.", ...)."""
    def strip(key: str) -> str:
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        return key
    return {strip(k): v for k, v in state.items()}


def extract_state_dict(checkpoint: dict) -> dict:
    """The network's state dict from a bare state dict, a DataParallel one, or a train.py checkpoint."""
    if "model" in checkpoint and isinstance(checkpoint["model"], dict):
        checkpoint = checkpoint["model"]
    return strip_prefixes(checkpoint, "module.")
