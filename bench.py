"""Inference speed: the authors' op-by-op math beside this repo's default path and onnxruntime, in one table.

    python bench.py                                    # full table: 4 sizes on CPU (and CUDA when present)
    python bench.py --sizes 64x48 --repeats 3          # a quick check

test.py end to end on a folder, and its memory on a huge photo: bench_folder.py.

Each row is the median of --repeats timed runs after --warmup untimed ones, on the same input. The onnxruntime rows
run export.py's graph (deploy.py) on --threads threads; without onnxruntime or onnxscript one line says they are
skipped. Each size ends with its floor, and each row says how far above it it is: on a CPU the network's arithmetic
(`multiply_adds`) at the rate torch.mm sustains on the same threads, timed in turns with the rows; on a GPU the
bytes an fp16 image must move at the device's copy rate.
"""
import argparse
import ctypes
import tempfile
from pathlib import Path

import torch

import deploy
import inference
from metrics import interleaved_median_seconds, median_seconds
from model import NUM_ITERATIONS, EnhanceNet, init_weights, load_enhance_net

MATRIX_SIDE = 1024  # of the square matrices whose product measures a CPU's multiply-add rate


def reference_forward(net: EnhanceNet, x: torch.Tensor) -> torch.Tensor:
    """The authors' math op by op: EFE on the downscaled input, x_r upsampled (EnhanceNet.enhancement_factor, the
    authors' size rule), then 8 steps of Eq. 1, each a new tensor."""
    x_r = net.enhancement_factor(x)
    for _ in range(NUM_ITERATIONS):
        x = x + x_r * (torch.pow(x, 2) - x)
    return x


def peak_memory_mb(fn, device: torch.device) -> float | None:
    """Peak memory one call adds: CUDA allocator peak, or on Linux (glibc) the process's peak RSS after a reset."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.mallopt(inference.M_MMAP_THRESHOLD, 64 * 1024)  # each tensor gets fresh pages and returns them when freed
    libc.malloc_trim(0)  # and no freed heap memory is left to reuse unseen: VmHWM sees this call alone
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = resident_kb("VmRSS")
        fn()
        return (resident_kb("VmHWM") - base) / 1024
    except OSError:
        return None
    finally:
        inference.keep_freed_memory()


def bandwidth_floor(size: tuple[int, int], device: torch.device) -> tuple[str, float]:
    """The fewest bytes an fp16 image must move (read once, write once) over a measured device copy rate: the
    floor row's label and its milliseconds."""
    buffer = torch.empty(2**28, dtype=torch.uint8, device=device)
    seconds = median_seconds(lambda: buffer.clone(), 3, 10, device)
    bytes_per_second = 2 * buffer.numel() / seconds
    width, height = size
    return (f"floor: fp16 read + write at {bytes_per_second / 1e12:.2f} TB/s",
            2 * 3 * width * height * 2 / bytes_per_second * 1e3)


def multiply_adds(net: EnhanceNet, size: tuple[int, int]) -> int:
    """The network's arithmetic on one image of `size`, in multiply-adds: each EFE conv weight once for each pixel of
    the downscaled image (depthwise and 1x1), and RIE's two operations a step (a multiply-add and a multiply, each
    one slot of a CPU's multiply-add units) on each of the 3 x H x W values. Biases, tanh and the resampling are left
    out: a floor."""
    width, height = size
    low_height, low_width = net.downscale_size(torch.empty(0, 3, height, width))
    efe = sum(p.numel() for p in net.parameters() if p.dim() == 4) * low_height * low_width
    return efe + 3 * width * height * NUM_ITERATIONS * 2


