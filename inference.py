"""Fast inference for `model.EnhanceNet`: the same math as its `forward`, without autograd, several times faster.

    enhanced, x_r = inference.enhance(net, x)          # what test.py, video.py, evaluate.py and bench.py run

On a CPU, for float32, it runs as C (cpu_kernel.c): the EFE with no per-operator overhead, then x_r's upsampling and
the 8 RIE steps in one pass over memory with the recurrence in registers. cpu_kernel.c has no PyTorch headers: the
system's C compiler (`$CC`, else `cc`) builds it for the CPU it runs on (-march=native) on first use in about 2
seconds, into `$XDG_CACHE_HOME/sgz` (else ~/.cache/sgz), keyed by source, compiler, flags and CPU (model and feature
flags), so a cache that several machines share holds a build for each. Without a working compiler it warns once and
runs the PyTorch path: in bands of rows of one image small enough to stay in cache, in place, with each RIE step
written as x <- x * ((1 - x_r) + x_r * x). Bilinear upsampling is separable: x_r is upsampled vertically once at low
width, then horizontally band by band as a product with an interpolation matrix, which a CPU's matrix kernels run
far faster than the bilinear kernel.
"""
import ctypes
import functools
import gc
import hashlib
import itertools
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from files import atomic_path, to_uint8
from model import NUM_FEATURES, NUM_ITERATIONS, EnhanceNet

SOURCE = Path(__file__).with_name("cpu_kernel.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-std=gnu11"]
# Tried in order: for the CPU it runs on (AVX-512 or AVX2 where it has them; a compiler that does not know
# -march=native builds for the architecture's baseline), with OpenMP (a compiler without it, Apple's clang, still
# builds a one-thread kernel).
BUILD_CHOICES = [march + openmp for march in (["-march=native"], []) for openmp in (["-fopenmp"], [])]
# What -march=native builds for, read from /proc/cpuinfo's first processor (x86 and Arm field names)
CPU_FIELDS = frozenset({"vendor_id", "cpu family", "model", "model name", "flags", "CPU implementer",
                        "CPU architecture", "CPU variant", "CPU part", "Features"})
