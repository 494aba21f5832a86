"""video.py: streaming video enhancement keeps frames, timing and audio, survives bad input, and smooths on request."""
import io
import re
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from av.video.reformatter import Interpolation

import bench_video
import video
from clips import FPS, brightness_flicker, decoded, flicker_frames, moving_frames, write_clip
from conftest import SHARED, cut_inside_packet, nth_packet, requires_shared
from model import EnhanceNet, init_weights, load_enhance_net, recurrent_enhance
from files import to_uint8
from video import YUV_MATRICES, FrameEnhancer, VideoError, encoder_frame, enhance_video, transcode

N = 24  # frames per clip: 0.8 s at 30 fps


@pytest.fixture(scope="module")
def model() -> EnhanceNet:
    torch.manual_seed(0)
    return EnhanceNet().eval()


def enhance(model, src: Path, **kwargs):
    return enhance_video(model, src, src.parent / "out" / src.name, device=torch.device("cpu"), batch_size=4,
                         progress=False, **kwargs)


def probe(path: Path) -> dict:
    """What a player sees: size, rate, frame times and ends (s), and the audio packets (codec, bytes, time)."""
    frames, audio = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux():
            if packet.stream.type == "video":
                frames += packet.decode()
            elif packet.size:
                audio.append((packet.stream.codec_context.codec.canonical_name, bytes(packet),
                              float(packet.pts * packet.time_base)))
        return {"size": (stream.width, stream.height), "rate": stream.average_rate,
                "times": [float(f.pts * f.time_base) for f in frames],
                "end": float((frames[-1].pts + frames[-1].duration) * frames[-1].time_base), "audio": audio,
                "rgb": np.stack([f.to_ndarray(format="rgb24") for f in frames])}


@pytest.mark.parametrize("name, codec, audio, written", [
    ("clip.mp4", "libx264", "aac", "clip.mp4"),
    ("clip.mov", "libx264", "aac", "clip.mov"),
    ("clip.mkv", "libx264", None, "clip.mkv"),
    ("clip.webm", "libvpx-vp9", "libopus", "clip.mkv"),
    ("clip.avi", "libx264", "mp3", "clip.mkv"),
])
def test_output_keeps_frame_count_fps_size_duration_and_audio(tmp_path, model, name, codec, audio, written):
    src = write_clip(tmp_path / name, moving_frames(96, 64, N), codec=codec, audio=audio)
    report = enhance(model, src)
    assert report.output == tmp_path / "out" / written and report.error is None
    assert report.frames == N and report.duration == pytest.approx(N / FPS)
    before, after = probe(src), probe(report.output)
    assert len(after["times"]) == N
    assert after["size"] == before["size"] == (96, 64)
    assert after["rate"] == FPS
    assert after["times"] == pytest.approx([i / FPS for i in range(N)], abs=1e-3)  # Matroska counts in ms
    assert after["end"] == pytest.approx(N / FPS, abs=1e-3)
    assert len(after["audio"]) == len(before["audio"]) > 0 or audio is None
    for (codec_out, data_out, time_out), (codec_in, data_in, time_in) in zip(after["audio"], before["audio"]):
        assert (codec_out, data_out) == (codec_in, data_in)
        assert time_out == pytest.approx(time_in, abs=1e-3)
    assert not (after["rgb"] == before["rgb"]).all()


def test_variable_frame_timestamps_are_kept(tmp_path, model):
    pts = [0, 30, 100, 110, 250, 260, 270, 400]
    src = write_clip(tmp_path / "vfr.mkv", moving_frames(64, 48, len(pts)), pts=pts)
    before, after = probe(src), probe(enhance(model, src).output)
    assert after["times"] == before["times"] == [p / 1000 for p in pts]


def test_odd_size_is_kept_exactly(tmp_path, model):
    src = write_clip(tmp_path / "odd.mp4", moving_frames(95, 63, 6))
    assert probe(enhance(model, src).output)["size"] == (95, 63)


