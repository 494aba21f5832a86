"""Low-light video: decode, enhance in batches, encode, streaming through PyAV (FFmpeg), with no frame files on disk.

The paper's title promises video (Zheng & Gupta, WACV 2022); the authors' route dumps every frame to a JPEG, runs the
image script and re-joins the frames, losing the audio. Here a decoder thread and an encoder thread run beside the
model with bounded queues, so memory stays flat however long the clip is:

    decode (thread) -> queue -> EnhanceNet on batches (caller's thread) -> queue -> encode + mux (thread)

Frames reach the network as 8-bit RGB (FFmpeg's swscale) and the encoder as Y'CbCr converted by the C kernel
(`encoder_frame`). The output keeps the input's resolution, frame timestamps (so frame rate and duration) and audio
packets, copied unchanged. Video is H.264 (libx264): yuv420p where both sides are even, yuv444p where one is odd
(4:2:0 cannot hold an odd size exactly), and lossless RGB (libx264rgb) at `crf=0`. A container that cannot hold
H.264 plus the input's audio (AVI, WebM) is written as Matroska (.mkv) instead.
"""
import contextlib
import io
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

import inference
from files import atomic_path
from images import uint8_enhancer
from model import EnhanceNet

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm"})
# Output containers. AVI stores no timestamps (so no reordered H.264 frames) and WebM no H.264: both become .mkv.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
PRESET = "veryfast"  # libx264 speed preset: on CPU the encoder shares the cores with the model
# libx264 encodes several frames at once in its threads, as the ffmpeg command does; PyAV's default, threads on
# slices of one frame, left the cores idler beside the model (13% slower at 640x360, 7% at 1080p)
ENCODER_THREADS = "FRAME"
OPEN_ERRORS = (av.FFmpegError, OSError, UnicodeDecodeError)  # what av.open raises for a file it cannot read
# (Kr, Kb) of the colour matrix swscale converts RGB to Y'CbCr with, by the encoder's colorspace tag (FFmpeg's
# AVColorSpace): BT.709, unspecified (BT.601, swscale's default), FCC, BT.470BG and SMPTE 170M (BT.601), SMPTE 240M,
# BT.2020 non-constant luminance. Other tags go through swscale itself.
YUV_MATRICES = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114),
                7: (0.212, 0.087), 9: (0.2627, 0.0593)}
BatchEnhancer = Callable[[np.ndarray], np.ndarray]  # N x H x W x 3 uint8 RGB frames in, the same out
QUEUE_BATCHES = 2  # batches each queue may hold: enough to overlap decode, model and encode, and no more
_END = object()


class VideoError(Exception):
    """No output could be made from this file (no video stream, unsupported codec, unreadable); one line."""


@dataclass
class VideoReport:
    output: Path
    frames: int
    seconds: float  # wall-clock time, decode + enhance + encode
    duration: float  # seconds of video enhanced (the input's, up to the last frame decoded)
    error: str | None = None  # set when the input was cut or damaged: what decoding met, and what `output` holds
    notes: list[str] = field(default_factory=list)  # what the output leaves out or changes, one line each

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def realtime(self) -> float:
        """Seconds of video per second of wall time: above 1 is faster than real time."""
        return self.duration / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        line = (f"{self.output}: {self.frames} frames in {self.seconds:.1f} s, {self.fps:.1f} fps, "
                f"{self.realtime:.2f}x real time")
        return "; ".join([line, *self.notes]) + (f" (damaged input: {self.error})" if self.error else "")


