"""Layer-wise least-squares reconstruction: refit the layers that consume removed channels on unlabeled images.

β compensation is exact only for channels whose output is constant; a dense, trained model has almost none. Here
every conv/linear layer that lost input channels (and every prunable layer downstream whose input moved) is refit
so that its **pre-activation** output matches what the ORIGINAL model computes there, given the inputs the PRUNED
model actually delivers there:

    min_{W', b'}  Σ_positions || W' · x_pruned[kept] + b' - (W · x_orig + b) ||²  +  λ ||W' - W[kept]||²

Layers are refit in forward order inside ONE forward pass of the pruned model over the calibration batch: a
forward pre-hook on each layer solves its normal equations from the inputs it receives (which already come from
refit upstream layers) and writes the new weights before the layer runs, so errors do not accumulate. The targets
come from one earlier pass of the original model, kept only at a bounded random subset of output positions per
layer (``max_positions``), so the statistics' memory does not grow with the number of images; the pruned pass
holds the calibration batch's activations once, like any batch-N inference.

k×k convs are fitted on the im2col patches of their kept input channels (gathered at the sampled positions only,
with the layer's own zero padding, so borders are fitted too); a 1 column carries the bias. Sums are float64; the
ridge λ = ``alpha`` · trace(G)/d pulls toward the original weights where the data does not determine them. A
layer whose system is not positive definite keeps its β-compensated weights (``fallback`` in the report).

The BN after a refit conv keeps its eval-mode FUNCTION: the conv is fitted to reproduce the ORIGINAL pre-BN
output, so normalising it with the original running mean/variance gives the original post-BN output (up to the fit
residual); re-estimating the statistics from the refit output would undo part of the fit, because a least-squares
fit has a smaller variance than its target (var(fit) = var(target) - var(residual)) and dividing by the smaller
standard deviation amplifies the layer by 1/sqrt(1 - residual share), compounding over the network. The fitted bias
of a bias-free conv goes into the BN's running mean.

But training and BN recalibration normalise with the statistics of the data they see, i.e. with exactly that
smaller variance. So the BN is then *re-parametrised* (``restandardize_bn``): its running mean/variance become the
refit output's actual statistics on the calibration images, and γ, β absorb the difference,

    γ' = γ · σ_fit / σ,   β' = β + γ (μ_fit - μ) / σ,   μ, σ² := μ_fit, σ_fit²

which is the same eval-mode function exactly, while a train-mode batch (or a recalibration) with statistics close
to the calibration images' now reproduces it too. Without this, a labelled fine-tune with train-mode BN starts
from a much worse model than the one the refit produced (BCCD at 0.5x MACs: 0.271 -> 0.025 after one epoch).

Not refit (they keep β compensation): depthwise/grouped convs (they cannot mix channels: a depthwise layer loses
the same channel on both sides and its consumer downstream is refit instead), layers called more than once
(shared weights), ``CompensatedConv2d`` layers from an earlier ``exact`` prune.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..models.spec import CompensatedConv2d
from ..layers import kept_modes
from .surgery import removal_sets


class CalibrationError(ValueError):
    """Calibration images could not be read."""


def calibration_paths(source, n: int | None = 128) -> list[Path]:
    """Image paths of a data yaml (its train split) or an image folder / list / file; ``n`` evenly spread."""
    from ..data.sources import list_images, load_data_yaml
    from ..eval.coco import select_subset
    p = Path(source)
    if p.suffix.lower() in (".yaml", ".yml"):
        data = load_data_yaml(p, splits=("train",))
        paths = list_images(data["train"], field="train")
    else:
        paths = list_images(p)
    if not paths:
        raise CalibrationError(f"--calib {source}: no images found")
    return [paths[i] for i in select_subset(len(paths), n)]


def calibration_batch(source, n: int | None = 128, imgsz: int = 320, stride: int = 32) -> torch.Tensor:
    """(N, 3, imgsz, imgsz) float in [0, 1]: the project's letterbox (square canvas, gray 114 padding), RGB.

    No labels are read. Unreadable images are skipped; none readable is an error naming the source.
    """
    from ..eval.infer import LetterboxLoader
    if n is not None and n < 1:
        raise CalibrationError(f"--calib-images: expected >= 1, found {n}")
    if imgsz < stride or imgsz > 4096:
        raise CalibrationError(f"--calib-imgsz: expected {stride}..4096, found {imgsz}")
    loader = LetterboxLoader(calibration_paths(source, n), imgsz, batch=16, stride=stride, rect=False)
    parts = [b.images.contiguous().float() / 255 for b in loader]
    if not parts:
        raise CalibrationError(f"--calib {source}: none of the images could be read "
                               f"({loader.skipped[0][1] if loader.skipped else 'no images'})")
    return torch.cat(parts)


# -- which layers, which positions ----------------------------------------------------------------------------
def refit_candidates(model: nn.Module, graph) -> list[str]:
    """Conv/linear layers that can be refit: they ran once in the trace, mix channels, and touch a group."""
    prunable = graph.prunable_modules()
    out = []
    for name, m in model.named_modules():
        info = graph.conv_info.get(name)
        if info is None or info.calls != 1 or name not in prunable or isinstance(m, CompensatedConv2d):
            continue
        if isinstance(m, nn.Conv2d) and m.groups == 1 and not m.transposed and not isinstance(m.padding, str) \
                or isinstance(m, nn.Linear):  # (padding="same"/"valid" convs keep β compensation)
            out.append(name)
    return out


def _sample_positions(n_total: int, budget: int, gen: torch.Generator) -> torch.Tensor:
    if n_total <= budget:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=gen)[:budget].sort().values


def _split_index(flat: torch.Tensor, shape) -> tuple:
    b, h, w = shape
    return flat // (h * w), (flat // w) % h, flat % w


def _patches(m: nn.Module, x: torch.Tensor, pos: tuple) -> torch.Tensor:
    """(P, C·kh·kw) input patches of ``m`` at output positions ``pos`` = (batch, y, x), weight layout order."""
    if isinstance(m, nn.Linear):
        return x[pos[0]] if x.dim() == 2 else x[pos[0], pos[1]]
    kh, kw = m.kernel_size
    sh, sw = m.stride
    dh, dw = m.dilation
    if isinstance(m.padding, str):
        raise ValueError(f"padding={m.padding!r} convs are not supported by reconstruction")
    ph, pw = m.padding
    if m.padding_mode != "zeros":
        xp = F.pad(x, (pw, pw, ph, ph), mode="reflect" if m.padding_mode == "reflect" else m.padding_mode)
    else:
        xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    b, oy, ox = pos
    xl = xp.permute(0, 2, 3, 1)  # channels last: each gathered tap is P contiguous rows of C
    taps = [xl[b, oy * sh + i * dh, ox * sw + j * dw] for i in range(kh) for j in range(kw)]  # each (P, C)
    return torch.stack(taps, 2).reshape(len(b), -1)


def _outputs_at(y: torch.Tensor, pos: tuple) -> torch.Tensor:
    if y.dim() == 2:
        return y[pos[0]]
    if y.dim() == 3:
        return y[pos[0], pos[1]]
    return y[pos[0], :, pos[1], pos[2]]


def _grid(y: torch.Tensor):
    """(batch, h, w) of an output, treating a linear layer's rows as 1×1 positions."""
    if y.dim() == 4:
        return (y.shape[0], y.shape[2], y.shape[3])
    if y.dim() == 3:
        return (y.shape[0], y.shape[1], 1)
    return (y.shape[0], 1, 1)


