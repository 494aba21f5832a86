"""A hand-fused CPU kernel for SGZ inference: x_r upsampling and the 8 RIE steps in one pass (rie_cpu.c).

PyTorch runs each elementwise step as its own pass over memory; this kernel reads each pixel once, keeps the
recurrence in registers and writes the result once, which makes EnhanceNet about 10x faster than the authors'
op-by-op code on a CPU (see bench.py). It is plain C with no PyTorch headers, compiled on first use in under a
second by the system's C compiler (`$CC`, else `cc`) and cached in `$XDG_CACHE_HOME/sgz` (else ~/.cache/sgz).
Without a working compiler `library()` returns None, and model.py uses its PyTorch path instead.
"""
import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("rie_cpu.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-std=gnu11", "-fopenmp"]
ARGUMENT_TYPES = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 6 + [ctypes.c_void_p] * 6 + [ctypes.c_int]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sgz"


@functools.cache
def library(iterations: int) -> ctypes.CDLL | None:
    """The compiled kernel for `iterations` RIE steps, built once per source, compiler and flags; None if it can't be."""
    compiler = os.environ.get("CC", "cc")
    flags = FLAGS + [f"-DNUM_ITERATIONS={iterations}"]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    path = cache_dir() / f"rie_cpu-{key}.so"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(handle)
            try:
                subprocess.run([compiler, *flags, str(SOURCE), "-o", partial], check=True, capture_output=True,
                               timeout=120)
                os.replace(partial, path)
            finally:
                Path(partial).unlink(missing_ok=True)
        kernel = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        reason = e.stderr.decode(errors="replace").strip().splitlines()[-1:] if hasattr(e, "stderr") and e.stderr else e
        warnings.warn(f"rie_cpu: could not build {SOURCE.name} with {compiler!r} ({reason}); "
                      "using the slower PyTorch path", stacklevel=2)
        return None
    kernel.enhance.argtypes = ARGUMENT_TYPES
    kernel.enhance.restype = None
    return kernel


def enhance(kernel: ctypes.CDLL, x: torch.Tensor, low: torch.Tensor, rows: tuple, columns: tuple,
            threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(enhanced, x_r) for float32 NCHW x and its low-resolution factor `low`, on `threads` threads.

    `rows` and `columns` are (first index, second index, weight of the second) for each output row and column,
    as model.linear_interpolation_weights gives them.
    """
    x, low = x.contiguous(), low.contiguous()
    out, factor = torch.empty_like(x), torch.empty_like(x)
    wide = x.new_empty(*low.shape[:-1], x.shape[-1])
    kernel.enhance(*[t.data_ptr() for t in (x, out, factor, low, wide)], *x.shape, *low.shape[-2:],
                   *[t.data_ptr() for t in (*rows, *columns)], threads)
    return out, factor
