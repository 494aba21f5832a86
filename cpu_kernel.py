"""EnhanceNet's inference on a CPU as plain C (cpu_kernel.c): the EFE, and x_r upsampling with the 8 RIE steps.

PyTorch runs each elementwise step of RIE as its own pass over memory, and each of the EFE's 14 small convolutions
with a fixed overhead. cpu_kernel.c reads each pixel once, keeps the recurrence in registers and writes the result
once, and runs the EFE layer by layer with no per-operator cost, which makes EnhanceNet over 10x faster than the
authors' op-by-op code (bench.py). It has no PyTorch headers: the system's C compiler (`$CC`, else `cc`) builds it
on first use in about 2 seconds, into `$XDG_CACHE_HOME/sgz` (else ~/.cache/sgz), keyed by source, compiler, flags
and architecture.
Without a working compiler `library()` warns once and returns None, and model.py runs its PyTorch path.
"""
import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernel.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-std=gnu11"]
# -fopenmp first; a compiler without OpenMP (Apple's clang) still builds a one-thread kernel.
OPENMP_CHOICES = [["-fopenmp"], []]
POINTER, INT = ctypes.c_void_p, ctypes.c_int
EFE_ARGUMENTS = [POINTER, POINTER] + [INT] * 5 + [POINTER] * 8 + [INT]
ENHANCE_ARGUMENTS = [POINTER] * 5 + [INT] * 6 + [POINTER] * 6 + [INT]
SCRATCH_CHANNELS = 3 + 6 * 32  # cpu_kernel.c's efe(): the small image and three 64-channel skip buffers


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sgz"


def build(path: Path, flags: list[str]) -> None:
    """Compile SOURCE into `path` atomically: a concurrent process sees no file or a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(handle)
    try:
        subprocess.run([os.environ.get("CC", "cc"), *flags, str(SOURCE), "-o", partial, "-lm"],
                       check=True, capture_output=True, timeout=300)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


@functools.cache
def library(iterations: int) -> ctypes.CDLL | None:
    """The kernel built for `iterations` RIE steps, or None (with one warning) when it can't be built."""
    errors = []
    for openmp in OPENMP_CHOICES:
        flags = FLAGS + openmp + [f"-DNUM_ITERATIONS={iterations}"]
        build_line = " ".join([platform.machine(), os.environ.get("CC", "cc"), *flags])
        key = hashlib.sha256(SOURCE.read_bytes() + build_line.encode()).hexdigest()[:16]
        try:
            path = cache_dir() / f"cpu_kernel-{key}.so"
            if not path.is_file():
                build(path, flags)
            kernel = ctypes.CDLL(str(path))
        except subprocess.CalledProcessError as e:
            errors.append((e.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1])
            continue
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:  # RuntimeError: Path.home() unknown
            errors.append(str(e))
            break
        kernel.efe.argtypes, kernel.efe.restype = EFE_ARGUMENTS, ctypes.c_int
        kernel.enhance.argtypes, kernel.enhance.restype = ENHANCE_ARGUMENTS, None
        return kernel
    warnings.warn(f"cpu_kernel: could not build {SOURCE.name} ({errors[-1]}); EnhanceNet uses its slower PyTorch "
                  "path on this CPU", stacklevel=2)
    return None


def library_for(x: torch.Tensor, parameters: list[torch.Tensor], iterations: int) -> ctypes.CDLL | None:
    """The kernel when it can run a model with `parameters` on x (all float32, on a CPU), else None."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in [x, *parameters]):
        return library(iterations)
    return None


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


def efe(kernel: ctypes.CDLL, parameters: list[torch.Tensor], image: torch.Tensor, size: tuple[int, int],
        threads: int) -> torch.Tensor:
    """The EFE's output x_r (N x 3 x h x w) on an N x 3 x H x W image resized bilinearly to size (h, w), with
    align_corners=False as EnhanceNet.downscale; `parameters` are a "dsc" EnhanceNet's."""
    image = image.contiguous()
    (batch, _, image_height, image_width), (height, width) = image.shape, size
    factor = image.new_empty(batch, 3, height, width)
    scratch = image.new_empty(SCRATCH_CHANNELS * height * width)
    weights = [*interpolation_weights(image_height, height, False), *interpolation_weights(image_width, width, False)]
    pointers = (ctypes.c_void_p * len(parameters))(*[p.data_ptr() for p in parameters])
    if kernel.efe(image.data_ptr(), factor.data_ptr(), batch, image_height, image_width, height, width,
                  *[w.data_ptr() for w in weights], pointers, scratch.data_ptr(), threads):
        raise MemoryError("cpu_kernel.efe: out of memory for its row buffers")
    return factor


def enhance(kernel: ctypes.CDLL, x: torch.Tensor, low: torch.Tensor, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(enhanced, x_r) for an N x C x H x W image x, with x_r upsampled from the EFE's output `low` (N x C x h x w)
    with align_corners=True, as EnhanceNet.enhancement_factor."""
    x, low = x.contiguous(), low.contiguous()
    out, factor = torch.empty_like(x), torch.empty_like(x)
    wide = x.new_empty(*low.shape[:-1], x.shape[-1])
    weights = [*interpolation_weights(low.shape[-2], x.shape[-2], True),
               *interpolation_weights(low.shape[-1], x.shape[-1], True)]
    kernel.enhance(*[t.data_ptr() for t in (x, out, factor, low, wide)], *x.shape, *low.shape[-2:],
                   *[w.data_ptr() for w in weights], threads)
    return out, factor
