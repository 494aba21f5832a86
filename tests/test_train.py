"""train.py on the repo's own sample images at 32x32: it learns, resumes exactly, checkpoints atomically in the
authors' format, logs to TensorBoard, stops on NaN, runs under torchrun, and reports user errors in one line."""
import json
import os
import signal
import subprocess
import sys
import urllib.error

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import segmentation
import train
from conftest import ROOT
from loss import SGZLoss
from model import EnhanceNet, load_enhance_net

SAMPLES = ROOT / "data" / "test_data" / "samples"  # 4 images: 2 steps per epoch at batch 2
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def argv(folder, *extra) -> list[str]:
    return ["--lowlight_images_path", str(SAMPLES), "--image_size", "32", "--train_batch_size", "2",
            "--num_workers", "0", "--lr", "1e-3", "--device", "cpu", "--snapshots_folder", str(folder), *extra]


def run(folder, *extra) -> list[float]:
    return train.train(train.build_parser().parse_args(argv(folder, "--sem_weight", "0", *extra)))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def error_lines(stderr: str) -> list[str]:
    """stderr without tqdm's progress bars."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 2-epoch run: its folder and per-epoch mean losses."""
    folder = tmp_path_factory.mktemp("straight")
    return folder, run(folder, "--num_epochs", "2")


def test_a_short_run_lowers_the_total_loss(tmp_path):
    means = run(tmp_path, "--num_epochs", "4")
    assert len(means) == 4 and means[-1] < means[0]


def test_stopping_after_epoch_1_and_resuming_gives_the_straight_run_weights(straight, tmp_path):
    run(tmp_path, "--num_epochs", "1")
    assert load(tmp_path / "last.pth")["epoch"] == 1
    run(tmp_path, "--num_epochs", "2", "--resume", str(tmp_path / "last.pth"))
    assert_same_weights(load(tmp_path / "Epoch1.pth"), load(straight[0] / "Epoch1.pth"))
    resumed, direct = load(tmp_path / "last.pth"), load(straight[0] / "last.pth")
    assert (resumed["epoch"], resumed["step"]) == (direct["epoch"], direct["step"]) == (2, 4)
    for a, b in zip(resumed["optimizer"]["state"].values(), direct["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq"))


def stop_with_ctrl_c_at_step(monkeypatch, folder, step: int, *flags) -> dict:
    """Run with Ctrl-C pressed during `step` (1-based), as train.py is stopped by hand; returns last.pth."""
    calls = []
    forward = SGZLoss.forward

    def interrupting(self, *a):
        calls.append(1)
        if len(calls) == step:
            signal.raise_signal(signal.SIGINT)
        return forward(self, *a)

    monkeypatch.setattr(SGZLoss, "forward", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run(folder, "--num_epochs", "2", *flags)
    monkeypatch.undo()
    return load(folder / "last.pth")


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(straight, tmp_path, monkeypatch):
    stopped = stop_with_ctrl_c_at_step(monkeypatch, tmp_path, 3)
    assert (stopped["epoch"], stopped["batch"], stopped["step"]) == (1, 1, 3)
    run(tmp_path, "--num_epochs", "2", "--resume", str(tmp_path / "last.pth"))
    assert_same_weights(load(tmp_path / "Epoch1.pth"), load(straight[0] / "Epoch1.pth"))


def test_resume_from_another_folder_restores_the_runs_settings_and_equals_the_straight_run(straight, tmp_path,
                                                                                             monkeypatch):
    (tmp_path / "start").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "start")  # relative paths, as a user types them
    flags = argv("run", "--sem_weight", "0", "--num_epochs", "1")
    flags[1] = os.path.relpath(SAMPLES, tmp_path / "start")
    train.main(flags)
    monkeypatch.chdir(tmp_path / "elsewhere")
    train.main(["--resume", "../start/run/last.pth", "--num_epochs", "2"])  # every other setting from the run
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == []
    assert_same_weights(load(tmp_path / "start" / "run" / "Epoch1.pth"), load(straight[0] / "Epoch1.pth"))
    assert json.loads((tmp_path / "start" / "run" / "args.json").read_text())["lowlight_images_path"] == str(SAMPLES)


def test_a_flag_given_again_on_resume_wins_over_the_saved_one(straight, monkeypatch):
    args = train.parse_args(["--resume", str(straight[0] / "last.pth"), "--lr", "5e-4"])
    assert (args.lr, args.image_size, args.num_epochs, args.sem_weight) == (5e-4, 32, 2, 0)
    run_ = train.build(args, 0, 1, torch.device("cpu"))
    train.resume(run_, args.resume)
    assert [group["lr"] for group in run_.optimizer.param_groups] == [5e-4]