def test_display_rotation_is_kept(tmp_path, model):
    src = write_clip(tmp_path / "phone.mp4", moving_frames(64, 48, 4), rotation=90)
    with av.open(str(enhance(model, src).output)) as container:
        assert next(container.decode(video=0)).rotation == 90


def test_smoothing_off_equals_per_frame_enhancenet(tmp_path, model):
    frames = np.stack(list(moving_frames(96, 64, 10)))
    src = write_clip(tmp_path / "lossless.mp4", frames, codec="libx264rgb")
    out = probe(enhance(model, src, crf=0).output)["rgb"].astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)[0]
    assert np.abs(out - 255 * expected.permute(0, 2, 3, 1).numpy()).max() <= 0.5 + 1e-3


class HalfLevels(torch.nn.Module):
    """Returns every level k + 1/2 of 0..254 (in float32, so k + 1/2 exactly once multiplied by 255)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = ((torch.arange(255, dtype=torch.float64) + 0.5) / 255).float()
        return levels.expand(*x.shape[:-1], 255).clone(), x


def test_frames_are_rounded_as_test_py_writes_images():
    frames = np.zeros((2, 4, 255, 3), np.uint8)
    got = FrameEnhancer(HalfLevels(), torch.device("cpu"))(frames)
    levels = HalfLevels()(torch.zeros(1, 3, 4, 255))[0][0]
    assert np.array_equal(got[0], to_uint8(levels).permute(1, 2, 0).numpy()) and np.array_equal(got[1], got[0])
    assert got[0, 0, 2, 0] == 3  # 2.5 goes up, as torchvision's save_image rounds, not to the even 2


@requires_shared
def test_smoothing_lowers_flicker_of_a_pan_across_a_night_scene(tmp_path):
    weights = load_enhance_net(SHARED / "weights" / "sgz_official_epoch99.pth")
    image = np.asarray(Image.open(SHARED / "data" / "test_data" / "LOL" / "low" / "111.png").convert("RGB"))
    src = write_clip(tmp_path / "pan.mp4", flicker_frames(image, "pan", N, 160, 90), codec="libx264rgb")
    per_frame, smoothed = (brightness_flicker(probe(enhance(weights, src, crf=0, temporal_smoothing=a).output)["rgb"])
                           for a in (0.0, 0.8))
    assert smoothed < 0.85 * per_frame


@pytest.mark.parametrize("option", [{"temporal_smoothing": 1.0}, {"temporal_smoothing": -0.1}, {"crf": 52}])
def test_options_out_of_range_are_refused(tmp_path, model, option):
    src = write_clip(tmp_path / "clip.mp4", moving_frames(64, 48, 2))
    with pytest.raises(ValueError, match=next(iter(option))):
        enhance(model, src, **option)


@pytest.mark.parametrize("name, options", [("cut.mp4", {"movflags": "faststart"}), ("cut.mkv", None),
                                           ("cut.avi", None)])
def test_truncated_file_keeps_decoded_frames_in_a_playable_output(tmp_path, model, name, options):
    src = write_clip(tmp_path / name, moving_frames(96, 64, 2 * N), options=options)
    cut_inside_packet(src, N)
    report = enhance(model, src)
    assert 0 < report.frames < 2 * N
    assert report.error.startswith(f"{src}: ") and "(truncated or damaged)" in report.error
    assert "\n" not in report.error
    times = probe(report.output)["times"]  # each frame at its input time; a B-frame cut off leaves a gap
    assert len(times) == report.frames and times == sorted(times)
    assert max(abs(t * FPS - round(t * FPS)) for t in times) < 1e-3 * FPS


@pytest.mark.parametrize("name", ["cut.avi", "cut.mp4"])
def test_a_packet_cut_short_is_not_decoded(tmp_path, model, name):
    # the file ends halfway through its sixth video packet: decoded, it gave a sixth frame partly made up (.avi) or a
    # failure (.mp4); with frame threads the failure also dropped frames before it (3 of 5 kept, or none)
    src = write_clip(tmp_path / name, moving_frames(96, 64, 2 * N),
                     options={"movflags": "faststart"} if name.endswith(".mp4") else None)  # readable when cut
    data = src.read_bytes()
    packet = cut_inside_packet(src, 5)
    clean = tmp_path / "clean" / name
    clean.parent.mkdir()
    clean.write_bytes(data[:packet.pos])
    whole = enhance(model, clean).frames
    report = enhance(model, src)
    assert whole == 5 and report.frames == whole
    assert report.error.endswith("enhanced up to there (truncated or damaged)") and ";" not in report.error


def test_every_truncated_file_of_a_batch_is_said_to_be_cut(tmp_path, model):
    # FFmpeg's message is the same for each ("File ended prematurely"), and PyAV by default drops a message equal to
    # the one before it: the second file was enhanced as if whole, without a word
    src = write_clip(tmp_path / "cut.mkv", moving_frames(96, 64, 2 * N))
    cut_inside_packet(src, N)
    reports = [enhance(model, src) for _ in range(3)]
    assert all(r.frames == N and "(File ended prematurely)" in r.error for r in reports)


def test_a_small_file_cut_short_is_said_to_be_cut_when_probing_met_its_end(tmp_path, model):
    # opening the file reads it to its end to find the stream's parameters: FFmpeg says so then, not while decoding
    src = write_clip(tmp_path / "cut.mkv", moving_frames(96, 64, 2 * N))
    cut_inside_packet(src, 2)
    report = enhance(model, src)
    assert report.frames == 2 and "(File ended prematurely)" in report.error


requires_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                     reason="needs the ffmpeg command-line tool to make the clip")


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, args)], check=True, timeout=120)


def assert_whole(report, src: Path) -> None:
    """No verdict of damage, every frame the input decodes to, at the input's times, and its audio."""
    before, after = probe(src), probe(report.output)
    assert report.error is None and report.frames == len(before["times"]) == len(after["times"])
    assert after["times"] == pytest.approx(before["times"], abs=1e-3)
    assert [(codec, data) for codec, data, _ in after["audio"]] == [(codec, data) for codec, data, _ in before["audio"]]
    assert [t for _, _, t in after["audio"]] == pytest.approx([t for _, _, t in before["audio"]], abs=1e-3)


