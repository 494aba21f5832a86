"""Train SGZ's enhancement network (EFE) with the zero-reference losses, no pairs and no labels (paper §3.4).

Usage:
    python train.py --lowlight_images_path data/train_data/                  # the authors' settings
    python train.py --lowlight_images_path data/train_data/ --seg_weights none  # no ImageNet weights at hand
    python train.py --resume weight/last.pth                                   # go on exactly where it stopped
    torchrun --nproc_per_node=2 train.py --lowlight_images_path data/train_data/  # DistributedDataParallel

--snapshots_folder receives EpochN.pth (EFE weights in the authors' state-dict format, which test.py loads),
last.pth (model, optimizer, epoch, step, RNG state: what --resume needs), args.json and tensorboard/.
"""
import argparse
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dataloader import DataError, LowLightDataset
from loss import LOSS_FORMS, WEIGHTS, SGZLoss
from files import extract_state_dict, read_checkpoint, remove_temporaries, write_atomically
from inference import pick_device, usable_cores
from model import EnhanceNet, init_weights, load_enhance_net
from segmentation import BN_MODES, USS, SegWeightsError


class TrainingDiverged(Exception):
    """The loss, a gradient or the weights became NaN or Inf; the message says where and which checkpoint is the
    last good one."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--lowlight_images_path", type=absolute, default="data/train_data/", help="training images, searched recursively "
      "(default: data/train_data/, authors' code)")
    a("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4, authors' code)")
    a("--weight_decay", type=float, default=1e-4, help="Adam weight decay (default: 1e-4, authors' code)")
    a("--grad_clip_norm", type=float, default=0.1, help="gradient-norm clip (default: 0.1, authors' code)")
    a("--num_epochs", type=int, default=100, help="epochs (default: 100, authors' code)")
    a("--train_batch_size", type=int, default=6, help="images per step and process (default: 6, authors' code)")
    cores = usable_cores()
    a("--num_workers", type=int, default=min(4, cores), help="data-loading processes (default: 4 as the authors' "
      f"code, or the cores this process may use where fewer: {min(4, cores)} here)")
    a("--display_iter", type=int, default=10, help="log the losses every N steps (default: 10, authors' code)")
    a("--snapshot_iter", type=int, default=10, help="checkpoint every N steps, and at each epoch's end "
      "(default: 10, authors' code)")
    a("--scale_factor", type=int, default=1, help="EFE downscale factor in training (default: 1, authors' code)")
    a("--num_of_SegClass", type=int, default=21, help="USS classes (default: 21, VOC, authors' code)")
    a("--snapshots_folder", type=absolute, default="weight/", help="where checkpoints and logs go "
      "(default: weight/, authors' code)")
    a("--load_pretrain", action="store_true", help="start from --pretrain_dir's EFE weights (default: off)")
    a("--pretrain_dir", type=absolute, default="weight/Epoch99.pth", help="weights for --load_pretrain (default: "
      "weight/Epoch99.pth, authors' code)")
    a("--conv_type", default="dsc", choices=["dsc", "tc"], help="EFE convs: depthwise-separable or plain "
      "(default: dsc, paper §3.1)")
    a("--patch_size", type=int, default=4, choices=[3, 4, 5], help="spatial-consistency region size "
      "(default: 4, paper Eq. 2)")
    a("--exp_level", type=float, default=0.6, help="exposure level E (default: 0.6, paper Eq. 3)")
    a("--loss_form", default="code", choices=LOSS_FORMS, help="code: the authors' released losses and weights; "
      "paper: the printed equations, unit weights (default: code)")
    a("--sem_weight", type=float, default=None, help="semantic-loss weight; 0 turns the term and the USS off "
      "(default: 0.1 with --loss_form code, authors' code; 1 with paper)")
    a("--seg_weights", type=lambda w: w if w in ("imagenet", "none") else absolute(w), default="imagenet",
      help="USS ResNet-50 weights: imagenet (torchvision download), a local "
      "resnet50 state-dict file, or none for random init (default: imagenet, paper §3.3)")
    a("--bn_mode", default="train", choices=BN_MODES, help="USS BatchNorm: train uses batch statistics as the "
      "authors' code does, eval the running ones (default: train)")
    a("--seed", type=int, default=1143, help="seed for python, numpy, torch and data order (default: 1143, "
      "the authors' dataloader)")
    a("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    a("--image_size", type=int, default=512, help="training images are resized to this square "
      "(default: 512, authors' code)")
    a("--resume", default=None, help="a last.pth to continue from: model, optimizer, epoch, step, RNG state, and "
      "every setting of that run not given again")
    a("--init", default="code", choices=["code", "paper"], help="EFE init: code = PyTorch's default, as the "
      "authors' train.py (it never calls its weights_init); paper = N(0, 0.02), zero biases (default: code)")
    a("--amp", action="store_true", help="CUDA only: float16 autocast, GradScaler and channels_last; the authors "
      "train in float32 (default: off)")
    a("--dry_run", action="store_true", help="one step on one batch in this process, nothing written but a log "
      "line: a quick check of data, weights and flags (default: off)")
    return p


def absolute(path: str) -> str:
    """A path flag made absolute, so the args a checkpoint saves name the same files from any working directory."""
    return os.path.abspath(path)


# What a mid-epoch checkpoint's position means: the epoch's order (seed, processes) cut into batches of this size.
EPOCH_SHAPE = ("seed", "train_batch_size", "image_size", "world_size")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags; with --resume, every setting saved with that run (its args) that is not given again here.

    Refuses, on one line with exit status 2 and before any work: a flag out of range, a device this machine lacks,
    and, resuming in mid-epoch, a change to EPOCH_SHAPE (the rest of the epoch would differ from the uninterrupted
    run's: images skipped or seen twice).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        restore_settings(parser, args, argv)
    for flag, low, why in (("train_batch_size", 1, ""), ("display_iter", 1, ""), ("snapshot_iter", 1, ""),
                           ("image_size", 16, " (the code-form exposure loss averages 16x16 patches)")):
        if getattr(args, flag) < low:
            parser.error(f"--{flag} {getattr(args, flag)}: must be at least {low}{why}")
    try:
        pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    return args


def restore_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> None:
    """Set in `args` what the run in args.resume saved and `argv` does not give; refuse an EPOCH_SHAPE change in
    mid-epoch."""
    ckpt = read_checkpoint(args.resume)
    probe = build_parser()  # the same flags with no defaults: what this command line gives
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    given = vars(probe.parse_args(argv)).keys() | {"resume"}
    vars(args).update({k: v for k, v in ckpt.get("args", {}).items() if k in vars(args) and k not in given})
    saved = dict(ckpt.get("args", {}))
    if "world_size" in ckpt:  # checkpoints of older versions do not say
        saved["world_size"] = ckpt["world_size"]
    now = dict(vars(args), world_size=int(os.environ.get("WORLD_SIZE", "1")))
    for key in EPOCH_SHAPE if ckpt.get("batch") else ():
        name = "processes (torchrun)" if key == "world_size" else f"--{key}"
        if key in saved and saved[key] != now[key]:
            parser.error(f"{name} {now[key]}: {args.resume} stopped in mid-epoch with {saved[key]}, and the "
                         "rest of that epoch depends on it; resume with the same, or from an epoch's end")


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np_state["state"]["key"] = np.array(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_worker(worker_id: int) -> None:
    # Ctrl-C reaches the workers too; only the main process should act on it, after the current step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def setup_device(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun, joins the process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(device)
    if world > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def train(args: argparse.Namespace) -> list[float]:
    """Train as `args` say; returns rank 0's mean total loss of each epoch this call ran."""
    rank, world, device = setup_device(args.device)
    try:
        run = build(args, rank, world, device)
        if args.dry_run:
            return [dry_run(run)]
        if args.resume:
            resume(run, args.resume)
        return train_epochs(run)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class TrainingRun:
    """Everything one training run holds; `position` is where it stands (what last.pth records)."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    dataset: LowLightDataset
    model: EnhanceNet
    net: torch.nn.Module  # `model`, or its DistributedDataParallel wrapper
    criterion: SGZLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sem_weight: float
    position: dict = field(default_factory=lambda: {"epoch": 0, "batch": 0, "step": 0})
    writer: SummaryWriter | None = None

    @property
    def lead(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def folder(self) -> Path:
        return Path(self.args.snapshots_folder)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.args.amp else torch.contiguous_format


def build(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> TrainingRun:
    """The dataset, network (initialised as --init says, or from --pretrain_dir), losses and optimizer."""
    if args.amp and device.type != "cuda":
        raise ValueError(f"--amp: float16 mixed precision needs a CUDA device, not {device}; leave it off")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    dataset = LowLightDataset(args.lowlight_images_path, args.image_size, verbose=rank == 0)
    if args.load_pretrain:
        model = load_enhance_net(args.pretrain_dir, args.scale_factor, args.conv_type).train()
    else:
        model = EnhanceNet(args.scale_factor, args.conv_type)
        if args.init == "paper":
            init_weights(model)
    model.to(device, memory_format=torch.channels_last if args.amp else torch.contiguous_format)
    sem_weight = WEIGHTS[args.loss_form]["sem"] if args.sem_weight is None else args.sem_weight
    segmenter = USS(args.num_of_SegClass, args.seg_weights, args.bn_mode).to(device) if sem_weight else None
    criterion = SGZLoss(args.loss_form, args.patch_size, args.exp_level, sem_weight=sem_weight, segmenter=segmenter)
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return TrainingRun(args, rank, world, device, dataset, model, net, criterion,
                       torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay),
                       torch.amp.GradScaler(device.type, enabled=args.amp), sem_weight)


def resume(run: TrainingRun, path: str) -> None:
    """Restore the model, optimizer, scaler, position and RNG state saved in a last.pth."""
    ckpt = read_checkpoint(path)
    missing = [key for key in ("model", "optimizer", "scaler", "rng", *run.position) if key not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a train.py last.pth (no {', '.join(missing)}); to start from its "
                         "weights use --load_pretrain --pretrain_dir instead of --resume")
    run.model.load_state_dict(extract_state_dict(ckpt))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    for group in run.optimizer.param_groups:  # the flags, as restored or given again (parse_args)
        group.update(lr=run.args.lr, weight_decay=run.args.weight_decay)
    run.scaler.load_state_dict(ckpt["scaler"])
    run.position = {k: ckpt[k] for k in run.position}
    set_rng_state(ckpt["rng"])


def train_step(run: TrainingRun, low: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer step on a batch: (the loss terms, the gradient norm before clipping).

    Raises TrainingDiverged, before the step, when the loss is not finite on any process, or the gradient.
    """
    low = low.to(run.device, non_blocking=True).contiguous(memory_format=run.memory_format)
    with torch.autocast(run.device.type, enabled=run.args.amp):
        enhanced, x_r = run.net(low)
        terms = run.criterion(low, enhanced.float(), x_r.float())
    bad = torch.tensor(float(not torch.isfinite(terms["total"]).item()), device=run.device)
    if run.world > 1:
        dist.all_reduce(bad)
    epoch, step = run.position["epoch"] + 1, run.position["step"] + 1
    if bad.item():
        raise diverged(run, f"loss became {terms['total'].item()}", epoch, step)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms["total"]).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.args.grad_clip_norm)
    # A finite loss can still have a NaN gradient (sqrt at 0). Under AMP an overflow is the scaler's to skip.
    if not run.args.amp and not torch.isfinite(grad_norm):  # the same on every process: DDP averaged it
        raise diverged(run, f"gradient norm became {grad_norm.item()}", epoch, step)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return terms, grad_norm