class FrameEnhancer:
    """EnhanceNet on batches of uint8 frames, with an optional EMA of the enhancement factor x_r across frames.

    `temporal_smoothing` alpha: s_0 = x_r_0, s_t = alpha * s_{t-1} + (1 - alpha) * x_r_t, and frame t is enhanced
    with s_t (RIE, paper Eq. 1). 0 (the default) is off: each frame gets its own x_r, as in the paper; the EMA is
    not in the paper.
    """

    def __init__(self, model: EnhanceNet, device: torch.device, temporal_smoothing: float = 0.0):
        if not 0.0 <= temporal_smoothing < 1.0:
            raise ValueError(f"temporal_smoothing must be in [0, 1), not {temporal_smoothing}")
        self.model, self.device, self.alpha = model, torch.device(device), temporal_smoothing
        self.enhance = uint8_enhancer(model, self.device)
        self.x_r_low = None

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """NxHxWx3 uint8 RGB -> NxHxWx3 uint8 RGB, enhanced: from and to the decoder's and encoder's uint8 on a CPU
        (images.uint8_enhancer)."""
        rgb = torch.from_numpy(frames)
        if self.alpha == 0:
            return self.enhance(rgb).numpy()
        return torch.cat([self._smoothed(frame[None].to(self.device)) for frame in rgb]).cpu().numpy()

    def _smoothed(self, rgb: torch.Tensor) -> torch.Tensor:
        """The EMA runs on the EFE's low-resolution factor: bilinear upsampling is linear, so this equals the EMA
        of the full-resolution x_r, at a fraction of the memory, and inference.enhance_uint8 does the rest."""
        x_r_low = inference.low_resolution_factor(self.model, rgb)
        if self.x_r_low is not None:
            x_r_low.mul_(1 - self.alpha).add_(self.x_r_low, alpha=self.alpha)
        self.x_r_low = x_r_low
        return inference.enhance_uint8(self.model, rgb, x_r_low)


class FrameTimes:
    """Each decoded frame's (pts, duration) in the stream's time base, always increasing.

    Timestamps are kept, unless missing or out of order: from there on frames follow at the frame rate. An AVI
    stores no presentation times, only each packet's slot (its dts; a dropped frame leaves its slot empty), and the
    decoder hands frames out in display order, so there the n-th frame takes the n-th slot.
    """

    def __init__(self, avi: bool, frame_duration: int):
        self.slots = deque() if avi else None
        self.frame_duration, self.steady, self.last, self.next = frame_duration, not avi, None, 0

    def packet(self, packet: av.Packet) -> None:
        if self.slots is not None and packet.size and packet.dts is not None:
            self.slots.append(packet.dts)

    def lost(self, packet: av.Packet) -> None:
        """The decoder failed on `packet`, the last one given to `packet`: its slot stays empty, a gap."""
        if self.slots and self.slots[-1] == packet.dts:
            self.slots.pop()

    def frame(self, frame: av.VideoFrame) -> tuple[int, int]:
        if self.slots:
            pts, duration = max(self.slots.popleft(), self.next), self.frame_duration
        else:
            self.steady = self.steady and frame.pts is not None and (self.last is None or frame.pts > self.last)
            pts = frame.pts if self.steady else self.next
            duration = frame.duration if self.steady and frame.duration else self.frame_duration
        self.last, self.next = pts, pts + duration
        return pts, duration


@dataclass
class Damage:
    """Damaged data met inside the input, the video going on past it: packets the decoder could not decode (their
    frames left out, gaps the audio keeps time over), frames it decoded with errors, which FFmpeg conceals (flags
    them corrupt) and which are kept, audio packets whose damaged timestamps the muxer refused, and audio streams
    left out because no codec FFmpeg knows is named (the output lacks them)."""
    lost: int = 0
    lost_at: float = 0.0  # seconds, the first lost packet's time
    reason: str = ""  # FFmpeg's, for the first
    concealed: int = 0
    concealed_at: float = 0.0  # seconds, the first concealed frame's time
    audio_refused: int = 0  # audio packets the muxer would not take (their timestamps damaged: out of order)
    audio_unknown: int = 0  # audio streams whose codec is unknown (see _audio_streams)

    def clauses(self) -> list[str]:
        said = []
        if self.lost:
            said.append(f"damaged video data at {self.lost_at:.2f} s ({self.reason}): " + (
                "1 packet not decoded, its frame left out" if self.lost == 1 else
                f"{self.lost} packets not decoded, their frames left out") + ", the rest enhanced")
        if self.concealed:
            said.append(f"{plural(self.concealed, 'frame')} decoded from damaged data, the first at "
                        f"{self.concealed_at:.2f} s (concealed by FFmpeg's decoder, kept)")
        if self.audio_refused:
            said.append(f"{plural(self.audio_refused, 'audio packet')} left out (damaged timestamps, out of order)")
        if self.audio_unknown:
            said.append(f"{plural(self.audio_unknown, 'audio stream')} left out (codec unknown: a damaged header?)")
        return said