@pytest.mark.parametrize("change, refused", [(["--train_batch_size", "1"], "--train_batch_size 1"),
                                             (["--image_size", "16"], "--image_size 16"),
                                             (["--seed", "1"], "--seed 1"), ([], "processes (torchrun) 2")])
def test_resuming_mid_epoch_with_another_epoch_shape_is_refused_on_one_line(tmp_path, monkeypatch, capsys, change,
                                                                            refused):
    stop_with_ctrl_c_at_step(monkeypatch, tmp_path, 1)
    capsys.readouterr()
    if not change:
        monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node=2 sets it
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", str(tmp_path / "last.pth"), *change])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f": error: {refused}: " in last and "stopped in mid-epoch with " in last, last


def test_checkpoints_are_whole_files_in_the_authors_format_beside_the_resolved_args(straight):
    folder = straight[0]
    assert sorted(p.name for p in folder.iterdir()) == ["Epoch0.pth", "Epoch1.pth", "args.json", "last.pth",
                                                        "tensorboard"]
    weights = load(folder / "Epoch1.pth")
    assert weights.keys() == EnhanceNet().state_dict().keys()
    net = load_enhance_net(folder / "Epoch1.pth", scale_factor=12)
    assert_same_weights(net.state_dict(), weights)
    assert load(folder / "last.pth").keys() >= {"model", "optimizer", "epoch", "step", "batch", "rng", "args"}
    args = json.loads((folder / "args.json").read_text())
    assert args["sem_weight"] == 0 and args["world_size"] == 1 and args["lr"] == 1e-3 and args["image_size"] == 32
    assert args["amp"] is False and args["init"] == "code"


@pytest.mark.parametrize("init, weight_std, zero_biases", [("code", 0.18, False), ("paper", 0.02, True)])
def test_init_code_is_pytorch_default_as_the_authors_and_paper_is_normal_002(tmp_path, init, weight_std,
                                                                            zero_biases):
    """The authors' train.py never calls its weights_init: their EFE starts from PyTorch's default init."""
    run(tmp_path, "--num_epochs", "1", "--lr", "0", "--init", init)
    weights = load(tmp_path / "Epoch0.pth")
    assert weights["e_conv1.depth_conv.weight"].std().item() == pytest.approx(weight_std, rel=0.2)
    biases = [v for k, v in weights.items() if k.endswith(".bias")]
    assert all(b.eq(0).all() for b in biases) == zero_biases


def test_amp_needs_cuda_and_is_off_by_default(tmp_path, capsys):
    assert not train.build_parser().parse_args([]).amp
    with pytest.raises(SystemExit) as stop:
        train.main(argv(tmp_path, "--sem_weight", "0", "--amp"))
    assert stop.value.code == 1
    assert error_lines(capsys.readouterr().err) == ["error: --amp: float16 mixed precision needs a CUDA device, "
                                                    "not cpu; leave it off"]


def test_dry_run_takes_one_step_and_writes_nothing(tmp_path, capsys):
    losses = run(tmp_path / "run", "--dry_run")
    assert len(losses) == 1 and losses[0] > 0
    assert not (tmp_path / "run").exists()
    assert "dry run: one step on 2 images of 32x32" in capsys.readouterr().out


