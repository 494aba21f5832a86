"""Video benchmark: streaming `video.enhance_video` against the authors' frame-dump route, memory and flicker.

    python bench_video.py                          # 640x360 and 1920x1080, 4 s and 1 s clips, this machine
    python bench_video.py --sizes 64x48 --seconds 0.5 --memory_seconds 0.2 --flicker_frames 8   # a quick check

Throughput is end to end (decode, enhance, encode) on a synthetic dark clip with audio, median of `--repeats` runs
after a warm-up, alternating with the frame-dump route: what the authors' code implies, every frame to a JPEG, their
image script on each JPEG (read, enhance, save), then the frames re-joined with OpenCV's mp4v (PyAV's mpeg4, the same
codec, where OpenCV is missing). Peak memory is the peak RSS of a fresh process enhancing a short clip and one 10x
longer.
Flicker is `brightness_flicker` of the input and of lossless outputs at several `temporal_smoothing` values.
"""
import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from model import EnhanceNet, load_enhance_net
from video import enhance_video

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"
LOL = SHARED / "data" / "test_data" / "LOL" / "low"
FPS = 30
SMOOTHING = (0.0, 0.5, 0.8, 0.9)


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


def time_routes(model, clip: Path, work: Path, repeats: int, batch_size: int) -> tuple[float, dict[str, float]]:
    """Median wall seconds of `enhance_video` (decode + enhance + encode) and of each frame-dump stage.

    One streaming warm-up run first; then the two routes alternate, so both see the same load on a shared machine.
    """
    streaming, stages = [], []
    for i in range(repeats + 1):
        report = enhance_video(model, clip, work / clip.name, device=torch.device("cpu"), batch_size=batch_size,
                               progress=False)
        if i:
            streaming.append(report.seconds)
            stages.append(time_frame_dump(model, clip, work))
    return statistics.median(streaming), {k: statistics.median(s[k] for s in stages) for k in stages[0]}