def _pos_tuple(flat, grid, dim):
    b, oy, ox = _split_index(flat, grid)
    if dim == 4:
        return b, oy, ox
    if dim == 3:
        return b, oy
    return (b,)


# -- the reference pass ---------------------------------------------------------------------------------------
@torch.no_grad()
def reference_targets(reference: nn.Module, names: list[str], images: torch.Tensor, max_positions: int,
                      seed: int = 0, chunk: int = 32) -> dict:
    """Targets of the original model at a bounded random subset of each layer's output positions.

    Returns ({layer: (flat position indices, grid, output dim, targets (P, out) float32)},
    {layer: its input patches at the first <= 64 of those positions}, to tell moved inputs from unchanged ones).
    """
    modules = dict(reference.named_modules())
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    plan: dict = {}
    got: dict = {}
    checks: dict = {}
    state = {"start": 0}

    def hook(mod, inp, out, name):
        grid_chunk = _grid(out)
        if name not in plan:  # positions over the whole calibration set, drawn once per layer
            grid = (n, grid_chunk[1], grid_chunk[2])
            plan[name] = (_sample_positions(math.prod(grid), max_positions, gen), grid, out.dim())
            got[name] = []
        flat, grid, dim = plan[name]
        per_image = grid[1] * grid[2]
        lo, hi = state["start"] * per_image, (state["start"] + out.shape[0]) * per_image
        sel = flat[(flat >= lo) & (flat < hi)] - lo
        local = _pos_tuple(sel, (out.shape[0], grid[1], grid[2]), dim)
        got[name].append(_outputs_at(out, local).float())
        if name not in checks and len(sel):
            k = min(64, len(sel))
            checks[name] = _patches(mod, inp[0], tuple(t[:k] for t in local)).float()

    handles = [modules[nm].register_forward_hook(lambda m, i, o, nm=nm: hook(m, i, o, nm)) for nm in names]
    try:
        with kept_modes(reference):
            reference.eval()
            for start in range(0, n, chunk):
                state["start"] = start
                reference(images[start:start + chunk])
    finally:
        for h in handles:
            h.remove()
    return {nm: (*plan[nm], torch.cat(got[nm])) for nm in plan}, checks