@requires_ffmpeg
def test_a_clip_cut_without_re_encoding_is_whole_though_its_edit_list_hides_frames(tmp_path, model):
    write_clip(tmp_path / "in.mp4", moving_frames(64, 48, 3 * FPS), audio="aac")
    ffmpeg("-ss", 1.3, "-i", tmp_path / "in.mp4", "-c", "copy", tmp_path / "cut.mp4")
    with av.open(str(tmp_path / "cut.mp4")) as cut:
        assert cut.streams.video[0].frames > len(list(cut.decode(video=0)))  # pre-roll packets the edit list hides
    assert_whole(enhance(model, tmp_path / "cut.mp4"), tmp_path / "cut.mp4")


@requires_ffmpeg
def test_an_avi_with_a_dropped_frame_is_whole_and_keeps_each_frame_at_its_time(tmp_path, model):
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
           "-t", 1, "-vf", r"select=not(eq(n\,5))", "-fps_mode", "passthrough", "-c:v", "mpeg4", "-c:a", "mp3",
           tmp_path / "drop.avi")
    with av.open(str(tmp_path / "drop.avi")) as clip:
        assert clip.streams.video[0].frames > len(list(clip.decode(video=0)))  # its index counts the dropped one
    assert_whole(enhance(model, tmp_path / "drop.avi"), tmp_path / "drop.avi")


@requires_ffmpeg
def test_an_audio_file_with_cover_art_is_whole(tmp_path, model):
    Image.fromarray(np.asarray(next(moving_frames(64, 48, 1)))).save(tmp_path / "cover.png")
    ffmpeg("-f", "lavfi", "-i", "sine=sample_rate=48000", "-i", tmp_path / "cover.png", "-t", 2, "-map", 0,
           "-map", 1, "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", tmp_path / "song.mp4")
    report = enhance(model, tmp_path / "song.mp4")
    with av.open(str(tmp_path / "song.mp4")) as song:
        audio = [bytes(packet) for packet in song.demux(audio=0) if packet.size]
    assert report.frames == 1 and report.error is None and len(audio) > 80
    assert [data for _, data, _ in probe(report.output)["audio"]] == audio