def test_a_killed_runs_half_written_checkpoint_is_removed_by_the_next_run(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f".last.pth.{'ab' * 16}.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / f".Epoch0.pth.{'cd' * 16}.tmp").write_bytes(b"half the weights")
    run(tmp_path, "--num_epochs", "1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Epoch0.pth", "args.json", "last.pth", "tensorboard"]


def test_tensorboard_gets_every_loss_term_lr_grad_norm_and_images(tmp_path):
    args = train.build_parser().parse_args(argv(tmp_path, "--num_epochs", "1", "--display_iter", "1",
                                                "--seg_weights", "none"))
    train.train(args)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {f"loss/{t}" for t in ("spa", "col", "exp", "tv", "sem", "total")} | {"lr", "grad_norm"} <= scalars
    assert {"enhanced", "x_r"} <= set(events.Tags()["images"])
    assert len(events.Scalars("loss/total")) == 2


def all_finite(state: dict) -> bool:
    return train.first_non_finite(state) is None and all(torch.isfinite(t).all() for t in state["model"].values())


def test_an_all_black_training_image_keeps_every_checkpoint_finite(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.png").write_bytes((SAMPLES / "coffee.png").read_bytes())
    Image.new("RGB", (64, 64)).save(tmp_path / "data" / "black.png")  # enhanced = input there, whatever x_r is
    run(tmp_path / "run", "--lowlight_images_path", str(tmp_path / "data"), "--image_size", "64",
        "--num_epochs", "3")
    assert all_finite(load(tmp_path / "run" / "last.pth"))
    for epoch in range(3):
        assert all(torch.isfinite(t).all() for t in load(tmp_path / "run" / f"Epoch{epoch}.pth").values())


# At the third step the loss turns NaN, or stays finite with a NaN gradient (sqrt at 0: value 0, gradient NaN).
BREAKS = {"loss became nan": lambda total, enhanced: total * float("nan"),
          "gradient norm became nan": lambda total, enhanced: total + (0 * enhanced.sum()).sqrt()}


@pytest.mark.parametrize("message", BREAKS)
def test_a_nan_loss_or_gradient_stops_with_one_line_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, capsys, message):
    forward = SGZLoss.forward

    def break_third_step(self, low, enhanced, x_r):
        terms = forward(self, low, enhanced, x_r)
        self.calls += 1
        if self.calls == 3:
            terms["total"] = BREAKS[message](terms["total"], enhanced)
        return terms

    monkeypatch.setattr(SGZLoss, "calls", 0, raising=False)
    monkeypatch.setattr(SGZLoss, "forward", break_third_step)
    with pytest.raises(SystemExit) as e:
        train.main(argv(tmp_path, "--sem_weight", "0", "--num_epochs", "3"))
    assert e.value.code == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"{message} at epoch 2, step 3" in err[0] and "last.pth" in err[0]
    kept = load(tmp_path / "last.pth")
    assert kept["step"] == 2 and all_finite(kept)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["Epoch0.pth", "last.pth"]


def test_weights_holding_nan_are_never_saved(tmp_path):
    run_ = train.build(train.build_parser().parse_args(argv(tmp_path, "--sem_weight", "0")), 0, 1,
                       torch.device("cpu"))
    with torch.no_grad():
        run_.model.e_conv7.point_conv.bias[1] = float("inf")
    with pytest.raises(train.TrainingDiverged, match="e_conv7.point_conv.bias holds NaN or Inf at epoch 1, step 0"):
        train.save(run_, 0)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_user_errors_are_one_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    missing = subprocess.run([sys.executable, "train.py", "--lowlight_images_path", str(tmp_path / "nowhere")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such folder "
                                                   "(give the training images with --lowlight_images_path)"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        train.main(argv(tmp_path / "out", "--lowlight_images_path", str(tmp_path / "empty")))
    assert error_lines(capsys.readouterr().err) == [
        f"error: {tmp_path / 'empty'}: no readable images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp) in this folder "
        "or below"]

    def offline():
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(segmentation, "imagenet_state_dict", offline)
    with pytest.raises(SystemExit):
        train.main(argv(tmp_path / "out"))
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "--seg_weights PATH" in err[0] and "--seg_weights none" in err[0]


@pytest.mark.parametrize("flags, message", [
    (["--snapshot_iter", "0"], "--snapshot_iter 0: must be at least 1"),
    (["--display_iter", "0"], "--display_iter 0: must be at least 1"),
    (["--train_batch_size", "0"], "--train_batch_size 0: must be at least 1"),
    (["--image_size", "12"], "--image_size 12: must be at least 16 (the code-form exposure loss averages 16x16"),
    (["--device", "nonsense"], "--device nonsense: not a device (cpu, cuda, cuda:1, ...)"),
    (["--device", f"cuda:{torch.cuda.device_count()}"], "no such CUDA device here; use --device cpu"),
])
def test_a_bad_flag_is_one_line_with_exit_status_2_before_any_work(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        train.main(argv(tmp_path / "out", "--sem_weight", "0", *flags))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_resuming_from_bare_weights_or_a_missing_file_is_one_line(tmp_path, capsys):
    torch.save(EnhanceNet().state_dict(), tmp_path / "Epoch99.pth")
    with pytest.raises(SystemExit):
        train.main(argv(tmp_path / "out", "--sem_weight", "0", "--resume", str(tmp_path / "Epoch99.pth")))
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "not a train.py last.pth (no model, optimizer" in err[0] and "--load_pretrain" in err[0]
    with pytest.raises(SystemExit):
        train.main(argv(tmp_path / "out", "--sem_weight", "0", "--resume", str(tmp_path / "absent.pth")))
    assert error_lines(capsys.readouterr().err) == [f"error: {tmp_path / 'absent.pth'}: no such weight file"]


def test_torchrun_trains_on_two_cpu_processes_with_gloo(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *argv(tmp_path, "--sem_weight", "0", "--num_epochs", "1")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "args.json").read_text())["world_size"] == 2
    assert load(tmp_path / "last.pth")["step"] == 1  # 4 images over 2 processes at batch 2: one step each