@torch.inference_mode()
def time_frame_dump(model, clip: Path, work: Path) -> dict[str, float]:
    """The authors' route, stage by stage: frames to JPEG, the image script on each JPEG, frames back to a video."""
    frames_dir, results_dir = work / "frames", work / "results"
    frames_dir.mkdir(exist_ok=True)
    results_dir.mkdir(exist_ok=True)
    times, start = {}, time.perf_counter()
    with av.open(str(clip)) as container:
        fps = container.streams.video[0].average_rate
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(frames_dir / f"{i:06d}.jpg", quality=95)  # cv2.imwrite's default quality
    times["dump JPEG"], start = time.perf_counter() - start, time.perf_counter()
    for path in sorted(frames_dir.iterdir()):
        x = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        enhanced = model(x)[0][0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(enhanced).save(results_dir / path.name)  # torchvision's save_image: PIL, default quality
    times["image script"], start = time.perf_counter() - start, time.perf_counter()
    join_frames(sorted(results_dir.iterdir()), work / "rejoined.mp4", fps)
    times["re-join"] = time.perf_counter() - start
    return times


def join_frames(paths: list[Path], dst: Path, fps) -> None:
    """Frames to an mp4v video, as the authors' route does with OpenCV; PyAV's mpeg4 encoder where it is missing."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    first = Image.open(paths[0])
    if cv2 is not None:
        writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), first.size)
        for path in paths:
            writer.write(cv2.imread(str(path)))
        writer.release()
        return
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *first.size, "yuv420p"
        for path in paths:
            out.mux(stream.encode(av.VideoFrame.from_image(Image.open(path).convert("RGB"))))
        out.mux(stream.encode())


def peak_rss_mib(clip: Path, work: Path) -> float:
    """Peak RSS (MiB) of a fresh Python process that imports torch and enhances `clip` with `video.enhance_video`.

    Read from the child's VmHWM (Linux): its ru_maxrss would still hold this process's RSS from before the exec.
    """
    code = ("import sys, torch; from pathlib import Path; from model import EnhanceNet; "
            f"from video import enhance_video; torch.set_num_threads({torch.get_num_threads()}); "
            "enhance_video(EnhanceNet().eval(), Path(sys.argv[1]), Path(sys.argv[2]), device=torch.device('cpu'), "
            "progress=False); print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    child = subprocess.run([sys.executable, "-c", code, str(clip), str(work / "memory" / clip.name)], cwd=ROOT,
                           check=True, capture_output=True, text=True)
    return int(child.stdout.split()[-2]) / 1024  # "VmHWM:  123456 kB"


def flicker_table(model, image: np.ndarray, n: int, work: Path) -> dict[str, list[float]]:
    """Per clip kind: input flicker, then output flicker at each SMOOTHING value (lossless output, crf 0)."""
    rows = {}
    for kind in ("light", "pan", "noisy pan"):
        clip = write_clip(work / f"{kind.replace(' ', '_')}.mp4", flicker_frames(image, kind, n), codec="libx264rgb")
        row = [brightness_flicker(decoded(clip))]
        for alpha in SMOOTHING:
            report = enhance_video(model, clip, work / "out" / clip.name, device=torch.device("cpu"), crf=0,
                                   temporal_smoothing=alpha, progress=False)
            row.append(brightness_flicker(decoded(report.output)))
        rows[kind] = row
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1920x1080"],
                        help="WxH of the clips (default: 640x360 1920x1080)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 1.0],
                        help="clip length per size at 30 fps (default: 4 1); the last value serves any further size")
    parser.add_argument("--repeats", type=int, default=3, help="timed streaming runs after a warm-up (default: 3)")
    parser.add_argument("--batch_size", type=int, default=8, help="frames per model call (default: 8, video.py's)")
    parser.add_argument("--memory_seconds", type=float, default=2.0,
                        help="short clip length for the memory check, at the first size; the long one is 10x "
                             "(default: 2)")
    parser.add_argument("--flicker_frames", type=int, default=48, help="frames per flicker clip, 320x180 (default: 48)")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "sgz_official_epoch99.pth",
                        help="EnhanceNet weights (default: the authors' release in ../shared); without them throughput "
                             "runs on a random EnhanceNet (same cost) and flicker is skipped")
    parser.add_argument("--images", type=Path, nargs="+", default=[LOL / n for n in ("1.png", "111.png", "179.png")],
                        help="low-light images the flicker clips are made from (default: LOL low/1, 111, 179 in "
                             "../shared)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default: 1: on 2 CPUs the decoder and encoder threads need the "
                             "rest)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = load_enhance_net(args.weights) if args.weights.is_file() else EnhanceNet().eval()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {cpu}, {torch.get_num_threads()} torch threads, PyAV {av.__version__} "
          f"(FFmpeg {av.ffmpeg_version_info}), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("| clip | frames | streaming fps | x real time | frame-dump fps "
              "| dump JPEG / image script / re-join (s) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for i, size in enumerate(args.sizes):
            width, height = map(int, size.split("x"))
            n = max(2, round(args.seconds[min(i, len(args.seconds) - 1)] * FPS))
            clip = write_clip(work / f"clip_{size}.mp4", moving_frames(width, height, n), audio="aac")
            (work / size).mkdir()
            seconds, stages = time_routes(model, clip, work / size, args.repeats, args.batch_size)
            print(f"| {size}, {n / FPS:g} s | {n} | {n / seconds:.1f} | {n / FPS / seconds:.2f} | "
                  f"{n / sum(stages.values()):.1f} | {' / '.join(f'{s:.1f}' for s in stages.values())} |")
        width, height = map(int, args.sizes[0].split("x"))
        peaks = []
        for factor in (1, 10):
            n = max(2, round(args.memory_seconds * factor * FPS))
            clip = write_clip(work / f"memory_{n}.mp4", moving_frames(width, height, n), audio="aac")
            peaks.append(peak_rss_mib(clip, work))
        print(f"peak RSS at {args.sizes[0]}: {peaks[0]:.0f} MiB for {args.memory_seconds:g} s, "
              f"{peaks[1]:.0f} MiB for {10 * args.memory_seconds:g} s ({100 * (peaks[1] / peaks[0] - 1):+.1f}%)")
        images = [path for path in args.images if path.is_file()]
        if not (args.weights.is_file() and images):
            print(f"flicker: skipped (needs --weights {args.weights} and --images)")
            return
        print(f"\nflicker (mean |change of mean brightness| per frame, 0-255), 320x180, {args.flicker_frames} frames")
        print("| clip | input | " + " | ".join(f"alpha {a:g}" for a in SMOOTHING) + " |")
        print("| --- " * (len(SMOOTHING) + 2) + "|")
        for path in images:
            image = np.asarray(Image.open(path).convert("RGB"))
            for kind, row in flicker_table(model, image, args.flicker_frames, work).items():
                print(f"| {kind}, {path.name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")

if __name__ == "__main__":
    main()
