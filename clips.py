"""Synthetic clips for the video tests and bench_video.py: dark scenes, panning and flickering night clips, and
an encoder for them (optionally with a tone as audio, explicit timestamps or a display rotation).
"""
import itertools
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

FPS = 30


def brightness_flicker(frames: Iterable[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change of mean brightness (0-255 scale) over HxWx3 uint8 frames."""
    means = np.array([frame.mean() for frame in frames])
    return float(np.abs(np.diff(means)).mean()) if len(means) > 1 else 0.0


def dark_scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A dim HxWx3 float scene of soft blobs, standing in for a night shot when no real image is given."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(3, 45, (max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((width, height), Image.BICUBIC))
                     for c in range(3)], -1).clip(0, 255)


def write_clip(path: Path, frames: Iterable[np.ndarray], *, fps: int = FPS, codec: str = "libx264",
               audio: str | None = None, pts: list[int] | None = None, options: dict | None = None,
               rotation: int = 0) -> Path:
    """Encode HxWx3 uint8 frames at `fps` (or at `pts` in ms) with an optional 440 Hz tone as long as the video.

    `codec` "libx264rgb" is lossless (crf 0, RGB); `audio` is an FFmpeg encoder name ("aac", "libopus", "mp3");
    `options` go to the container (e.g. {"movflags": "faststart"}); `rotation` is the display rotation, as phones set.
    """
    frames = iter(frames)
    first = next(frames)
    lossless = codec == "libx264rgb"
    with av.open(str(path), "w", options=options or {}) as out:
        video = out.add_stream(codec, rate=fps, options={"crf": "0"} if lossless else {})
        video.height, video.width = first.shape[:2]
        video.pix_fmt = "rgb24" if lossless else "yuv444p" if first.shape[0] % 2 or first.shape[1] % 2 else "yuv420p"
        if pts is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=48000, layout="mono") if audio else None
        n = 0
        for n, rgb in enumerate(itertools.chain([first], frames), 1):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n - 1 if pts is None else pts[n - 1]
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            fmt, size = sound.codec_context.format.name, sound.codec_context.frame_size or 1024
            dtype = {"flt": np.float32, "s16": np.int16, "s32": np.int32}[fmt.rstrip("p")]
            scale = 1.0 if dtype is np.float32 else 0.5 * np.iinfo(dtype).max
            tone = (scale * np.sin(2 * np.pi * 440 * np.arange(48000 * n // fps) / 48000)).astype(dtype)
            for start in range(0, len(tone), size):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + size].copy(), format=fmt, layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return path


def moving_frames(width: int, height: int, n: int, seed: int = 0):
    """A dark scene panning sideways, with a bright bar crossing it and sensor noise: what throughput is timed on."""
    rng = np.random.default_rng(seed)
    scene = dark_scene(width + n, height, seed)
    for t in range(n):
        frame = scene[:, t:t + width].copy()
        bar = (7 * t) % width
        frame[:, bar:bar + width // 20] += 80
        yield np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)


def flicker_frames(image: np.ndarray, kind: str, n: int, width: int = 320, height: int = 180, seed: int = 0):
    """Night clips made from one real low-light image: "light" (a headlight crossing a still scene), "pan" (a slow
    pan and zoom), "noisy pan" (the pan with sensor noise, sigma 4 on 0-255)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:height, :width]
    still = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR)).astype(np.float32)
    for t in range(n):
        if kind == "light":
            cx = width * (0.1 + 0.8 * t / n)
            light = np.exp(-((xx - cx) ** 2 + (yy - 0.6 * height) ** 2) / (2 * (height / 14) ** 2))
            frame = still + 150 * light[..., None]
        else:
            zoom = 0.8 - 0.1 * t / n
            cw, ch = int(w * zoom), int(h * zoom)
            x0, y0 = int((w - cw) * t / n), (h - ch) // 2
            crop = Image.fromarray(image[y0:y0 + ch, x0:x0 + cw]).resize((width, height), Image.BILINEAR)
            frame = np.asarray(crop).astype(np.float32)
            if kind == "noisy pan":
                frame = frame + rng.normal(0, 4, frame.shape)
        yield np.clip(frame, 0, 255).round().astype(np.uint8)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