@requires_ffmpeg
def test_a_picture_size_change_mid_stream_is_scaled_to_the_first_size_with_a_note(tmp_path, model):
    parts = [write_clip(tmp_path / f"{i}.ts", moving_frames(w, h, 6, seed=i)) for i, (w, h) in enumerate([(64, 48),
                                                                                                      (96, 64)])]
    (tmp_path / "cat.ts").write_bytes(b"".join(part.read_bytes() for part in parts))  # cat a.ts b.ts > cat.ts
    ffmpeg("-i", tmp_path / "cat.ts", "-c", "copy", tmp_path / "cat.mkv")
    report = enhance(model, tmp_path / "cat.mkv", crf=0)
    assert report.frames == 12 and report.error is None
    assert report.notes == ["the picture changes to 96x64 at 0.20 s, scaled to 64x48"]
    assert report.summary().endswith("x real time; the picture changes to 96x64 at 0.20 s, scaled to 64x48")
    after = probe(report.output)
    assert after["size"] == (64, 48) and len(after["times"]) == 12
    second = np.stack([np.asarray(Image.fromarray(f).resize((64, 48), Image.BILINEAR)) for f in decoded(parts[1])])
    expected = FrameEnhancer(model, torch.device("cpu"))(second).astype(np.float32)
    assert np.abs(after["rgb"][6:].astype(np.float32) - expected).mean() < 3  # the second part, scaled


def test_of_two_video_streams_the_first_is_enhanced_and_a_note_says_the_other_was_left_out(tmp_path, model):
    with av.open(str(tmp_path / "two.mkv"), "w") as out:
        streams = [out.add_stream("libx264", rate=FPS) for _ in range(2)]
        for stream, (w, h) in zip(streams, [(64, 48), (32, 24)]):
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i, pair in enumerate(zip(moving_frames(64, 48, 4), moving_frames(32, 24, 4))):
            for stream, rgb in zip(streams, pair):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode())
    report = enhance(model, tmp_path / "two.mkv")
    assert report.frames == 4 and report.notes == ["1 more video stream left out (only the first is enhanced)"]
    with av.open(str(report.output)) as written:
        assert [(s.width, s.height) for s in written.streams.video] == [(64, 48)]


