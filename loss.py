"""SGZ's zero-reference losses (paper §3.4): spatial consistency, exposure, colour, total variation, semantic.

Two forms. "code" (the default) is what the authors' released `train.py`/`Myloss.py` compute, the form that
produced their weights. "paper" is the equations as printed. Each function's docstring names its equation and,
in one line, how the two forms differ; the README has the same table.
"""
import torch
import torch.nn.functional as F
from torch import nn

LOSS_FORMS = ("code", "paper")
# Term weights: the authors' train.py for "code"; the paper's total loss (unit weights) for "paper".
WEIGHTS = {
    "code": {"spa": 1.0, "col": 5.0, "exp": 10.0, "tv": 1600.0, "sem": 0.1},
    "paper": {"spa": 1.0, "col": 1.0, "exp": 1.0, "tv": 1.0, "sem": 1.0},
}
EXPOSURE_PATCH = {"code": 16, "paper": 4}
CHARBONNIER_EPS = 1e-3
DIRECT = ((0, -1), (0, 1), (-1, 0), (1, 0))
DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _neighbour_differences(x: torch.Tensor, offsets, zero_border: bool) -> list[torch.Tensor]:
    """x_i - x_j for each neighbour offset (dy, dx): with `zero_border`, at every position, the neighbours beyond
    the border being zero (as a zero-padded conv sees them); else only for the pairs inside the image."""
    if zero_border:
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1))
        return [x - padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets]
    diffs = []
    for dy, dx in offsets:
        a = x[..., max(0, -dy):x.shape[-2] - max(0, dy), max(0, -dx):x.shape[-1] - max(0, dx)]
        b = x[..., max(0, dy):x.shape[-2] - max(0, -dy), max(0, dx):x.shape[-1] - max(0, -dx)]
        diffs.append(a - b)
    return diffs


def spatial_consistency(enhanced: torch.Tensor, low: torch.Tensor, patch_size: int = 4, alpha: float = 0.5,
                        form: str = "code") -> torch.Tensor:
    """L_spa, paper Eq. 2: neighbouring-region contrast of the enhanced image Y should match the input I.

    Regions are patch_size x patch_size means of the channel mean; 4 direct neighbours weigh 1, the 4 diagonal
    ones alpha. Code: (D_I - D_Y)^2 of signed differences, zero-padded border, mean over every region.
    Paper: (|D_Y| - |D_I|)^2 over the pairs inside the image, summed per region and averaged over regions.
    """
    pool_y = F.avg_pool2d(enhanced.mean(1, keepdim=True), patch_size)
    pool_i = F.avg_pool2d(low.mean(1, keepdim=True), patch_size)
    code_form = form == "code"
    total = 0.0
    for offsets, weight in ((DIRECT, 1.0), (DIAGONAL, alpha)):
        for d_y, d_i in zip(_neighbour_differences(pool_y, offsets, code_form),
                            _neighbour_differences(pool_i, offsets, code_form)):
            term = (d_i - d_y) ** 2 if code_form else (d_y.abs() - d_i.abs()) ** 2
            total = total + weight * (term.mean() if code_form else term.sum() / pool_y.numel())
    return total


def exposure(enhanced: torch.Tensor, level: float = 0.6, form: str = "code") -> torch.Tensor:
    """L_exp, paper Eq. 3: mean intensity of each patch should approach the exposure level E (0.6).

    Code: squared error on 16x16 patches. Paper: absolute error on 4x4 patches.
    """
    means = F.avg_pool2d(enhanced.mean(1, keepdim=True), EXPOSURE_PATCH[form])
    return ((means - level) ** 2).mean() if form == "code" else (means - level).abs().mean()


def colour_constancy(enhanced: torch.Tensor, form: str = "code") -> torch.Tensor:
    """L_col, paper Eq. 4: the channel means J^R, J^G, J^B should agree (grey-world).

    Code: sqrt(sum over pairs of ((J^p - J^q)^2)^2), averaged over the batch, as a vector norm: the authors'
    `.sqrt()` has a NaN gradient where the term is 0 (an all-black or all-white image), the norm's is 0 there.
    Paper: Charbonnier, sum over pairs of sqrt((J^p - J^q)^2 + eps^2), eps = 1e-3, averaged over the batch.
    """
    r, g, b = enhanced.mean((2, 3)).unbind(1)
    squared = torch.stack([(r - g) ** 2, (r - b) ** 2, (b - g) ** 2], 1)
    if form == "code":
        return torch.linalg.vector_norm(squared, dim=1).mean()
    return (squared + CHARBONNIER_EPS ** 2).sqrt().sum(1).mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """L_tv, paper Eq. 5: mean squared horizontal plus vertical differences, times 2, per image.

    Code applies it to the enhancement factor x_r; the paper, to the enhanced image (the caller picks).
    """
    dh = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum() / (x[..., 1:, :][0, 0].numel())
    dw = ((x[..., :, 1:] - x[..., :, :-1]) ** 2).sum() / (x[..., :, 1:][0, 0].numel())
    return 2 * (dh + dw) / x.shape[0]


def focal_loss(logits: torch.Tensor, gamma: float = 2.0, beta: float = 1.0, eps: float = 1e-7) -> torch.Tensor:
    """L_sem, paper Eq. 6: focal loss -beta (1 - p)^gamma log p against the network's own argmax labels.

    p is the softmax probability of each pixel's argmax class, clamped to [eps, 1 - eps] as the authors do.
    The same in both forms.
    """
    p = F.softmax(logits, 1).max(1).values.clamp(eps, 1 - eps)
    return (-beta * (1 - p) ** gamma * p.log()).mean()


class SGZLoss(nn.Module):
    """The weighted sum of the five terms (paper Eq. 7). `forward` returns every weighted term and "total".

    `segmenter` maps an image batch to class logits (segmentation.USS); it is needed only when the semantic
    weight is not 0. `sem_weight=None` takes the form's weight (0.1 code, 1 paper).
    """

    def __init__(self, form: str = "code", patch_size: int = 4, exp_level: float = 0.6, alpha: float = 0.5,
                 sem_weight: float | None = None, segmenter: nn.Module | None = None):
        super().__init__()
        if form not in LOSS_FORMS:
            raise ValueError(f"loss form must be one of {LOSS_FORMS}, not {form!r}")
        self.form, self.patch_size, self.exp_level, self.alpha = form, patch_size, exp_level, alpha
        self.weights = dict(WEIGHTS[form])
        if sem_weight is not None:
            self.weights["sem"] = sem_weight
        if self.weights["sem"] and segmenter is None:
            raise ValueError("a semantic weight other than 0 needs a segmenter")
        self.segmenter = segmenter

    def forward(self, low: torch.Tensor, enhanced: torch.Tensor, x_r: torch.Tensor) -> dict[str, torch.Tensor]:
        w, form = self.weights, self.form
        terms = {
            "spa": w["spa"] * spatial_consistency(enhanced, low, self.patch_size, self.alpha, form),
            "col": w["col"] * colour_constancy(enhanced, form),
            "exp": w["exp"] * exposure(enhanced, self.exp_level, form),
            "tv": w["tv"] * total_variation(x_r if form == "code" else enhanced),
        }
        if w["sem"]:
            terms["sem"] = w["sem"] * focal_loss(self.segmenter(enhanced))
        terms["total"] = sum(terms.values())
        return terms