@contextlib.contextmanager
def _ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error messages (level, context name, text) from every thread while the block runs. PyAV drops all
    of FFmpeg's messages unless a level is set, and by default a message equal to the one before it, even from an
    earlier file (a second truncated .mkv's "File ended prematurely" went unseen): this sets ERROR and lets repeats
    through for the block, then puts both settings back."""
    level, skip_repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip_repeated)


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, with an s unless n is 1: '1 frame', '3 frames'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _one_line(e: BaseException) -> str:
    """FFmpeg's own reason ("Invalid data found when processing input"), without errno and file name."""
    return getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    """Put, giving up when the pipeline stops, so a thread never blocks on a queue nobody reads."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            pass


def _get(q: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            pass
    return _END


def _stop_on_error(stage, p: "Pipeline") -> None:
    """Run a pipeline stage on `p`; if it fails, stop the other stages first, so none waits on a queue nobody
    serves."""
    try:
        stage(p)
    except BaseException:
        p.stop.set()
        raise


def output_path(dst: Path, audio_codecs: Iterable[str]) -> Path:
    """`dst`, or `dst` with suffix .mkv where its container cannot hold H.264 and every audio codec."""
    fmt = CONTAINERS.get(dst.suffix.lower())
    if fmt is not None:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            if {"h264", *audio_codecs} <= probe.supported_codecs:
                return dst
    return dst.with_suffix(".mkv")


def _audio_streams(container) -> list:
    """The audio streams that can be copied: those whose codec FFmpeg knows (a damaged header can leave none)."""
    return [stream for stream in container.streams.audio if stream.codec_context is not None]


def _audio_codecs(streams: list) -> list[str]:
    return [stream.codec_context.codec.canonical_name for stream in streams]


def planned_output(src: Path, dst: Path) -> Path:
    """The path `enhance_video(src, dst)` writes (see `output_path`), found before it runs, from src's audio."""
    try:
        with av.open(str(src)) as container:
            return output_path(dst, _audio_codecs(_audio_streams(container)))
    except OPEN_ERRORS:
        return output_path(dst, [])  # unreadable: enhance_video will say so and write nothing


def _open_input(src: Path):
    try:
        container = av.open(str(src))
    except OPEN_ERRORS as e:
        raise VideoError(f"{src}: not a readable video ({_one_line(e)})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{src}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.width or not stream.height:
        container.close()
        raise VideoError(f"{src}: its video codec cannot be decoded by PyAV's FFmpeg {av.ffmpeg_version_info}")
    # no frame threads: with them the decoder says it failed on a packet a few packets late, and PyAV drops the
    # error when frames come out in the same call (a lost frame, without a word); streaming ran as fast either way
    # (the encoder is what costs), 640x360 and 1080p timed in turns
    stream.thread_type = "SLICE"
    return container, stream


def add_video_stream(output, stream, crf: int, rotation: int) -> None:
    """H.264 at the input's size, pixel aspect, rotation, frame rate and time base (pixel formats: module docstring)."""
    width, height = stream.width, stream.height
    if crf == 0:
        codec, pix_fmt = "libx264rgb", "rgb24"  # lossless, in RGB: the file holds exactly the enhanced frames
    else:
        codec, pix_fmt = "libx264", "yuv444p" if width % 2 or height % 2 else "yuv420p"
    rate = stream.average_rate or stream.guessed_rate or 30
    out = output.add_stream(codec, rate=rate, options={"crf": str(crf), "preset": PRESET})
    out.width, out.height, out.pix_fmt = width, height, pix_fmt
    out.codec_context.thread_type = ENCODER_THREADS
    out.time_base = stream.time_base
    if stream.sample_aspect_ratio:
        out.sample_aspect_ratio = stream.sample_aspect_ratio
    if rotation:  # phones store portrait video as landscape frames plus a rotation
        out.set_display_rotation(rotation)
    out.codec_context.time_base = stream.time_base
    if codec == "libx264":  # the decoder's RGB used the input's YUV matrix; encode with it and keep the tags
        for tag in ("colorspace", "color_primaries", "color_trc"):
            setattr(out.codec_context, tag, getattr(stream.codec_context, tag))


def enhance_video(model: EnhanceNet, src: Path, dst: Path, *, device: torch.device, batch_size: int = 8,
                  crf: int = 18, temporal_smoothing: float = 0.0, progress: bool = True) -> VideoReport:
    """Enhance every frame of `src` and write `dst` (or its .mkv sibling, see `output_path`) atomically: `transcode`
    through a FrameEnhancer."""
    return transcode(src, dst, FrameEnhancer(model, device, temporal_smoothing), batch_size=batch_size, crf=crf,
                     progress=progress)


def transcode(src: Path, dst: Path, enhance: BatchEnhancer, *, batch_size: int = 8, crf: int = 18,
              progress: bool = True) -> VideoReport:
    """Every frame of `src` through `enhance` in batches of `batch_size`, written to `dst` (or its .mkv sibling, see
    `output_path`) atomically, with the audio and timing kept.

    Raises VideoError when no output can be made, from the input or because `dst` cannot be written (a file in the
    way of its folder, no permission, a full disk). A cut or damaged input gives a valid output of the frames that
    decode, with `VideoReport.error` saying what was met: a cut, the frames up to it; packets the decoder fails on,
    gaps (the video goes on after them); frames it decodes with errors, kept as FFmpeg conceals them.
    """
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51 (libx264), not {crf}")
    src, dst = Path(src), Path(dst)
    start = time.perf_counter()
    with _ffmpeg_errors() as opening:  # probing reads a small file to its end: a cut one is said here
        container, in_video = _open_input(src)
    others = len(container.streams.video) - 1
    notes = [f"{plural(others, 'more video stream')} left out (only the first is enhanced)"] if others else []
    try:
        in_audio = _audio_streams(container)
        dst = output_path(dst, _audio_codecs(in_audio))
        if dst.resolve() == src.resolve():
            raise VideoError(f"{src}: the output would overwrite the input; choose another --test_dir")
        rotation = _rotation(src)
        with atomic_path(dst) as tmp:
            with av.open(str(tmp), "w", format=CONTAINERS[dst.suffix.lower()]) as output:
                add_video_stream(output, in_video, crf, rotation)
                for stream in in_audio:
                    output.add_stream_from_template(stream)
                frames, duration, error = _run(container, in_audio, output, enhance, batch_size, progress, src,
                                               notes, opening)
            if frames == 0:
                raise VideoError(f"{src}: no frame could be decoded ({error or 'empty video stream'})")
    except OSError as e:  # the input side's errors are caught where it is read: these are the output's
        raise VideoError(f"{dst}: cannot write ({_one_line(e)})") from e
    except av.FFmpegError as e:  # anything else FFmpeg refuses on the way: one line, and the batch goes on
        raise VideoError(f"{src}: FFmpeg stopped ({_one_line(e)}), nothing written") from e
    finally:
        container.close()
    return VideoReport(dst, frames, time.perf_counter() - start, duration, error, notes)


@dataclass
class Pipeline:
    """What the three stages of one video share: its streams, the two bounded queues between the stages, the stop
    signal, and what the stages learn on the way (frame timing, errors, notes, how far the frames reach)."""
    container: av.container.InputContainer
    in_audio: list  # the audio streams copied, in the order of the output's
    output: av.container.OutputContainer
    src: Path
    batch_size: int
    notes: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)  # what stopped the demuxer before the end
    damage: Damage = field(default_factory=Damage)
    cut_short: list[str] = field(default_factory=list)  # the demuxer read less than a packet's size
    resized: set = field(default_factory=set)  # picture sizes met after the first; frames are scaled to the first
    frames: int = 0  # frames enhanced
    first: int | None = None  # the first frame's pts
    end: int = 0  # where the last frame enhanced ends

    def __post_init__(self):
        self.in_video = self.container.streams.video[0]
        self.damage.audio_unknown = len(self.container.streams.audio) - len(self.in_audio)
        self.out_video = self.output.streams.video[0]
        self.out_audio = {stream.index: out for stream, out in zip(self.in_audio, self.output.streams.audio)}
        self.decoded = queue.Queue(maxsize=QUEUE_BATCHES * self.batch_size)  # frames and audio packets
        self.encoded = queue.Queue(maxsize=QUEUE_BATCHES)  # batches of enhanced frames and audio packets
        frame_duration = max(1, round(1 / (self.out_video.codec_context.framerate * self.in_video.time_base)))
        self.times = FrameTimes("avi" in self.container.format.name, frame_duration)
        self.size = (self.out_video.width, self.out_video.height)


def _run(container, in_audio: list, output, enhance: BatchEnhancer, batch_size: int, progress: bool, src: Path,
         notes: list[str], opening: list[tuple[int, str, str]]):
    """The three stages, decode and encode in threads beside the network; returns (frames, seconds of video, error
    line or None), adding to `notes`. `opening`: FFmpeg's errors while the input was opened."""
    p = Pipeline(container, in_audio, output, src, batch_size, notes)
    with _ffmpeg_errors() as logs, ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(_stop_on_error, stage, p) for stage in (_decode, _encode)]
        _stop_on_error(lambda p: _enhance_batches(p, enhance, progress), p)
        for worker in workers:
            worker.result()
    stop = p.errors[0] if p.errors else _truncation(p, opening + logs)
    said = [stop] * (stop is not None) + p.damage.clauses()
    error = f"{src}: " + "; ".join(said) if said else None
    return p.frames, float((p.end - p.first) * p.in_video.time_base) if p.frames else 0.0, error