POINTER, INT, LONG, FLOAT = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
EFE_ARGUMENTS = [POINTER] * 3 + [INT] * 5 + [POINTER] * 8 + [INT] * 3
ENHANCE_ARGUMENTS = [POINTER] * 7 + [INT] * 6 + [POINTER] * 6 + [INT] * 2
RGB_TO_YUV_ARGUMENTS = [POINTER, LONG, INT, INT, FLOAT, FLOAT, INT] + [POINTER, LONG] * 3
# cpu_kernel.c's efe(): per pixel of a strip, the small image, x_r and the three skip buffers, and the bytes a strip
# may take (a 4K frame is one strip; an 8000x8000 photo is six, which hold a fifth of what the whole would)
SCRATCH_CHANNELS = 6 + 6 * NUM_FEATURES
SCRATCH_BYTES = 64 * 2**20
EFE_LAYERS = 7  # the rows a strip reaches beyond its own, on each side
# Elements per band of the PyTorch path on CPU: 256 KB of float32, measured fastest on a 2-core Xeon.
CPU_BAND_ELEMENTS = 2**18
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_FREED_BYTES = 2**30
GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def enhance(net: EnhanceNet, x: torch.Tensor, x_r_low: torch.Tensor | None = None,
            c_kernel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`net(x)` for inference: (enhanced, x_r) for a Bx3xHxW image x in [0, 1], equal to float rounding.

    `x_r_low` is the EFE's low-resolution output to use instead of computing it from x (video.py passes one
    smoothed across frames). `c_kernel=False` forces the PyTorch path.
    """
    x = x.contiguous()  # a strided input is copied once here, not by the EFE and by RIE each
    x_r_low = low_resolution_factor(net, x, c_kernel) if x_r_low is None else x_r_low
    kernel = kernel_for(x, x_r_low) if c_kernel else None
    if kernel is not None:
        return c_enhance(kernel, x, x_r_low, net.crop_size(x), torch.get_num_threads())
    return banded_enhance(net, x, x_r_low)


def low_resolution_factor(net: EnhanceNet, x: torch.Tensor, c_kernel: bool = True,
                          threads: int | None = None) -> torch.Tensor:
    """`net.low_resolution_factor(x)` for inference, for a float Nx3xHxW x or an N x H x W x 3 (RGB) or x 4 (RGBX)
    uint8 one: in C on a CPU where it can run (on `threads` threads, else torch's count), else in PyTorch."""
    if type(net) is not EnhanceNet:
        raise TypeError(f"inference runs model.EnhanceNet, not {type(net).__name__}: call the network itself")
    planes = rgb_planes(x) if x.dtype == torch.uint8 else x
    parameters = list(net.parameters())
    on_cpu = x.device.type == "cpu" and (x.dtype in (torch.uint8, torch.float32))
    kernel = kernel_for(*parameters) if c_kernel and on_cpu and net.conv_type == "dsc" else None
    if kernel is None:
        return net.low_resolution_factor(planes.float().div_(255) if x.dtype == torch.uint8 else x)
    return c_efe(kernel, parameters, x, net.crop_size(planes), net.downscale_size(planes),
                 threads or torch.get_num_threads())


def enhance_uint8(net: EnhanceNet, rgb: torch.Tensor, x_r_low: torch.Tensor | None = None,
                  c_kernel: bool = True, threads: int | None = None) -> torch.Tensor:
    """`enhance` on 8-bit RGB as decoders give it: an N x H x W x 3 uint8 tensor in, the enhanced image out in the
    same layout, rounded half up as files.to_uint8 writes it; or N x H x W x 4, RGBX as PIL holds an image (X is
    ignored), out as RGBX from the C kernel. On a CPU it runs in C from and to the uint8 image, converting a row at
    a time (memory: the two uint8 images and a third of one in floats); elsewhere it converts the whole image and
    runs `enhance` (as with `c_kernel=False`), giving N x H x W x 3. `threads`: the C kernel's, else torch's count
    (images.py runs one image per worker thread, each kernel call on one thread)."""
    rgb = rgb.contiguous()
    if rgb.dtype != torch.uint8 or rgb.dim() != 4 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"enhance_uint8 takes N x H x W x 3 (or 4) uint8, not {rgb.dtype} {tuple(rgb.shape)}")
    x_r_low = low_resolution_factor(net, rgb, c_kernel, threads) if x_r_low is None else x_r_low
    kernel = kernel_for(x_r_low) if c_kernel and rgb.device.type == "cpu" else None
    if kernel is None:
        return through_floats(lambda x: enhance(net, x, x_r_low, c_kernel), rgb)
    return c_enhance_uint8(kernel, rgb, x_r_low, net.crop_size(rgb_planes(rgb)),
                           threads or torch.get_num_threads())


def through_floats(forward, rgb: torch.Tensor) -> torch.Tensor:
    """An N x H x W x 3 image (uint8, or float32 in [0, 1]; or uint8 RGBX, x 4) through `forward`, which maps
    Nx3xHxW floats to (enhanced, _), back as N x H x W x 3 uint8 rounded by files.to_uint8."""
    x = rgb_planes(rgb)
    x = x.float().div_(255) if x.dtype == torch.uint8 else x
    return to_uint8(forward(x)[0]).permute(0, 2, 3, 1).contiguous()


def rgb_planes(rgb: torch.Tensor) -> torch.Tensor:
    """An N x H x W x 3 image, or x 4 (RGBX), as an N x 3 x H x W view (X left out), no copy."""
    return rgb[..., :3].permute(0, 3, 1, 2)