def resident_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def onnxruntime_session(net: EnhanceNet, threads: int):
    """An onnxruntime session of net's ONNX graph (deploy.py), exported once to a temporary file; None, after one
    line, when onnxruntime or onnxscript is not installed."""
    missing = deploy.missing_packages()
    if missing:
        print(f"onnxruntime rows skipped: {' and '.join(missing)} not installed; {deploy.INSTALL_HINT}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sgz.onnx"
        path.write_bytes(deploy.to_onnx(net).SerializeToString())
        return deploy.session(path, threads)


def model_rows(net: EnhanceNet, size: tuple[int, int], device: torch.device, args, session) -> list[list[str]]:
    width, height = size
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).mul_(0.4).to(device)
    paths = {"reference (authors' math)": lambda: reference_forward(net, x),
             "default (inference.enhance)": lambda: inference.enhance(net, x)}
    if device.type == "cpu":
        paths["default without a C compiler"] = lambda: inference.enhance(net, x, c_kernel=False)
        if session is not None:
            paths["onnxruntime"] = lambda: deploy.run(session, x)
    if args.compile:
        paths["torch.compile"] = torch.compile(lambda: reference_forward(net, x))
    if device.type == "cuda":
        half_net = EnhanceNet(net.scale_factor).to(device).half().eval()
        half_net.load_state_dict(net.state_dict())
        batch = x.half().expand(args.cuda_batch, -1, -1, -1).contiguous()
        paths[f"default fp16, batch {args.cuda_batch}"] = lambda: inference.enhance(half_net, batch)
    reference = reference_forward(net, x)
    floor_fns = []
    if device.type == "cpu":  # timed in turns with the paths, on the same threads
        matrix = torch.rand(MATRIX_SIDE, MATRIX_SIDE)
        product = torch.empty_like(matrix)
        floor_fns.append(lambda: torch.mm(matrix, matrix, out=product))
    seconds = interleaved_median_seconds(list(paths.values()) + floor_fns, args.warmup, args.repeats, device)
    if device.type == "cpu":
        rate, arithmetic = MATRIX_SIDE**3 / seconds.pop(), multiply_adds(net, size)
        floor_label = f"floor: {arithmetic / 1e6:.0f} M multiply-adds at torch.mm's {rate / 1e9:.0f} G/s"
        floor_ms = arithmetic / rate * 1e3
    else:
        floor_label, floor_ms = bandwidth_floor(size, device)
    rows, reference_ms = [], seconds[0] * 1e3
    for (name, fn), fn_seconds in zip(paths.items(), seconds):
        ms = fn_seconds * 1e3 / (args.cuda_batch if "batch" in name else 1)
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        diff = (out[:1].float() - reference).abs().max().item() * 255
        memory = peak_memory_mb(fn, device)
        rows.append([f"{width}x{height}", device.type, name, f"{ms:.2f}", f"{1e3 / ms:.0f}",
                     f"{reference_ms / ms:.1f}x", f"{diff:.3f}/255", "n/a" if memory is None else f"{memory:.0f}",
                     f"{ms / floor_ms:.1f}x"])
    return rows + [[f"{width}x{height}", device.type, floor_label, f"{floor_ms:.4f}", f"{1e3 / floor_ms:.0f}",
                    "", "", "", "1.0x"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="640x360,1200x900,1920x1080,3840x2160",
                        help="WxH sizes (default: 640x360,1200x900,1920x1080,3840x2160)")
    parser.add_argument("--weight_dir", type=Path, default=Path("snapshots/sgz_ours.pth"),
                        help="EFE weights; random N(0, 0.02) when the file is missing "
                             "(default: snapshots/sgz_ours.pth)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs; the median is shown (default: 20)")
    parser.add_argument("--cuda_batch", type=int, default=64, help="batch of the CUDA fp16 row (default: 64)")
    parser.add_argument("--compile", action="store_true",
                        help="add a torch.compile row (compiles for minutes on a cold cache; default: off)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    inference.keep_freed_memory()  # as test.py does, for every row alike
    try:
        run(args)
    finally:
        torch.set_num_threads(threads)
        inference.keep_freed_memory(False)


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.weight_dir.is_file():
        net = load_enhance_net(args.weight_dir)
    else:
        net = EnhanceNet().eval()
        init_weights(net)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    session = onnxruntime_session(net, args.threads)
    rows = []
    with torch.inference_mode():
        for device in devices:
            net.to(device)
            for size in args.sizes.split(","):
                rows += model_rows(net, parse_size(size), device, args, session)
    header = ["size", "device", "path", "ms/image", "images/s", "speedup", "max diff", "peak MB", "x floor"]
    cpu = f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if len(devices) > 1 else "")
    print(f"\ntorch {torch.__version__}, {cpu}")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