# -- the solve ------------------------------------------------------------------------------------------------
def solve_layer(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, alpha: float):
    """Ridge least squares toward (w0, b0): returns (W (out, d), b (out,), stats) or None if ill-posed.

    x (P, d) inputs, y (P, out) targets; the bias is not regularised (the data is centred instead). The normal
    equations are float32 products of centred data (centring removes the large common part, so the products
    lose nothing that matters at P <= a few 10^4), solved in float64; with fewer positions than inputs the
    equivalent P × P dual system is solved instead.
    """
    d, n = x.shape[1], len(x)
    mx, my = x.mean(0, dtype=torch.float64), y.mean(0, dtype=torch.float64)
    xc, yc = x.float() - mx.float(), y.float() - my.float()
    w0d = w0.double().reshape(w0.shape[0], -1)
    lam = alpha * float((xc * xc).sum(dtype=torch.float64)) / max(d, 1)  # alpha · trace(G) / d
    if not math.isfinite(lam):
        return None
    lam = lam if lam > 0 else 1.0  # all-zero inputs: nothing to fit, the solve returns w0 (scale-free choice)
    if n >= d:  # primal: (G + λI) Wᵀ = C + λ W0ᵀ, G = XᵀX (d × d)
        a = (xc.T @ xc).double()
        rhs = (xc.T @ yc).double() + lam * w0d.T
    else:  # fewer positions than inputs: the same solution through the n × n dual (Woodbury)
        a = (xc @ xc.T).double()
        rhs = (yc.double() - xc.double() @ w0d.T)
    a.diagonal().add_(lam)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        return None
    sol = torch.cholesky_solve(rhs, chol)
    w = (sol.T if n >= d else w0d + (xc.double().T @ sol).T)  # (out, d)
    if not torch.isfinite(w).all():
        return None
    b = my - w @ mx

    def err(wm, bm):  # Σ ||wm x + bm - y||², exactly, in float64
        r = x.double() @ wm.T + bm - y.double()
        return float((r * r).sum())

    total = float((yc.double() ** 2).sum()) + 1e-30
    before, after = err(w0d, b0.double().to(x.device)), err(w, b)
    return w, b, {"rel_err_before": before / total, "rel_err_after": after / total, "lambda": lam}


def _bias_of(m: nn.Module) -> torch.Tensor:
    n = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
    return m.bias.detach() if m.bias is not None else torch.zeros(n, device=m.weight.device)