def _decode(p: Pipeline) -> None:
    """Demux: audio packets and decoded RGB frames, with their timing, into p.decoded, in order."""
    try:
        for packet in p.container.demux(p.in_video, *p.in_audio):
            if packet.is_corrupt:
                p.cut_short.append(f"a {packet.stream.type} packet is cut short")
            if packet.stream.type == "audio":
                if packet.dts is not None:
                    _put(p.decoded, packet, p.stop)
                continue
            if packet.is_corrupt:  # not decoded: its picture would be partly made up
                continue
            p.times.packet(packet)
            try:
                frames = packet.decode()
            except av.FFmpegError as e:  # this packet's data is damaged: the stream goes on after it
                p.times.lost(packet)
                if not p.damage.lost:  # where the next frame would have been
                    p.damage.lost_at, p.damage.reason = float(p.times.next * p.in_video.time_base), _one_line(e)
                p.damage.lost += 1
                continue
            for frame in frames:
                if (frame.width, frame.height) != p.size and (frame.width, frame.height) not in p.resized:
                    p.resized.add((frame.width, frame.height))
                    p.notes.append(f"the picture changes to {frame.width}x{frame.height} at "
                                   f"{float(p.times.next * p.in_video.time_base):.2f} s, scaled to "
                                   f"{p.size[0]}x{p.size[1]}")
                rgb = frame.to_ndarray(format="rgb24", width=p.size[0], height=p.size[1])
                pts, duration = p.times.frame(frame)
                if frame.is_corrupt:
                    if not p.damage.concealed:
                        p.damage.concealed_at = float(pts * p.in_video.time_base)
                    p.damage.concealed += 1
                _put(p.decoded, (rgb, pts, duration), p.stop)
            if p.stop.is_set():
                return
    except av.FFmpegError as e:  # the demuxer's: nothing after it can be read
        p.errors.append(f"damaged data at {float(p.times.next * p.in_video.time_base):.2f} s, enhanced up to there "
                        f"({_one_line(e)})")
    finally:
        _put(p.decoded, _END, p.stop)