def banded_enhance(net: EnhanceNet, x: torch.Tensor, x_r_low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_r's upsampling and RIE in PyTorch, in bands of rows on a CPU (module docstring)."""
    batch, channels, h, w = x.shape
    widen = None
    if net.scale_factor != 1:
        crop_h, crop_w = net.crop_size(x)
        x_r_low = F.interpolate(x_r_low, size=(crop_h, x_r_low.shape[-1]), mode="bilinear", align_corners=True)
        x_r_low = F.pad(x_r_low, (0, 0, 0, h - crop_h), mode="replicate") if crop_h < h else x_r_low
        widen = linear_interpolation_matrix(x_r_low.shape[-1], crop_w, w, x.device)
    enhanced, x_r = torch.empty_like(x), torch.empty_like(x)
    on_cpu = x.device.type == "cpu"
    rows = max(1, CPU_BAND_ELEMENTS // (channels * w)) if on_cpu else h
    images = [slice(i, i + 1) for i in range(batch)] if on_cpu else [slice(None)]
    for image, top in itertools.product(images, range(0, h, rows)):
        band = (image, slice(None), slice(top, top + rows))
        r, y = x_r[band], enhanced[band]
        r.copy_(x_r_low[band] if widen is None else x_r_low[band] @ widen)
        y.copy_(x[band])
        one_minus_r, step = 1 - r, torch.empty_like(y)
        for _ in range(NUM_ITERATIONS):
            torch.addcmul(one_minus_r, r, y, out=step)
            y.mul_(step)
    return enhanced, x_r


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pick_device(name: str | None) -> torch.device:
    """The device a --device flag names: "auto" or None is CUDA when available, else the CPU.

    Raises ValueError, naming the flag's value, for a device that does not exist here.
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name}: not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: no such CUDA device here; use --device cpu")
    return device


def forward_for(net: torch.nn.Module):
    """What inference runs for `net`: `enhance` for an EnhanceNet, else the network's own forward (Zero-DCE,
    SCI, a user's module), each mapping x to (enhanced, _)."""
    return functools.partial(enhance, net) if type(net) is EnhanceNet else net


def numpy_enhancer(net: torch.nn.Module, device: torch.device):
    """An HxWx3 float numpy -> HxWx3 float numpy enhancer running `forward_for(net)`."""
    forward = forward_for(net)

    def run(img: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(img).permute(2, 0, 1)[None].to(device)
            return forward(x)[0][0].permute(1, 2, 0).cpu().numpy()
    return run


def linear_interpolation_matrix(n_in: int, n_crop: int, n_out: int, device: torch.device) -> torch.Tensor:
    """The n_in x n_out matrix M with v @ M = `upsampling_weights`' interpolation of v; the product matches
    F.interpolate then F.pad(mode="replicate") to float rounding."""
    first, second, weight = upsampling_weights(n_in, n_crop, n_out)
    columns = torch.arange(n_out)
    matrix = torch.zeros(n_in, n_out)
    matrix.index_put_((first.long(), columns), 1 - weight, accumulate=True)
    matrix.index_put_((second.long(), columns), weight, accumulate=True)
    return matrix.to(device)


@functools.lru_cache(maxsize=64)
def interpolation_weights(n_in: int, n_out: int, align_corners: bool) -> tuple[torch.Tensor, ...]:
    """1-D linear interpolation from n_in to n_out points: each output's two source indices (int32) and the weight
    of the second (float32), computed in float32 as PyTorch's bilinear kernel computes them."""
    if align_corners:
        scale = torch.tensor(n_in - 1, dtype=torch.float32) / max(n_out - 1, 1)
        source = torch.arange(n_out, dtype=torch.float32) * scale
    else:
        scale = torch.tensor(n_in, dtype=torch.float32) / n_out
        source = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    first = source.floor().int().clamp(max=n_in - 1)
    second = (first + 1).clamp(max=n_in - 1)
    return first, second, (source - first).clamp(0, 1)


@functools.lru_cache(maxsize=64)
def upsampling_weights(n_low: int, n_crop: int, n_out: int) -> tuple[torch.Tensor, ...]:
    """x_r's upsampling along one side (EnhanceNet.enhancement_factor): `interpolation_weights` from n_low to the
    crop's n_crop points with align_corners=True, the last point's repeated for the n_out - n_crop beyond it."""
    weights = interpolation_weights(n_low, n_crop, True)
    return tuple(torch.cat([w, w[-1:].expand(n_out - n_crop)]) for w in weights)


def keep_freed_memory(keep: bool = True) -> None:
    """Have glibc keep up to 1 GiB of freed memory for the next image instead of handing it back to the OS;
    `keep=False` sets glibc's default thresholds (128 KiB) back.

    By default glibc unmaps large freed blocks, so every image's tensors page-fault in afresh; on the 2-core VM of
    the README's speed table that took longer than the whole model. Does nothing where libc is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    for parameter in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD):
        libc.mallopt(parameter, KEEP_FREED_BYTES if keep else GLIBC_DEFAULT_THRESHOLD)


def settle_for_streaming() -> None:
    """What test.py sets before it streams images and video through the network: glibc keeps freed memory
    (`keep_freed_memory`), and the objects loaded so far (torch's modules, the model) are moved out of the garbage
    collector's reach (gc.freeze), so the collections that a video's many short-lived frame and packet objects
    trigger do not traverse them again and again: 9% of a 640x360 clip's wall time on the README's VM."""
    keep_freed_memory()
    gc.freeze()


# The C kernel: building, loading and calling it.

def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sgz"


def build(path: Path, flags: list[str]) -> None:
    """Compile SOURCE into `path` atomically: a concurrent process sees no file or a whole one."""
    with atomic_path(path) as partial:
        subprocess.run([os.environ.get("CC", "cc"), *flags, str(SOURCE), "-o", str(partial), "-lm"],
                       check=True, capture_output=True, timeout=300)


def cpu_identity() -> str:
    """The CPU a -march=native build is for: its model and feature flags where /proc/cpuinfo has them, else what
    the platform module says."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return platform.processor()
    return "\n".join(line for line in first.splitlines() if line.split(":")[0].strip() in CPU_FIELDS)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The kernel built for model.py's NUM_FEATURES and NUM_ITERATIONS, or None, with one line on stderr (between
    any progress bars), when it can't be built."""
    errors = []
    source, machine = SOURCE.read_bytes(), [platform.machine(), cpu_identity(), os.environ.get("CC", "cc")]
    for choice in BUILD_CHOICES:
        flags = FLAGS + choice + [f"-DNUM_ITERATIONS={NUM_ITERATIONS}", f"-DFEATURES={NUM_FEATURES}"]
        key = hashlib.sha256(source + " ".join([*machine, *flags]).encode()).hexdigest()[:16]
        try:
            path = cache_dir() / f"cpu_kernel-{key}.so"
            if not path.is_file():
                build(path, flags)
            kernel = ctypes.CDLL(str(path))
            kernel.efe.argtypes, kernel.efe.restype = EFE_ARGUMENTS, ctypes.c_int
            kernel.enhance.argtypes, kernel.enhance.restype = ENHANCE_ARGUMENTS, ctypes.c_int
            kernel.rgb_to_yuv.argtypes, kernel.rgb_to_yuv.restype = RGB_TO_YUV_ARGUMENTS, ctypes.c_int
        except subprocess.CalledProcessError as e:
            errors.append((e.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1])
            continue
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:  # RuntimeError: Path.home() unknown
            errors.append(str(e))
            break
        except AttributeError as e:  # built, but without the functions under their names
            errors.append(str(e))
            break
        return kernel
    tqdm.write(f"warning: could not build {SOURCE.name} ({errors[-1]}); inference uses its slower PyTorch path on "
               "this CPU (install a C compiler: README, Install)", file=sys.stderr)
    return None


def kernel_for(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The kernel when it can run on `tensors` (all float32, on a CPU), else None."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return library()
    return None


def check_efe_parameters(parameters: list[torch.Tensor]) -> None:
    """Raise ValueError unless `parameters` are a "dsc" EnhanceNet's, in order: what cpu_kernel.c's efe() reads."""
    n = NUM_FEATURES
    blocks = [(3, n), (n, n), (n, n), (n, n), (2 * n, n), (2 * n, n), (2 * n, 3)]
    expected = [shape for c_in, c_out in blocks
                for shape in [(c_in, 1, 3, 3), (c_in,), (c_out, c_in, 1, 1), (c_out,)]]
    shapes = [tuple(p.shape) for p in parameters]
    if shapes != expected or not all(p.is_contiguous() for p in parameters):
        raise ValueError(f"cpu_kernel.efe: parameters of shapes {shapes} are not a 'dsc' EnhanceNet's")


def c_efe(kernel: ctypes.CDLL, parameters: list[torch.Tensor], image: torch.Tensor, crop: tuple[int, int],
          size: tuple[int, int], threads: int, strip_rows: int | None = None) -> torch.Tensor:
    """The EFE's output x_r_low (N x 3 x h x w) on the top-left `crop` of an N x 3 x H x W float image (or an
    N x H x W x 3 or x 4 uint8 one) resized bilinearly to size (h, w), with align_corners=False as EnhanceNet.downscale;
    `parameters` are a "dsc" EnhanceNet's. The kernel works on strips of `strip_rows` rows of the small image
    (default: what fits SCRATCH_BYTES); the result is the same for any."""
    check_efe_parameters(parameters)
    image = image.contiguous()
    interleaved = image.dtype == torch.uint8
    batch, image_height, image_width = image.shape[:3] if interleaved else (image.shape[0], *image.shape[2:])
    pixel_bytes = image.shape[-1] if interleaved else 3
    height, width = size
    if not (0 < crop[0] <= image_height and 0 < crop[1] <= image_width):
        raise ValueError(f"cpu_kernel.efe: crop {crop} does not fit an image of {image_height}x{image_width}")
    x_r_low = torch.empty(batch, 3, height, width)
    strip_rows = strip_rows or max(1, SCRATCH_BYTES // (4 * SCRATCH_CHANNELS * width) - 2 * EFE_LAYERS)
    scratch = torch.empty(SCRATCH_CHANNELS * min(height, strip_rows + 2 * EFE_LAYERS) * width)
    weights = [*interpolation_weights(crop[0], height, False), *interpolation_weights(crop[1], width, False)]
    pointers = (ctypes.c_void_p * len(parameters))(*[p.data_ptr() for p in parameters])
    planes, rgb = (None, image.data_ptr()) if interleaved else (image.data_ptr(), None)
    if kernel.efe(planes, rgb, x_r_low.data_ptr(), batch, image_height, image_width, height, width,
                  *[w.data_ptr() for w in weights], pointers, scratch.data_ptr(), strip_rows, pixel_bytes,
                  threads):
        raise MemoryError("cpu_kernel.efe: out of memory for its row buffers")
    return x_r_low


def c_enhance(kernel: ctypes.CDLL, x: torch.Tensor, x_r_low: torch.Tensor, crop: tuple[int, int],
              threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(enhanced, x_r) for an N x C x H x W image x, with x_r upsampled from the EFE's output x_r_low
    (N x C x h x w) to the top-left `crop` and repeated beyond it, as EnhanceNet.enhancement_factor."""
    x, x_r_low = x.contiguous(), x_r_low.contiguous()
    if x_r_low.shape[:2] != x.shape[:2] or not (0 < crop[0] <= x.shape[-2] and 0 < crop[1] <= x.shape[-1]):
        raise ValueError(f"cpu_kernel.enhance: x_r_low of shape {tuple(x_r_low.shape)} does not fit x of shape "
                         f"{tuple(x.shape)}")
    enhanced, x_r = torch.empty_like(x), torch.empty_like(x)
    wide = x.new_empty(*x_r_low.shape[:-1], x.shape[-1])
    weights = [*upsampling_weights(x_r_low.shape[-2], crop[0], x.shape[-2]),
               *upsampling_weights(x_r_low.shape[-1], crop[1], x.shape[-1])]
    kernel.enhance(x.data_ptr(), enhanced.data_ptr(), x_r.data_ptr(), None, None, x_r_low.data_ptr(),
                   wide.data_ptr(), *x.shape, *x_r_low.shape[-2:], *[w.data_ptr() for w in weights],
                   x.shape[1], threads)  # pixel_bytes, which only the uint8 path reads
    return enhanced, x_r


def c_enhance_uint8(kernel: ctypes.CDLL, rgb: torch.Tensor, x_r_low: torch.Tensor, crop: tuple[int, int],
                    threads: int) -> torch.Tensor:
    """`c_enhance` from and to N x H x W x 3 uint8 RGB (or x 4, RGBX, its X kept), rounded as files.to_uint8;
    x_r is not kept."""
    batch, height, width, pixel_bytes = rgb.shape
    x_r_low = x_r_low.contiguous()
    if x_r_low.shape[:2] != (batch, 3) or not (0 < crop[0] <= height and 0 < crop[1] <= width):
        raise ValueError(f"cpu_kernel.enhance: x_r_low of shape {tuple(x_r_low.shape)} does not fit an image of "
                         f"shape {tuple(rgb.shape)}")
    enhanced = torch.empty_like(rgb)
    # x_r upsampled along x: interleaved for RGB, planes for RGBX (torch.empty: a fill would start an OpenMP team in
    # each worker thread)
    wide = torch.empty(batch, 3, x_r_low.shape[-2], width)
    weights = [*upsampling_weights(x_r_low.shape[-2], crop[0], height),
               *upsampling_weights(x_r_low.shape[-1], crop[1], width)]
    if kernel.enhance(None, None, None, rgb.data_ptr(), enhanced.data_ptr(), x_r_low.data_ptr(), wide.data_ptr(),
                      batch, 3, height, width, *x_r_low.shape[-2:], *[w.data_ptr() for w in weights], pixel_bytes,
                      threads):
        raise MemoryError("cpu_kernel.enhance: out of memory for its row buffers")
    return enhanced