@torch.no_grad()
def reconstruct(model: nn.Module, reference: nn.Module, graph, plan, images: torch.Tensor, *,
                max_positions: int = 16384, alpha: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Refit ``model`` (already pruned by ``plan``) toward ``reference`` (the model before pruning) in place.

    Returns {"layers": {name: fit stats}, "fallback": [names], "positions": max_positions, "images": N}.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"calibration images: expected (N, 3, H, W), found {tuple(images.shape)}")
    ref_param = next(model.parameters())
    images = images.to(ref_param.device, ref_param.dtype)
    rm_out, rm_in = removal_sets(graph, plan)
    names = refit_candidates(reference, graph)
    targets, checks = reference_targets(reference, names, images, max_positions, seed)
    ref_modules = dict(reference.named_modules())
    modules = dict(model.named_modules())
    layers, fallback = {}, []
    bar = tqdm(total=len(targets), desc="reconstruct", disable=not progress, leave=False)

    def refit(mod, inp, name):
        if name in layers or name in fallback:
            return
        flat, grid, dim, y = targets[name]
        x_in = inp[0]
        pos = _pos_tuple(flat.to(x_in.device), (x_in.shape[0], grid[1], grid[2]), dim)
        ref_m = ref_modules[name]
        kept_in, kept_out = _kept_channels(ref_m, rm_in.get(name, ()), rm_out.get(name, ()))
        x = _patches(mod, x_in, pos)
        yk = y[:, kept_out].to(x.device)
        w0 = ref_m.weight.detach()[kept_out][:, kept_in] if ref_m.weight.dim() > 1 else ref_m.weight.detach()
        bn_name = graph.conv_info[name].bn
        ref_bn = ref_modules.get(bn_name) if bn_name else None
        if name not in rm_in:  # no input removed and none moved (upstream of every change): already right
            x_check = checks.get(name)
            if x_check is not None and (x[:len(x_check)] - x_check).norm() <= 1e-5 * (x_check.norm() + 1e-12):
                bar.update(1)
                layers[name] = {"skipped": "input unchanged"}
                return
        res = solve_layer(x, yk, w0, _bias_of(ref_m)[kept_out], alpha)
        bar.update(1)
        if res is None:
            fallback.append(name)
            return
        w, b, stats = res
        _write_fit(mod, w, b, ref_bn, modules.get(bn_name) if bn_name else None, kept_out)
        layers[name] = stats

    out_stats: dict = {}

    def record(mod, inp, out, name):  # the (refit) layer's actual output statistics, for restandardize_bn
        if name in fallback or "rel_err_after" in layers.get(name, {}):  # refit or β-compensated, not skipped
            dims = [0] + list(range(2, out.dim())) if out.dim() > 2 else [0]
            out_stats[name] = (out.mean(dims, dtype=torch.float64), out.double().var(dims, unbiased=False))

    handles = [modules[nm].register_forward_pre_hook(lambda m, i, nm=nm: refit(m, i, nm)) for nm in targets]
    handles += [modules[nm].register_forward_hook(lambda m, i, o, nm=nm: record(m, i, o, nm)) for nm in targets]
    try:
        with kept_modes(model):
            model.eval()
            model(images)
    finally:
        for h in handles:
            h.remove()
        bar.close()
    restandardized = _restandardize_all(out_stats, graph, modules)
    return {"layers": layers, "fallback": fallback, "images": len(images), "positions": max_positions,
            "alpha": alpha, "bn_restandardized": len(restandardized)}


def _kept_channels(ref_m: nn.Module, removed_in, removed_out) -> tuple:
    """The reference layer's kept input channels (list) and kept output channels (long tensor)."""
    n_in = ref_m.in_channels if isinstance(ref_m, nn.Conv2d) else ref_m.in_features
    n_out = ref_m.out_channels if isinstance(ref_m, nn.Conv2d) else ref_m.out_features
    kept_in = [i for i in range(n_in) if i not in removed_in]
    kept_out = torch.tensor([i for i in range(n_out) if i not in removed_out], dtype=torch.long)
    return kept_in, kept_out