def diverged(run: TrainingRun, what: str, epoch: int, step: int) -> TrainingDiverged:
    last = run.folder / "last.pth"
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    return TrainingDiverged(f"{what} at epoch {epoch}, step {step}; stopped, {kept}")


def first_non_finite(state: dict) -> str | None:
    """The key path of the first float tensor in `state` (nested dicts) holding NaN or Inf, or None."""
    for key, value in state.items():
        inner = first_non_finite(value) if isinstance(value, dict) else None
        if inner is not None:
            return f"{key}.{inner}"
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return str(key)
    return None


def save(run: TrainingRun, epoch: int) -> None:
    """last.pth at the current position; EpochN.pth named, as the authors do, by the epoch in progress.

    Raises TrainingDiverged, writing nothing, when the weights or the optimizer state hold NaN or Inf.
    """
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()["state"]}
    bad = first_non_finite(state)  # every process checks: DDP keeps their states equal
    if bad is not None:
        raise diverged(run, f"{bad} holds NaN or Inf", epoch + 1, run.position["step"])
    if not run.lead:
        return
    ckpt = dict(run.position, model=run.model.state_dict(), optimizer=run.optimizer.state_dict(),
                scaler=run.scaler.state_dict(), args=vars(run.args), world_size=run.world, rng=rng_state())
    write_atomically(run.folder / "last.pth", lambda f: torch.save(ckpt, f))
    write_atomically(run.folder / f"Epoch{epoch}.pth", lambda f: torch.save(run.model.state_dict(), f))