def test_damaged_data_gives_a_playable_output_and_one_line(tmp_path, model):
    src = write_clip(tmp_path / "bad.mp4", moving_frames(96, 64, 2 * N), options={"movflags": "faststart"})
    data = bytearray(src.read_bytes())
    data[len(data) // 2:len(data) // 2 + 3000] = np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes()
    src.write_bytes(bytes(data))
    report = enhance(model, src)
    assert 0 < report.frames < 2 * N and len(probe(report.output)["times"]) == report.frames
    assert report.error.startswith(f"{src}: damaged video data at ") and "\n" not in report.error


@pytest.mark.parametrize("name", ["damaged.mp4", "damaged.avi"])
def test_a_damaged_packet_inside_the_file_leaves_one_gap_and_the_rest_is_enhanced(tmp_path, model, name):
    # the decoder fails on the packet and goes on: the video stopped there before, losing the half after it
    src = write_clip(tmp_path / name, moving_frames(96, 64, 2 * N), audio="aac",
                     options={"movflags": "faststart"} if name.endswith(".mp4") else None)
    whole = probe(enhance(model, src).output)
    packet = nth_packet(src, N)
    slot = packet.dts if name.endswith(".avi") else packet.pts  # an AVI's frames take its packets' slots
    start, size, frame = packet.pos, packet.size, round(float(slot * packet.time_base) * FPS)
    data = bytearray(src.read_bytes())
    data[start:start + size] = np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes()
    src.write_bytes(bytes(data))
    report = enhance(model, src)
    assert report.frames == 2 * N - 1
    assert report.error.startswith(f"{src}: damaged video data at ")
    assert report.error.endswith(": 1 packet not decoded, its frame left out, the rest enhanced")
    written = probe(report.output)
    slots = [{round(t * FPS) for t in clip["times"]} for clip in (whole, written)]
    (gap,) = slots[0] - slots[1]
    assert slots[1] < slots[0] and written["audio"] == whole["audio"]
    assert gap == frame


def test_an_audio_packet_with_a_damaged_timestamp_is_left_out_and_said(tmp_path, model):
    # the muxer refuses a packet whose time goes back: the exception ended the whole run with a traceback
    src = write_clip(tmp_path / "clip.mkv", moving_frames(96, 64, 2 * N), audio="aac")
    before = probe(src)
    start = nth_packet(src, 10, "audio").pos
    data = bytearray(src.read_bytes())
    data[start + 1:start + 3] = b"\x00\x05"  # a Matroska block: track number, then its time in its cluster: 5 ms
    src.write_bytes(bytes(data))
    report = enhance(model, src)
    assert report.frames == 2 * N
    assert report.error == f"{src}: 1 audio packet left out (damaged timestamps, out of order)"
    assert len(probe(report.output)["audio"]) == len(before["audio"]) - 1


def test_an_unforeseen_ffmpeg_error_on_the_way_is_one_line_and_writes_nothing(tmp_path, model, monkeypatch):
    src = write_clip(tmp_path / "clip.mp4", moving_frames(64, 48, 12))

    def refuse(rgb, codec):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
    monkeypatch.setattr(video, "encoder_frame", refuse)
    with pytest.raises(VideoError, match=r"clip.mp4: FFmpeg stopped \(Invalid data found when processing input\), "
                                         "nothing written$"):
        enhance(model, src)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_an_audio_stream_whose_codec_is_unknown_is_left_out_and_said(tmp_path, model):
    # a damaged AVI header names no codec FFmpeg knows: PyAV gives the stream no codec context, and copying it raised
    # AttributeError, a traceback that ended the batch
    src = write_clip(tmp_path / "clip.avi", moving_frames(64, 48, 12), audio="aac")
    data = bytearray(src.read_bytes())
    header = data.find(b"strf", data.find(b"auds"))
    data[header + 8:header + 10] = b"\x34\x12"  # the audio format tag (AAC's is 0x00ff)
    src.write_bytes(bytes(data))
    report = enhance(model, src)
    assert report.frames == 12 and report.error == f"{src}: 1 audio stream left out (codec unknown: a damaged header?)"
    assert probe(report.output)["audio"] == []


def test_a_frame_decoded_from_damaged_data_is_kept_and_said(tmp_path, model):
    src = write_clip(tmp_path / "flipped.mp4", moving_frames(96, 64, 2 * N), options={"movflags": "faststart"})
    packet = nth_packet(src, N)
    start, size = packet.pos, packet.size
    data = bytearray(src.read_bytes())
    data[start + size // 2:start + size] = bytes(size - size // 2)  # its second half zeroed: FFmpeg conceals it
    src.write_bytes(bytes(data))
    with av.open(str(src)) as container:
        flagged = [round(float(frame.time), 2) for frame in container.decode(video=0) if frame.is_corrupt]
    assert flagged  # FFmpeg decodes the frame, concealing the damage, and flags it
    report = enhance(model, src)
    assert report.frames == 2 * N
    assert report.error == (f"{src}: {len(flagged)} frame{'s' * (len(flagged) > 1)} decoded from damaged data, the "
                            f"first at {flagged[0]:.2f} s (concealed by FFmpeg's decoder, kept)")


def test_truncated_mp4_without_its_index_raises_video_error(tmp_path, model):
    src = write_clip(tmp_path / "cut.mp4", moving_frames(64, 48, N))  # moov (the index) is written last
    src.write_bytes(src.read_bytes()[:-2000])
    with pytest.raises(VideoError, match="cut.mp4: not a readable video"):
        enhance(model, src)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_audio_only_file_raises_video_error_and_writes_nothing(tmp_path, model):
    src = tmp_path / "song.mp4"
    with av.open(str(src), "w") as out:
        sound = out.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode())
    with pytest.raises(VideoError, match="song.mp4: has no video stream"):
        enhance(model, src)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, content", [("notes.mp4", b"not a video\n"), ("empty.mkv", b"")])
def test_non_video_file_raises_video_error(tmp_path, model, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    with pytest.raises(VideoError, match=f"{name}: not a readable video"):
        enhance(model, src)


def test_undecodable_video_codec_raises_video_error(tmp_path, model):
    src = write_clip(tmp_path / "clip.mkv", moving_frames(64, 48, 4))
    src.write_bytes(src.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))  # a codec FFmpeg lacks
    with pytest.raises(VideoError, match="clip.mkv: its video codec cannot be decoded"):
        enhance(model, src)


def test_output_never_overwrites_the_input(tmp_path, model):
    src = write_clip(tmp_path / "clip.mp4", moving_frames(64, 48, 4))
    data = src.read_bytes()
    with pytest.raises(VideoError, match="overwrite the input"):
        enhance_video(model, src, src, device=torch.device("cpu"), progress=False)
    assert src.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_report_summary_names_frames_fps_and_real_time_factor(tmp_path, model):
    report = enhance(model, write_clip(tmp_path / "clip.mp4", moving_frames(64, 48, 6)))
    assert report.frames == 6 and report.duration == pytest.approx(6 / FPS)
    match = re.fullmatch(r".*clip\.mp4: 6 frames in ([\d.]+) s, ([\d.]+) fps, ([\d.]+)x real time", report.summary())
    seconds, fps, realtime = map(float, match.groups())
    assert seconds == pytest.approx(report.seconds, abs=0.05)
    assert fps * report.seconds == pytest.approx(6, rel=0.01)
    assert realtime * report.seconds == pytest.approx(6 / FPS, rel=0.01)


def test_bench_video_runs_tiny(capsys):
    bench_video.main(["--sizes", "64x48", "--seconds", "0.2", "--repeats", "1", "--memory_seconds", "0.1",
                      "--flicker_frames", "4", "--images", str(SHARED / "data/test_data/LOL/low/1.png"),
                      "--weights", str(SHARED / "weights/sgz_official_epoch99.pth")])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 64x48, 0.2 s | 6 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[4]) > 0 and cells[5].endswith("x")  # the plain transcode's fps, and streaming over it
    assert float(cells[6]) > 0 and cells[7].endswith("x")  # the same, encoding the enhanced frames
    assert "peak RSS at 64x48" in out
    assert ("| light, 1.png | " in out) == (SHARED / "weights").is_dir()


