"""Video benchmark: streaming `video.enhance_video` against the authors' frame-dump route, memory and flicker.

    python bench_video.py                          # 640x360 and 1920x1080, 4 s and 1 s clips, this machine
    python bench_video.py --sizes 64x48 --seconds 0.5 --memory_seconds 0.2 --flicker_frames 8   # a quick check
    python bench_video.py --pan_image ../shared/data/test_data/LOL/low/1.png   # throughput on a real low-light image

Throughput is end to end (decode, enhance, encode) on a synthetic dark clip with audio (or, with --pan_image, a slow
pan and zoom over a real low-light image, its own noise the only noise), median of `--repeats` runs
after a warm-up, in turns with two floors and the frame-dump route. The floors run streaming's own pipeline (decoder
and encoder threads) with no network: a plain transcode of the clip (its decoded frames encoded unchanged), and the
same handing the encoder the enhanced frames, made beforehand, in place of the decoded ones. The frame-dump route is
what the authors' code implies: every frame to a JPEG, their image script on each JPEG (read, enhance, save), then
the frames re-joined with OpenCV's mp4v (PyAV's mpeg4, the same codec, where OpenCV is missing). Peak memory is the
peak RSS of a fresh process enhancing a short clip and one 10x longer.
Flicker is `brightness_flicker` of the input and of lossless outputs at several `temporal_smoothing` values.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

import inference
import metrics
from clips import FPS, brightness_flicker, decoded, flicker_frames, moving_frames, write_clip
from files import BadInputError, read_image, to_uint8
from model import EnhanceNet, load_enhance_net
from video import BatchEnhancer, FrameEnhancer, enhance_video, transcode

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"
LOL = SHARED / "data" / "test_data" / "LOL" / "low"
SMOOTHING = (0.0, 0.5, 0.8, 0.9)


def time_routes(model, clip: Path, work: Path, repeats: int,
                batch_size: int) -> tuple[float, float, float, dict[str, float]]:
    """Median wall seconds of `enhance_video` (decode + enhance + encode), of a plain transcode of the same clip
    (the floor), of the same transcode encoding the enhanced frames instead (the floor on what the encoder is given:
    brighter frames with their noise lifted take libx264 longer) and of each frame-dump stage.

    The floors run video.py's own pipeline (`transcode`), its decoder and encoder threads, with no network: the
    decoded frames unchanged, or replaced by the enhanced ones, made beforehand. One warm-up run first; then the
    routes alternate, so all see the same load on a shared machine.
    """
    enhanced = enhanced_frames(model, clip, batch_size)
    streaming, transcode_seconds, enhanced_seconds, stages = [], [], [], []
    for i in range(repeats + 1):
        report = enhance_video(model, clip, work / clip.name, device=torch.device("cpu"), batch_size=batch_size,
                               progress=False)
        plain = transcode(clip, work / f"plain_{clip.name}", lambda frames: frames, batch_size=batch_size,
                          progress=False)
        plain_enhanced = transcode(clip, work / f"plain_enhanced_{clip.name}", replaying(enhanced),
                                   batch_size=batch_size, progress=False)
        if i:
            streaming.append(report.seconds)
            transcode_seconds.append(plain.seconds)
            enhanced_seconds.append(plain_enhanced.seconds)
            stages.append(time_frame_dump(model, clip, work))
    return (statistics.median(streaming), statistics.median(transcode_seconds), statistics.median(enhanced_seconds),
            {k: statistics.median(s[k] for s in stages) for k in stages[0]})


def enhanced_frames(model, clip: Path, batch_size: int) -> list[np.ndarray]:
    """The frames `enhance_video` gives the encoder for `clip`: decoded to RGB as it decodes them and enhanced by
    its FrameEnhancer, in display order."""
    frames, enhance = decoded(clip), FrameEnhancer(model, torch.device("cpu"))
    return [rgb for start in range(0, len(frames), batch_size)
            for rgb in enhance(np.stack(frames[start:start + batch_size]))]


def replaying(frames: list[np.ndarray]) -> BatchEnhancer:
    """For `transcode`: each batch of decoded frames replaced by the next of `frames`, as many."""
    remaining = iter(frames)
    return lambda batch: np.stack([next(remaining) for _ in batch])


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
        with Image.open(path) as image:
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        enhanced = to_uint8(model(x)[0][0]).permute(1, 2, 0).numpy()
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
    with Image.open(paths[0]) as first:
        size = first.size
    if cv2 is not None:
        writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        for path in paths:
            writer.write(cv2.imread(str(path)))
        writer.release()
        return
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for path in paths:
            with Image.open(path) as image:
                out.mux(stream.encode(av.VideoFrame.from_image(image.convert("RGB"))))
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
                             "(default: 2; 0 skips it)")
    parser.add_argument("--flicker_frames", type=int, default=48,
                        help="frames per flicker clip, 320x180 (default: 48; 0 skips flicker)")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "sgz_official_epoch99.pth",
                        help="EnhanceNet weights (default: the authors' release in ../shared); without them throughput "
                             "runs on a random EnhanceNet (same cost) and flicker is skipped")
    parser.add_argument("--images", type=Path, nargs="+", default=[LOL / n for n in ("1.png", "111.png", "179.png")],
                        help="low-light images the flicker clips are made from (default: LOL low/1, 111, 179 in "
                             "../shared)")
    parser.add_argument("--pan_image", type=Path,
                        help="time throughput and memory on a slow pan and zoom over this low-light image "
                             "(clips.flicker_frames' 'pan') rather than the synthetic dark clip (default: synthetic)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default: 1: on 2 CPUs the decoder and encoder threads need the "
                             "rest)")
    args = parser.parse_args(argv)
    if args.memory_seconds < 0 or args.flicker_frames < 0:
        parser.error("--memory_seconds and --flicker_frames take 0 (skip) or more")
    if args.pan_image and not args.pan_image.is_file():
        parser.error(f"--pan_image {args.pan_image}: no such file")
    try:
        pan = to_uint8(read_image(args.pan_image)) if args.pan_image else None
    except BadInputError as e:
        parser.error(f"--pan_image {e}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args, pan)
    finally:
        torch.set_num_threads(threads)


def clip_frames(pan: np.ndarray | None, width: int, height: int, n: int):
    """The `n` frames of a throughput or memory clip: the synthetic dark scene, or a pan over the uint8 RGB image
    `pan`."""
    return moving_frames(width, height, n) if pan is None else flicker_frames(pan, "pan", n, width, height)


def run(args: argparse.Namespace, pan: np.ndarray | None = None) -> None:
    """The tables; `pan`: --pan_image's pixels, which the throughput and memory clips pan over."""
    torch.manual_seed(0)
    model = load_enhance_net(args.weights) if args.weights.is_file() else EnhanceNet().eval()
    inference.settle_for_streaming()  # as test.py runs videos
    cpu = metrics.cpu_name()
    print(f"machine: {cpu}, {torch.get_num_threads()} torch threads, PyAV {av.__version__} "
          f"(FFmpeg {av.ffmpeg_version_info}), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("| clip | frames | streaming fps | x real time | plain transcode fps (floor) | streaming / floor "
              "| transcode encoding the enhanced frames fps | streaming / that | frame-dump fps "
              "| dump JPEG / image script / re-join (s) |")
        print("| --- " * 10 + "|")
        label = f", pan over {args.pan_image.name}" if pan is not None else ""
        for i, size in enumerate(args.sizes):
            width, height = map(int, size.split("x"))
            n = max(2, round(args.seconds[min(i, len(args.seconds) - 1)] * FPS))
            clip = write_clip(work / f"clip_{size}.mp4", clip_frames(pan, width, height, n), audio="aac")
            (work / size).mkdir()
            seconds, floor, enhanced_floor, stages = time_routes(model, clip, work / size, args.repeats,
                                                                 args.batch_size)
            print(f"| {size}, {n / FPS:g} s{label} | {n} | {n / seconds:.1f} | {n / FPS / seconds:.2f} | "
                  f"{n / floor:.1f} | {floor / seconds:.2f}x | {n / enhanced_floor:.1f} | "
                  f"{enhanced_floor / seconds:.2f}x | {n / sum(stages.values()):.1f} | "
                  f"{' / '.join(f'{s:.1f}' for s in stages.values())} |")
        if args.memory_seconds:
            width, height = map(int, args.sizes[0].split("x"))
            peaks = []
            for factor in (1, 10):
                n = max(2, round(args.memory_seconds * factor * FPS))
                clip = write_clip(work / f"memory_{n}.mp4", clip_frames(pan, width, height, n), audio="aac")
                peaks.append(peak_rss_mib(clip, work))
            print(f"peak RSS at {args.sizes[0]}: {peaks[0]:.0f} MiB for {args.memory_seconds:g} s, "
                  f"{peaks[1]:.0f} MiB for {10 * args.memory_seconds:g} s ({100 * (peaks[1] / peaks[0] - 1):+.1f}%)")
        if not args.flicker_frames:
            return
        images = [path for path in args.images if path.is_file()]
        if not (args.weights.is_file() and images):
            print(f"flicker: skipped (needs --weights {args.weights} and --images)")
            return
        print(f"\nflicker (mean |change of mean brightness| per frame, 0-255), 320x180, {args.flicker_frames} frames")
        print("| clip | input | " + " | ".join(f"alpha {a:g}" for a in SMOOTHING) + " |")
        print("| --- " * (len(SMOOTHING) + 2) + "|")
        for path in images:
            for kind, row in flicker_table(model, to_uint8(read_image(path)), args.flicker_frames, work).items():
                print(f"| {kind}, {path.name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")

if __name__ == "__main__":
    main()