def _enhance_batches(p: Pipeline, enhance: BatchEnhancer, progress: bool) -> None:
    """p.decoded's frames through the network in batches of p.batch_size into p.encoded; audio passes through."""
    declared = _declared_duration(p.in_video)  # for the progress bar only: headers count hidden frames too
    estimate = p.in_video.frames or (round(declared * p.out_video.codec_context.framerate) if declared else None)
    with tqdm(total=estimate, unit="frame", desc=p.src.name, disable=not progress, leave=False) as bar:
        batch: list = []
        while True:
            item = _get(p.decoded, p.stop)
            if isinstance(item, av.Packet):
                _put(p.encoded, item, p.stop)
                continue
            if item is not _END:
                batch.append(item)
            if batch and (len(batch) == p.batch_size or item is _END):
                out = enhance(np.stack([rgb for rgb, _, _ in batch]))
                _put(p.encoded, [(rgb, pts, d) for rgb, (_, pts, d) in zip(out, batch)], p.stop)
                p.first = batch[0][1] if p.first is None else p.first  # _decode keeps pts increasing
                p.end = batch[-1][1] + batch[-1][2]
                p.frames += len(batch)
                bar.update(len(batch))
                batch = []
            if item is _END:
                break
    _put(p.encoded, _END, p.stop)


