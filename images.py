"""Enhancing a folder of images: decoding, the network and encoding overlap, with a bounded amount in flight.

    on a CPU (enhance_each):  each worker thread: decode -> the network on one core -> encode, one image at a time
    elsewhere (enhance_images): decode (reader threads) -> same-size batches -> the network -> encode (writer threads)

8-bit images stay 8-bit end to end: on a CPU the network reads the decoded pixels where PIL holds them (RGBX, 4
bytes a pixel: files.rgbx_view) and writes RGBX that PIL encodes where it lies (inference.enhance_uint8), so no
float copy of an image is ever made, nor a byte copy between PIL and the network. Deeper images (16-bit, float) go
through the float path. What is in flight is bounded in images and in pixels, so a folder of huge photos holds a
few of them at a time, not a queue's worth.
"""
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import inference
from files import BadInputError, header_pixels, read_pixels, write_image
from model import EnhanceNet

# Decoded or enhanced pixels held ahead of the network and behind it, beyond the one image always allowed:
# 64 MP, 192 MB as 8-bit RGB.
PIXELS_IN_FLIGHT = 64 * 2**20
Enhancer = Callable[[torch.Tensor], torch.Tensor]


def uint8_enhancer(net: torch.nn.Module, device: torch.device, forward=None, threads: int | None = None) -> Enhancer:
    """An N x H x W x 3 (uint8, or float32 in [0, 1]) -> N x H x W x 3 uint8 CPU tensor enhancer on `device`.

    An EnhanceNet on uint8 runs inference.enhance_uint8 (its C kernel on `threads` threads, else torch's count);
    anything else, or a given `forward` (torch.compile's), runs on floats and is rounded by files.to_uint8.
    """
    def run(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        if forward is None and batch.dtype == torch.uint8 and type(net) is EnhanceNet:
            return inference.enhance_uint8(net, batch, threads=threads).cpu()
        return inference.through_floats(forward or inference.forward_for(net), batch).cpu()
    return run


class InlineExecutor(Executor):
    """Runs each call at once in the calling thread: `--num_workers 0`."""

    def submit(self, fn, /, *args) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:
            future.set_exception(e)
        return future


class PixelBudget:
    """At most `limit` pixels held at once by the threads that share it, or one image, however large."""

    def __init__(self, limit: int):
        self.limit, self.held, self.changed = limit, 0, threading.Condition()

    @contextmanager
    def holding(self, pixels: int):
        """Hold `pixels` for the block, first waiting while other holders leave too few of the limit."""
        with self.changed:
            self.changed.wait_for(lambda: self.held == 0 or self.held + pixels <= self.limit)
            self.held += pixels
        try:
            yield
        finally:
            with self.changed:
                self.held -= pixels
                self.changed.notify_all()


def worker_pool(num_workers: int) -> Executor:
    return ThreadPoolExecutor(num_workers) if num_workers > 0 else InlineExecutor()


def prefetch(pool: Executor, paths: list[Path], depth: int) -> Iterator[tuple[Path, Future]]:
    """Yield (path, future of its pixels) in order, with at most `depth` images, and PIXELS_IN_FLIGHT pixels
    beyond the first, decoding ahead."""
    pending, ahead = deque(), 0
    for path in paths:
        cost = header_pixels(path)
        while pending and (len(pending) >= depth or ahead + cost > PIXELS_IN_FLIGHT):
            ahead -= pending[0][2]
            yield pending.popleft()[:2]  # no local keeps the future, or its image, alive after the caller is done
        pending.append((path, pool.submit(read_pixels, path), cost))
        ahead += cost
    while pending:
        yield pending.popleft()[:2]


def same_size_batches(loaded, batch_size: int, skipped: list[str]):
    """Group consecutive decodable images of one size and depth into batches of at most `batch_size`. The caller
    clears each batch once it is done with it, which frees its images (this generator keeps no other reference)."""
    batch = []
    for src, future in loaded:
        try:
            image, future = future.result(), None
        except BadInputError as e:
            skip(skipped, str(e))
            continue
        first = batch[0][1] if batch else None
        if batch and (len(batch) == batch_size or (first.shape, first.dtype) != (image.shape, image.dtype)):
            yield batch
            batch = []
        batch.append((src, image))
    if batch:
        yield batch


def stacked(images: list[np.ndarray]) -> torch.Tensor:
    """The images as one N x H x W x 3 tensor; a lone image is wrapped, not copied (PIL's arrays are read-only,
    and nothing here writes to them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(images[0][None] if len(images) == 1 else np.stack(images))


def enhance_images(enhance: Enhancer, plan: dict[Path, Path], batch_size: int,
                   num_workers: int) -> tuple[int, list[str], float]:
    """Enhance each image in `plan` into its output path: decoding and encoding run in `num_workers` threads each,
    beside the network. Returns (images written, one line per skipped file, seconds spent in the network)."""
    done, skipped, model_seconds = 0, [], 0.0
    depth = 2 * batch_size + num_workers
    with worker_pool(num_workers) as readers, worker_pool(num_workers) as writers, \
            tqdm(total=len(plan), desc="images", unit="img", disable=not plan) as bar:
        writes, behind = deque(), 0
        for batch in same_size_batches(prefetch(readers, list(plan), depth), batch_size, skipped):
            sources, x = [src for src, _ in batch], stacked([image for _, image in batch])
            batch.clear()  # a decoded image is freed once stacked (a lone one lives on in x until enhanced)
            start = time.perf_counter()
            enhanced = enhance(x)
            model_seconds += time.perf_counter() - start
            del x
            for src, image in zip(sources, enhanced.numpy()):
                writes.append((plan[src], writers.submit(write_image, image, plan[src]), image.size // 3))
                behind += image.size // 3
            del enhanced
            while writes and (len(writes) > depth or behind > PIXELS_IN_FLIGHT):
                dst, future, size = writes.popleft()
                behind -= size
                done += finish_write(dst, future, skipped)
            bar.update(len(sources))
        for dst, future, _ in writes:
            done += finish_write(dst, future, skipped)
        bar.update(len(plan) - bar.n)
    return done, skipped, model_seconds


def enhance_each(enhance: Enhancer, plan: dict[Path, Path], num_workers: int) -> tuple[int, list[str], float]:
    """`enhance_images` for a CPU: each of `num_workers` threads takes one image at a time through decoding, the
    network (give it a one-thread `enhance`) and encoding, so the cores stay busy with no hand-offs and no
    barriers between threads that wait on each other; an image is in memory only while its thread works on it,
    and a thread that has read an image's header waits to decode it while the others hold PIXELS_IN_FLIGHT
    pixels. Returns what `enhance_images` does."""
    budget = PixelBudget(PIXELS_IN_FLIGHT)

    @torch.inference_mode()  # per thread: the caller's mode does not reach the workers
    def process(src: Path) -> float:
        with ExitStack() as held:  # the image's pixels, from its header until its output is written
            x = stacked([read_pixels(src, rgbx=True,
                                     before_decoding=lambda pixels: held.enter_context(budget.holding(pixels)))])
            start = time.perf_counter()
            enhanced = enhance(x)[0].numpy()
            seconds = time.perf_counter() - start
            del x
            write_image(enhanced, plan[src])
            return seconds

    skipped, model_seconds, pending = [], [], deque()

    def collect(src: Path, future: Future) -> None:
        try:
            model_seconds.append(future.result())
        except BadInputError as e:
            skip(skipped, str(e))
        except OSError as e:
            skip(skipped, cannot_write(plan[src], e))
        bar.update()

    with worker_pool(num_workers) as pool, tqdm(total=len(plan), desc="images", unit="img", disable=not plan) as bar:
        try:
            for src in plan:
                pending.append((src, pool.submit(process, src)))
                if len(pending) > 2 * max(1, num_workers):
                    collect(*pending.popleft())
            while pending:
                collect(*pending.popleft())
        except BaseException:
            for _, future in pending:  # what has not started never will; what runs finishes whole
                future.cancel()
            raise
    return len(model_seconds), skipped, sum(model_seconds)


def finish_write(dst: Path, future: Future, skipped: list[str]) -> int:
    """1 once the output is written; 0, with a line naming it, when writing failed (the run goes on)."""
    try:
        future.result()
        return 1
    except OSError as e:
        skip(skipped, cannot_write(dst, e))
        return 0


def cannot_write(dst: Path, e: OSError) -> str:
    return f"{dst}: cannot write ({e.strerror or e})"


def skip(skipped: list[str], line: str) -> None:
    """Note a file the run goes on without: kept for the summary, and one line on stderr between progress bars."""
    skipped.append(line)
    tqdm.write(f"skipped {line}", file=sys.stderr)