@requires_shared
def test_bench_video_times_a_pan_over_a_real_image(capsys, tmp_path):
    image = SHARED / "data/test_data/LOL/low/1.png"
    pixels = np.asarray(Image.open(image).convert("RGB"))
    frames = list(bench_video.clip_frames(pixels, 64, 48, 3))
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3 and not np.array_equal(frames[0], frames[2])
    assert all(np.array_equal(a, b) for a, b in zip(frames, flicker_frames(pixels, "pan", 3, 64, 48)))
    bench_video.main(["--sizes", "64x48", "--seconds", "0.1", "--repeats", "1", "--memory_seconds", "0",
                      "--flicker_frames", "0", "--pan_image", str(image)])
    assert "| 64x48, 0.1 s, pan over 1.png | 3 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_video.main(["--pan_image", str(tmp_path / "missing.png")])
    assert f"--pan_image {tmp_path / 'missing.png'}: no such file" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        bench_video.main(["--pan_image", str(tmp_path / "bad.png")])
    err = capsys.readouterr().err
    assert f"--pan_image {tmp_path / 'bad.png'}: not a readable image" in err and "Traceback" not in err


def test_the_bench_floor_encodes_the_frames_streaming_encodes(tmp_path, model):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(64, 48, 11))
    streamed = decoded(enhance(model, clip, crf=0).output)  # lossless RGB: exactly the frames streaming encoded
    expected = bench_video.enhanced_frames(model, clip, batch_size=4)
    assert len(expected) == len(streamed) == 11
    assert all(np.array_equal(a, b) for a, b in zip(expected, streamed))
    floor = transcode(clip, tmp_path / "floor.mkv", bench_video.replaying(expected), batch_size=4, crf=0,
                      progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(decoded(floor.output), streamed))


