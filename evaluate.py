"""Regenerate the paper's Tables 5-7 (§4): SGZ beside its peers on the same images, with the conventions stated.

    python evaluate.py --data_dir ../shared/data/test_data --out_dir results/eval        # everything
    python evaluate.py --limit 3 --repeats 3 --out_dir /tmp/eval                          # a quick look

Writes into --out_dir: table5_unpaired, table6_paired, table7_efficiency and gap (the paired sets under other
papers' conventions), each as .md and .csv, plus per_image.csv. Bad or unmatched images are reported one line
each and skipped; the run goes on.
"""
import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import inference
import metrics
from baselines import CLASSICAL, load_networks
from files import IMAGE_EXTENSIONS, BadInputError, read_image, to_uint8, write_atomically, write_image

METHODS = ["Input", "SGZ", "Zero-DCE++", "Zero-DCE", "SCI", *CLASSICAL]
LOWER_IS_BETTER = {"MSE", "BRISQUE", "NIQE", "Params", "FLOPs (G)", "Time (ms)"}


def write_text(path: Path, text: str) -> None:
    """Write atomically, so a crash never leaves half a table."""
    write_atomically(path, lambda f: f.write(text.encode()))


def build_methods(args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """name -> enhancer, and name -> network (for Table 7). A method whose weights are missing is skipped."""
    paths = {"SGZ": args.weights, "Zero-DCE++": args.zero_dce_pp_weights, "Zero-DCE": args.zero_dce_weights,
             "SCI": args.sci_weights}
    nets, problems = load_networks({name: (name, paths[name]) for name in args.methods if name in paths}, device,
                                   args.scale_factor)
    for name, reason in problems.items():
        print(f"{name} skipped: {reason}", file=sys.stderr)
    methods = {}
    for name in args.methods:
        if name in nets:
            methods[name] = inference.numpy_enhancer(nets[name], device)
        elif name not in paths:
            methods[name] = CLASSICAL.get(name, lambda img: img)
    return methods, nets


def list_images(folder: Path, limit: int) -> list[Path]:
    """The images directly in `folder`, sorted, the first `limit` of them (0: all); none, with one line, when the
    folder is missing."""
    if not folder.is_dir():
        print(f"{folder}: no such folder, set skipped", file=sys.stderr)
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[:limit] if limit else files


def report(notes: list[str], message: str) -> None:
    """One line per bad image, on stderr now and under its table later."""
    notes.append(message)
    tqdm.write(message, file=sys.stderr)


def enhanced(methods: dict, low: np.ndarray, dataset: str, source: Path, args):
    """(method, uint8 output) for every method, each output saved when --save_images asks."""
    for method, enhance in methods.items():
        out = to_uint8(enhance(low))
        save(out, method, dataset, source, args)
        yield method, out


def evaluate_paired(name: str, folder: Path, methods: dict, args, rows: list, notes: list) -> None:
    """Table 6 and the gap table for one paired set: folder/low/X scored against folder/high/X."""
    for low_path in tqdm(list_images(folder / "low", args.limit), desc=name, file=sys.stderr):
        gt_path = folder / "high" / low_path.name
        try:
            if not gt_path.is_file():
                raise ValueError(f"{low_path}: no ground truth {gt_path}, skipped")
            low, gt = read_image(low_path), to_uint8(read_image(gt_path))
            if low.shape != gt.shape:
                raise ValueError(f"{low_path}: size {low.shape[1]}x{low.shape[0]} differs from ground truth "
                                 f"{gt_path.name} {gt.shape[1]}x{gt.shape[0]}, skipped (ground truth is never cropped)")
        except (ValueError, BadInputError) as e:
            report(notes, str(e))
            continue
        for method, out in enhanced(methods, low, name, low_path, args):
            scores = {**metrics.paired_scores(out, gt), **metrics.gap_scores(out, gt)}
            rows += [(method, name, low_path.name, k, v) for k, v in scores.items()]


def evaluate_unpaired(name: str, folder: Path, methods: dict, scorers: dict, args, rows: list, notes: list) -> None:
    """Table 5 for one unpaired set: no-reference scores of every method's output."""
    for path in tqdm(list_images(folder, args.limit), desc=name, file=sys.stderr):
        try:
            low = read_image(path)
        except BadInputError as e:
            report(notes, str(e))
            continue
        for method, out in enhanced(methods, low, name, path, args):
            for metric, scorer in scorers.items():
                try:
                    rows.append((method, name, path.name, metric, scorer(out)))
                except ValueError as e:
                    report(notes, f"{path}: {metric} not computed for {method}: {e}")


def save(out: np.ndarray, method: str, dataset: str, source: Path, args) -> None:
    if args.save_images:
        write_image(out, args.out_dir / "images" / method / dataset / f"{source.stem}.png")


def unique_scorer(weights: Path | None, device: torch.device):
    """UNIQUE (Zhang et al., TIP 2021) through pyiqa, only with a user-supplied checkpoint; else None and a line."""
    if weights is None:
        print("UNIQUE skipped: pass --unique_weights PATH (pyiqa's UNIQUE checkpoint); nothing is downloaded",
              file=sys.stderr)
        return None
    try:
        import pyiqa
        metric = pyiqa.create_metric("unique", device=device, pretrained_model_path=str(weights))
    except Exception as e:
        print(f"UNIQUE skipped: {weights}: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return None
    return lambda img: float(metric(torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)))


def mean_table(rows: list, metric_names: list[str]) -> dict:
    """(method, dataset, metric) -> (per-image mean, count)."""
    values = defaultdict(list)
    for method, dataset, _, metric, value in rows:
        if metric in metric_names:
            values[method, dataset, metric].append(value)
    return {k: (float(np.mean(v)), len(v)) for k, v in values.items()}


def render(title: str, convention: str, rows: list, metric_names: list[str], notes: list[str],
           average: bool = False, image_counts: bool = True) -> tuple[str, str]:
    """A methods x (dataset, metric) table as Markdown and as long-format CSV."""
    means = mean_table(rows, metric_names)
    methods = list(dict.fromkeys(m for m, _, _ in means))
    datasets = list(dict.fromkeys(d for _, d, _ in means)) + (["Average"] if average else [])
    arrow = {m: "↓" if m in LOWER_IS_BETTER else "↑" for m in metric_names}
    cols = [(d, m) for d in datasets for m in metric_names]
    md = [f"### {title}", "", f"Convention: {convention}.", "",
          "| Method | " + " | ".join(f"{d} {m}{arrow[m]}" for d, m in cols) + " |",
          "| --- |" + " ---: |" * len(cols)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", "dataset", "metric", "mean", "n"])
    for method in methods:
        cells = []
        for d, m in cols:
            if d == "Average":
                per_set = [means[method, s, m][0] for s in datasets[:-1] if (method, s, m) in means]
                value, n = (float(np.mean(per_set)), len(per_set)) if per_set else (None, 0)
            else:
                value, n = means.get((method, d, m), (None, 0))
            cells.append(format_value(value, m))
            if value is not None:
                writer.writerow([method, d, m, f"{value:.6f}", n])
        md.append(f"| {method} | " + " | ".join(cells) + " |")
    if image_counts:
        counts = sorted({(d, n) for (_, d, _), (_, n) in means.items()})
        md += ["", "Images scored per method: " + ", ".join(f"{d} {n}" for d, n in counts) + "."]
    md += [f"- {n}" for n in notes]
    return "\n".join(md) + "\n", out.getvalue()


def format_value(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "Params":
        return f"{int(value):,}"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def efficiency(nets: dict, methods: dict, args, device: torch.device) -> tuple[str, str]:
    """Table 7: parameters, convolution FLOPs and median time per image at --efficiency_size."""
    w, h = args.efficiency_size
    rows = []
    for name, enhance in tqdm(methods.items(), desc="timing", file=sys.stderr):
        if name == "Input":
            continue
        net = nets.get(name)
        if net is not None:
            fn = inference.forward_for(net)
        else:
            fn = lambda x, f=enhance: f(x[0].permute(1, 2, 0).cpu().numpy())  # noqa: E731
        seconds = metrics.time_per_image(fn, h, w, args.warmup, args.repeats, device if net else "cpu")
        rows.append((name, f"{w}x{h}", "-", "Time (ms)", seconds * 1000))
        if net is not None:
            rows.append((name, f"{w}x{h}", "-", "Params", metrics.count_params(net)))
            rows.append((name, f"{w}x{h}", "-", "FLOPs (G)", metrics.count_flops(net, h, w) / 1e9))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else metrics.cpu_name()
    convention = (f"{w}x{h} input; Params: trainable parameters; FLOPs: torch.utils.flop_counter, convolutions "
                  f"only, 2 per multiply-add (resizes and the 8 RIE steps, about {8 * 9 * w * h / 1e9:.3f} G "
                  f"elementwise ops, not counted); Time: median of {args.repeats} runs after {args.warmup} "
                  f"warm-up, networks on {device_name} (torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads), classical methods on the CPU")
    return render("Table 7: efficiency", convention, rows, ["Params", "FLOPs (G)", "Time (ms)"], [],
                  image_counts=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=Path("data/test_data"),
                   help="folder holding the sets (default: data/test_data, the authors' layout)")
    p.add_argument("--paired", nargs="*", default=["LOL"],
                   help="paired sets, each with low/ and high/ matched by file name; --paired with no name "
                        "skips Table 6's sets (default: LOL, Table 6)")
    p.add_argument("--unpaired", nargs="*", default=["DICM", "LIME", "real"],
                   help="unpaired sets for Table 5; --unpaired with no name skips them (default: DICM LIME real, "
                        "those released with Zero-DCE/++)")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS,
                   help=f"methods to run (default: all: {' '.join(METHODS)}); Input is the unenhanced image")
    p.add_argument("--weights", type=Path, default=Path("snapshots/sgz_ours.pth"),
                   help="SGZ weights: ours, or the authors' Epoch99.pth (default: snapshots/sgz_ours.pth)")
    p.add_argument("--zero_dce_pp_weights", type=Path, default=Path("weights/zero_dce_pp_epoch99.pth"),
                   help="Zero-DCE++ released weights (default: weights/zero_dce_pp_epoch99.pth)")
    p.add_argument("--zero_dce_weights", type=Path, default=Path("weights/zero_dce_epoch99.pth"),
                   help="Zero-DCE released weights (default: weights/zero_dce_epoch99.pth)")
    p.add_argument("--sci_weights", type=Path, default=Path("weights/sci_medium.pt"),
                   help="SCI released weights, its medium.pt (default: weights/sci_medium.pt)")
    p.add_argument("--scale_factor", type=int, default=12,
                   help="EFE downscaling for SGZ and Zero-DCE++ (default: 12, the authors' test script)")
    p.add_argument("--out_dir", type=Path, default=Path("results/eval"), help="where tables go (default: results/eval)")
    p.add_argument("--limit", type=int, default=0, help="at most this many images per set (default: 0 = all)")
    p.add_argument("--tables", nargs="+", default=["5", "6", "7"], choices=["5", "6", "7"],
                   help="which tables to make (default: 5 6 7)")
    p.add_argument("--save_images", action="store_true", help="also write every output under out_dir/images")
    p.add_argument("--brisque_model", type=Path, default=metrics.BRISQUE_DIR / "brisque_model_live.yml",
                   help="BRISQUE SVM model (default: Debian opencv-data's LIVE-R2 model)")
    p.add_argument("--brisque_range", type=Path, default=metrics.BRISQUE_DIR / "brisque_range_live.yml",
                   help="BRISQUE feature ranges (default: Debian opencv-data's)")
    p.add_argument("--unique_weights", type=Path, default=None,
                   help="UNIQUE checkpoint for pyiqa (default: none, UNIQUE skipped)")
    p.add_argument("--efficiency_size", type=int, nargs=2, default=[1200, 900], metavar=("W", "H"),
                   help="input size for Table 7 (default: 1200 900, paper §4.3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default: 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs; the median is reported (default: 20)")
    p.add_argument("--device", default="auto",
                   help="device for the networks: auto (cuda if available, else cpu), cpu, cuda (default: auto)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = inference.pick_device(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sets = ([args.data_dir / name / "low" for name in args.paired] if "6" in args.tables else []) + \
        ([args.data_dir / name for name in args.unpaired] if "5" in args.tables else [])
    if sets and not any(folder.is_dir() and list_images(folder, 1) for folder in sets):
        print(f"error: no test images under --data_dir {args.data_dir} (looked in {', '.join(map(str, sets))}); "
              "point --data_dir at the test sets (README: Weights and data)", file=sys.stderr)
        return 2
    scorers = {}
    if "5" in args.tables:
        try:
            scorers["BRISQUE"] = metrics.Brisque(args.brisque_model, args.brisque_range)
        except FileNotFoundError as e:
            print(f"BRISQUE skipped: {e}", file=sys.stderr)
        scorers["NIQE"] = metrics.Niqe()
    methods, nets = build_methods(args, device)
    inference.keep_freed_memory()  # as test.py runs the networks, so Table 7 times them as a user gets them
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows, outputs = [], {}
    if "6" in args.tables:
        notes = []
        for name in args.paired:
            evaluate_paired(name, args.data_dir / name, methods, args, rows, notes)
        outputs["table6_paired"] = render("Table 6: paired sets", metrics.PAIRED_CONVENTION, rows,
                                          ["PSNR", "SSIM", "SSIM-G", "MSE"], notes)
        outputs["gap"] = render("Paired sets under other conventions", metrics.GAP_CONVENTION, rows,
                                ["PSNR-Y", "SSIM-G-Y", "SSIM-W", "PSNR GT-mean", "SSIM GT-mean",
                                 "SSIM-G GT-mean"], [])
    if "5" in args.tables:
        unique = unique_scorer(args.unique_weights, device)
        if unique is not None:
            scorers["UNIQUE"] = unique
        notes = []
        for name in args.unpaired:
            evaluate_unpaired(name, args.data_dir / name, methods, scorers, args, rows, notes)
        outputs["table5_unpaired"] = render("Table 5: unpaired sets", metrics.UNPAIRED_CONVENTION, rows,
                                            list(scorers), notes, average=True)
    if "7" in args.tables:
        outputs["table7_efficiency"] = efficiency(nets, methods, args, device)
    for name, (md, table_csv) in outputs.items():
        write_text(args.out_dir / f"{name}.md", md)
        write_text(args.out_dir / f"{name}.csv", table_csv)
        print(md)
    per_image = io.StringIO()
    csv.writer(per_image).writerows([("method", "dataset", "image", "metric", "value"), *rows])
    write_text(args.out_dir / "per_image.csv", per_image.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