def dry_run(run: TrainingRun) -> float:
    """One step on the first batch, in this process, writing nothing; returns its total loss."""
    low = torch.stack([run.dataset[i] for i in range(min(run.args.train_batch_size, len(run.dataset)))])
    terms, grad_norm = train_step(run, low)
    print(f"dry run: one step on {len(low)} images of {run.args.image_size}x{run.args.image_size}, loss "
          f"{terms['total'].item():.5f}, gradient norm {grad_norm.item():.4f}; nothing written")
    return terms["total"].item()


def train_epochs(run: TrainingRun) -> list[float]:
    """Epochs from the current position to --num_epochs, with logs and checkpoints; Ctrl-C saves, then stops."""
    args, pos = run.args, run.position
    if run.lead:
        run.folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(run.folder / name for name in ("last.pth", "args.json",
                                                           *(f"Epoch{e}.pth" for e in range(args.num_epochs))))
        resolved = dict(vars(args), sem_weight=run.sem_weight, device=str(run.device), world_size=run.world)
        write_atomically(run.folder / "args.json", lambda f: f.write(json.dumps(resolved, indent=2).encode()))
        run.writer = SummaryWriter(run.folder / "tensorboard")
    preview = torch.stack([run.dataset[i] for i in range(min(4, len(run.dataset)))]).to(run.device)
    sampler = DistributedSampler(run.dataset, num_replicas=run.world, rank=run.rank,
                                 shuffle=True, seed=args.seed)
    stop = []
    previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True)) if run.lead else None
    epoch_means = []
    try:
        for epoch in range(pos["epoch"], args.num_epochs):
            sampler.set_epoch(epoch)
            order = list(sampler)[pos["batch"] * args.train_batch_size:]
            loader = DataLoader(run.dataset, args.train_batch_size, sampler=order, num_workers=args.num_workers,
                                pin_memory=run.device.type == "cuda", worker_init_fn=seed_worker,
                                generator=torch.Generator().manual_seed(args.seed + epoch))
            totals = []
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.num_epochs}", disable=not run.lead, dynamic_ncols=True)
            for low in bar:
                terms, grad_norm = train_step(run, low)
                pos["step"] += 1
                pos["batch"] += 1
                totals.append(terms["total"].item())
                if run.lead and pos["step"] % args.display_iter == 0:
                    log_step(run, terms, grad_norm)
                    bar.set_postfix(loss=f"{totals[-1]:.4f}")
                if pos["step"] % args.snapshot_iter == 0:
                    save(run, epoch)
                if stop:
                    raise KeyboardInterrupt
            pos["epoch"], pos["batch"] = epoch + 1, 0
            epoch_means.append(float(np.mean(totals)))
            save(run, epoch)
            if run.lead:
                log_epoch(run, preview, epoch_means[-1])
    except KeyboardInterrupt:
        save(run, pos["epoch"])
        if run.lead:
            print(f"interrupted: saved {run.folder / 'last.pth'}; go on with --resume {run.folder / 'last.pth'}",
                  file=sys.stderr)
        raise
    finally:
        if run.lead:
            signal.signal(signal.SIGINT, previous_handler)
            run.writer.close()
    return epoch_means


def log_step(run: TrainingRun, terms: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> None:
    step = run.position["step"]
    for name, value in terms.items():
        run.writer.add_scalar(f"loss/{name}", value.item(), step)
    run.writer.add_scalar("lr", run.optimizer.param_groups[0]["lr"], step)
    run.writer.add_scalar("grad_norm", grad_norm.item(), step)


def log_epoch(run: TrainingRun, preview: torch.Tensor, mean_loss: float) -> None:
    """The epoch's mean loss, and the preview images enhanced, to TensorBoard; one line to the terminal."""
    with torch.no_grad():
        shown, shown_r = run.model(preview)
    run.writer.add_images("enhanced", shown.clamp(0, 1), run.position["step"])
    run.writer.add_images("x_r", (shown_r + 1) / 2, run.position["step"])
    run.writer.add_scalar("loss/epoch_mean_total", mean_loss, run.position["epoch"])
    tqdm.write(f"epoch {run.position['epoch']}: mean loss {mean_loss:.5f}, saved {run.folder / 'last.pth'}")


def main(argv: list[str] | None = None) -> None:
    try:
        train(parse_args(argv))
    except (DataError, SegWeightsError, TrainingDiverged, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