def _write_fit(mod: nn.Module, w: torch.Tensor, b: torch.Tensor, ref_bn, bn, kept_out: torch.Tensor) -> None:
    """The fitted weight into ``mod``; the bias into its own, else into its BN's running mean, else a new one."""
    mod.weight.data.copy_(w.reshape(mod.weight.shape).to(mod.weight.dtype))
    if mod.bias is not None:
        mod.bias.data.copy_(b.to(mod.bias.dtype))
    elif ref_bn is not None and ref_bn.running_mean is not None and bn is not None:
        # y_bn = γ (z + b - μ)/σ + β  ==  γ (z - (μ - b))/σ + β: the fitted bias moves into the running mean
        bn.running_mean.copy_(ref_bn.running_mean[kept_out].to(b.device) - b.to(ref_bn.running_mean.dtype))
    else:
        mod.bias = nn.Parameter(b.to(mod.weight.dtype), requires_grad=mod.weight.requires_grad)


def _restandardize_all(out_stats: dict, graph, modules: dict) -> list:
    """The layers whose BN was restandardized to their refit output statistics (``restandardize_bn``)."""
    restandardized = []
    for name, (mean, var) in out_stats.items():
        bn = modules.get(graph.conv_info[name].bn or "")
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and restandardize_bn(bn, mean, var):
            restandardized.append(name)
    return restandardized


@torch.no_grad()
def restandardize_bn(bn: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> bool:
    """Give ``bn`` running statistics (``mean``, ``var``) and the same eval-mode function (γ, β absorb the change).

    Returns False (and changes nothing) when the BN has no running statistics or no affine parameters to absorb
    the change, or the new statistics are not usable (non-finite, a zero variance).
    """
    if bn.running_mean is None or bn.running_var is None or bn.weight is None or bn.bias is None:
        return False
    mean, var = mean.to(bn.running_mean), var.to(bn.running_var)
    if mean.shape != bn.running_mean.shape or not (torch.isfinite(mean).all() and torch.isfinite(var).all()) \
            or bool((var <= 0).any()):
        return False
    old_std = (bn.running_var.double() + bn.eps).sqrt()
    new_std = (var.double() + bn.eps).sqrt()
    gamma = bn.weight.detach().double()
    bn.bias.data.copy_((bn.bias.detach().double() + gamma * (mean.double() - bn.running_mean.double()) / old_std)
                       .to(bn.bias.dtype))
    bn.weight.data.copy_((gamma * new_std / old_std).to(bn.weight.dtype))
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    return True


# -- statistics for the recon criterion ------------------------------------------------------------------------
@torch.no_grad()
def input_statistics(model: nn.Module, graph, images: torch.Tensor, max_positions: int = 16384, seed: int = 0,
                     chunk: int = 32) -> dict:
    """{layer: (covariance (C, C) float64, mean (C,))} of the channel vectors entering every layer that has
    prunable input channels, over up to ``max_positions`` sampled pixels (positions) of the calibration images."""
    targets = {s.module for g in graph.groups for s in g.channels[0] if s.role in ("in", "lin_in")}
    modules = dict(model.named_modules())
    names = [n for n in refit_candidates(model, graph) if n in targets]
    gen = torch.Generator().manual_seed(seed)
    sums: dict = {}
    n = len(images)

    def hook(mod, inp, name):
        x = inp[0]
        v = x.permute(0, *range(2, x.dim()), 1).reshape(-1, x.shape[1]) if x.dim() > 2 else x
        per_chunk = max(1, int(max_positions * x.shape[0] / n))
        if len(v) > per_chunk:
            v = v[torch.randperm(len(v), generator=gen)[:per_chunk].to(v.device)]
        v = v.double()
        s = sums.setdefault(name, [0, 0.0, 0.0])
        s[0] += len(v)
        s[1] = s[1] + v.sum(0)
        s[2] = s[2] + v.T @ v

    handles = [modules[nm].register_forward_pre_hook(lambda m, i, nm=nm: hook(m, i, nm)) for nm in names]
    ref = next(model.parameters())
    try:
        with kept_modes(model):
            model.eval()
            for start in range(0, n, chunk):
                model(images[start:start + chunk].to(ref.device, ref.dtype))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for nm, (cnt, s1, s2) in sums.items():
        mean = s1 / cnt
        out[nm] = ((s2 / cnt - torch.outer(mean, mean)).cpu().numpy(), mean.cpu().numpy())
    return out