def _encode(p: Pipeline) -> None:
    """p.encoded's frames through libx264 and its audio packets, muxed in order into p.output."""
    while (item := _get(p.encoded, p.stop)) is not _END:
        if isinstance(item, av.Packet):
            item.stream = p.out_audio[item.stream_index]
            try:
                p.output.mux(item)
            except av.FFmpegError:  # refused before anything is written: a damaged timestamp, out of order
                p.damage.audio_refused += 1
            continue
        for rgb, pts, duration in item:
            frame = encoder_frame(rgb, p.out_video.codec_context)
            frame.pts, frame.duration, frame.time_base = pts, duration, p.in_video.time_base
            p.output.mux(p.out_video.encode(frame))
    if not p.stop.is_set():
        p.output.mux(p.out_video.encode(None))


def encoder_frame(rgb: np.ndarray, codec: av.video.codeccontext.VideoCodecContext) -> av.VideoFrame:
    """An enhanced HxWx3 uint8 RGB frame (rows contiguous) as the encoder `codec` takes it, tagged with its
    colorspace: converted to its Y'CbCr, 4:4:4 or 4:2:0 of an even size (what add_video_stream picks), by
    cpu_kernel.c's rgb_to_yuv where the C kernel runs and the colour matrix is one in YUV_MATRICES; else as RGB,
    which PyAV converts with swscale. The two agree to within one level (tested); the kernel takes a third of
    swscale's time, in the encoder's thread."""
    rgb, (height, width) = np.ascontiguousarray(rgb), rgb.shape[:2]
    matrix = YUV_MATRICES.get(int(codec.colorspace))
    subsampled = codec.pix_fmt == "yuv420p"
    convertible = codec.pix_fmt == "yuv444p" or subsampled and height % 2 == width % 2 == 0
    kernel = inference.library() if matrix and convertible else None
    if kernel is None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    else:
        frame = av.VideoFrame(width, height, codec.pix_fmt)
        luma, blue, red = frame.planes
        if kernel.rgb_to_yuv(rgb.ctypes.data, rgb.strides[0], height, width, *matrix, subsampled,
                             luma.buffer_ptr, luma.line_size, blue.buffer_ptr, blue.line_size, red.buffer_ptr,
                             red.line_size):
            raise MemoryError("cpu_kernel.rgb_to_yuv: out of memory for its row buffers")
    frame.colorspace = codec.colorspace
    return frame


def _truncation(p: Pipeline, logs: list[tuple[int, str, str]]) -> str | None:
    """What says where the input's data stops early, or None when it is whole.

    Completeness is what decodes: a demuxer that meets the end of the data early marks the packet it cut short,
    or says so ("partial file", "File ended prematurely"), and stops as at a normal end. Headers' frame counts and
    durations mislead: they include frames an edit list hides (a clip cut without re-encoding), a cover picture's
    stream spans the audio, an AVI counts its dropped frames.
    """
    cut = [text.strip() for level, name, text in logs if level <= av.logging.ERROR and name == p.container.format.name]
    if p.times.slots is not None and p.times.next < p.in_video.frames:  # an AVI counts its slots, dropped ones too
        cut.append(f"{p.times.next} of its {p.in_video.frames} frame slots")
    if not (cut or p.cut_short):
        return None
    return (f"the data stops at {float(p.end * p.in_video.time_base):.2f} s ({(cut + p.cut_short)[0]}), enhanced up "
            "to there (truncated or damaged)")


def _rotation(src: Path) -> int:
    """The first frame's display rotation (FFmpeg hands the container's display matrix to each frame)."""
    try:
        with av.open(str(src)) as container:
            return round(next(container.decode(video=0)).rotation)
    except (*OPEN_ERRORS, StopIteration):
        return 0


def _declared_duration(stream) -> float | None:
    """The video stream's duration in seconds as its header states it (Matroska keeps it in a tag), if any."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    hours, minutes, seconds = (stream.metadata.get("DURATION", "") + "::").split(":")[:3]
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