def test_bench_video_skips_memory_and_flicker_at_zero(capsys):
    bench_video.main(["--sizes", "64x48", "--seconds", "0.1", "--repeats", "1", "--memory_seconds", "0",
                      "--flicker_frames", "0"])
    out = capsys.readouterr().out
    assert "| 64x48, 0.1 s | 3 |" in out and "peak RSS" not in out and "flicker" not in out


def test_smoothing_the_low_resolution_factor_equals_smoothing_full_resolution_x_r():
    torch.manual_seed(0)
    model = EnhanceNet().eval()
    init_weights(model, std=0.3)
    ramp = np.linspace(0, 1, 60, dtype=np.float32)[None, :, None] * np.ones((36, 1, 3), np.float32)
    frames = np.stack([(ramp[:, ::1 - 2 * (t % 2)] * 40 * (t + 1)).astype(np.uint8) for t in range(4)])
    smoothed = FrameEnhancer(model, torch.device("cpu"), temporal_smoothing=0.7)(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        x_r = model.enhancement_factor(x)
        for t in range(1, len(x_r)):
            x_r[t] = 0.7 * x_r[t - 1] + 0.3 * x_r[t]
        expected = recurrent_enhance(x, x_r).mul(255).add(0.5).clamp(0, 255).floor().permute(0, 2, 3, 1).numpy()
    assert np.abs(smoothed.astype(np.int16) - expected.astype(np.int16)).max() <= 1


SAMPLE = Path(__file__).resolve().parents[1] / "data" / "test_data" / "samples" / "coffee.png"  # shipped, 341x512


def encoder(pix_fmt: str, rgb: np.ndarray, colorspace: int) -> av.video.codeccontext.VideoCodecContext:
    codec = av.CodecContext.create("libx264", "w")
    codec.height, codec.width = rgb.shape[:2]
    codec.pix_fmt, codec.colorspace = pix_fmt, colorspace
    return codec


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].astype(int) for p in frame.planes]


@pytest.mark.parametrize("colorspace", sorted(YUV_MATRICES))
@pytest.mark.parametrize("pix_fmt, size", [("yuv420p", (340, 512)), ("yuv444p", (341, 511))])
def test_frames_reach_the_encoder_converted_as_swscale_converts_them_to_within_one_level(colorspace, pix_fmt, size):
    rgb = np.ascontiguousarray(np.asarray(Image.open(SAMPLE).convert("RGB"))[:size[0], :size[1]])
    frame = encoder_frame(rgb, encoder(pix_fmt, rgb, colorspace))
    assert frame.format.name == pix_fmt and frame.colorspace == colorspace  # the C kernel converted it
    exact = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format=pix_fmt, dst_colorspace=colorspace, interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND)
    for got, expected in zip(planes(frame), planes(exact)):
        assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.02


def test_the_encoder_takes_the_converted_planes_unchanged():
    rgb = np.ascontiguousarray(np.asarray(Image.open(SAMPLE).convert("RGB"))[:64, :96])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"qp": "0"})  # lossless
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        frame = encoder_frame(rgb, stream.codec_context)
        frame.pts, sent = 0, planes(frame)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as decoded_clip:
        assert all(np.array_equal(a, b) for a, b in zip(planes(next(decoded_clip.decode(video=0))), sent))


@pytest.mark.parametrize("pix_fmt, size, colorspace", [("rgb24", (64, 96), 2), ("yuv420p", (63, 96), 2),
                                                       ("yuv420p", (64, 96), 8)])  # 8: YCgCo, not a matrix here
def test_frames_the_kernel_does_not_convert_go_to_swscale_as_rgb(pix_fmt, size, colorspace):
    rgb = np.zeros((*size, 3), np.uint8)
    frame = encoder_frame(rgb, encoder(pix_fmt, rgb, colorspace))
    assert frame.format.name == "rgb24" and frame.colorspace == colorspace and np.array_equal(frame.to_ndarray(), rgb)
