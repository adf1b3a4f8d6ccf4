"""Selection: which channels of which group go, under ratio/threshold/target-MACs and width constraints."""
from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np
from ..graph import DependencyGraph
from ..layers import handler_for
from .importance import get_criterion
from .spec import PlanError, PruneSpec

__all__ = ["PlanError", "PruneSpec", "PruningPlan", "make_plan", "check_selection", "resolve_names", "MacsModel",
           "removed_per_layer", "agp_schedule"]


@dataclass
class PruningPlan:
    """Positions to remove per group id, plus the numbers that explain the choice."""
    remove: dict = field(default_factory=dict)  # gid -> sorted list of positions
    criterion: str = "bn"
    ratio: float | None = None
    threshold: float | None = None
    target_macs: float | None = None
    round_to: int = 8
    macs_ratio_estimate: float = 1.0
    cost_ratio_estimate: float | None = None  # the cost model's ratio (e.g. measured latency) when one was given
    removed_importance: float = 0.0  # share of the total (group-normalised) importance the plan removes

    @property
    def removed_channels(self) -> int:
        return sum(len(v) for v in self.remove.values())


def resolve_names(patterns, module_names: list[str], what: str = "--ignore") -> set[str]:
    """Expand exact names / globs; an unknown name errors with near matches."""
    found = set()
    for pat in patterns or ():
        hits = fnmatch.filter(module_names, pat) if any(c in pat for c in "*?[") else \
            [n for n in module_names if n == pat or n.startswith(pat + ".")]
        if not hits:
            near = difflib.get_close_matches(pat, module_names, n=5, cutoff=0.5)
            hint = f"; did you mean: {', '.join(near)}" if near else ""
            raise PlanError(f"{what}: no layer named '{pat}' in the model{hint}")
        found.update(hits)
    return found


def _min_keep(width: int, round_to: int, min_keep_frac: float) -> int:
    floor = max(round_to, math.ceil(min_keep_frac * width))
    floor = math.ceil(floor / round_to) * round_to
    return min(width, floor)


def _round_kept(width: int, kept: int, round_to: int) -> int:
    if round_to <= 1:
        return kept
    return min(width, math.ceil(kept / round_to) * round_to)


class MacsModel:
    """MACs of the traced model as a function of per-group removal counts (exact at the trace size)."""

    def __init__(self, graph: DependencyGraph, modules: dict):
        self.graph, self.modules = graph, modules
        self.base = {}  # layer -> (handler, module, output positions at the trace size)
        for name, info in graph.conv_info.items():
            m = modules[name]
            handler = handler_for(m)
            if handler is not None and handler.computes:
                self.base[name] = (handler, m, math.prod(info.out_hw) if info.out_hw else 1)
        # per group: (module, role) -> positions per channel
        self.effects = [[(mod, role, n) for mod, role, n in g.signature] for g in graph.groups]

    def macs(self, counts: dict | None = None) -> int:
        rm_in, rm_out = {}, {}
        for gid, r in (counts or {}).items():
            for mod, role, n in self.effects[gid]:
                if role.cuts_out:
                    rm_out[mod] = rm_out.get(mod, 0) + r * n
                if role.cuts_in:
                    rm_in[mod] = rm_in.get(mod, 0) + r * n
        total = 0
        for name, (handler, m, positions) in self.base.items():
            cin, cout = handler.widths(m)
            total += handler.macs(m, positions, cin - rm_in.get(name, 0), cout - rm_out.get(name, 0))
        return total

    def saved_per_channel(self) -> np.ndarray:
        """Per group: the MACs that removing one of its channels saves (exact for one group alone)."""
        base = self.macs()
        return np.array([base - self.macs({g.gid: 1}) for g in self.graph.groups], dtype=np.float64)


def check_selection(ratio=None, threshold=None, target_macs=None, round_to=8) -> None:
    """Validate the selection arguments before any work is done (``PruneSpec``'s bounds)."""
    PruneSpec(ratio=ratio, threshold=threshold, target_macs=target_macs, round_to=round_to)


def make_plan(graph: DependencyGraph, spec: PruneSpec | None = None, *, ratio: float | None = None,
              criterion: str = "bn", local: bool = False, threshold: float | None = None,
              target_macs: float | None = None, round_to: int = 8, min_keep: float = 0.1,
              overrides: list | None = None, seed: int = 0, stats: dict | None = None, cost_model=None,
              macs_exponent: float = 0.0) -> PruningPlan:
    """Choose channels to remove, as ``spec`` says (or a PruneSpec built from the keyword arguments).

    Exactly one of ``ratio`` (fraction of prunable channels; global unless ``local``), ``threshold`` (remove
    channels scoring below it, |gamma| for ``bn``) or ``target_macs`` (fraction of the original MACs) is used.
    ``overrides``: [(glob, ratio_or_None)] per-layer local ratios (None = exclude), NNI config_list style.
    ``cost_model``: with ``target_macs``, the cost the fraction applies to instead of MACs: an object with
    ``cost(counts, remove) -> float`` (e.g. ``latency.LatencyModel``: measured latency ratio); the search along
    the global ranking is the same, only what "meets the target" means changes.
    """
    if spec is None:
        spec = PruneSpec(ratio=ratio, threshold=threshold, target_macs=target_macs, criterion=criterion,
                         round_to=round_to, min_keep=min_keep, local=local, overrides=overrides,
                         macs_exponent=macs_exponent)
    if spec.target_latency is not None:
        raise PlanError("make_plan: target_latency is planned by prune.latency.plan_for_latency (target_macs "
                        "with a latency cost model)")
    if spec.macs_exponent == "search":  # a plan has no model to cut copies of and compare
        raise PlanError("make_plan: macs_exponent: expected a number, found 'search' (the search prunes a copy of "
                        "the model per candidate and compares their outputs: prune_model runs it)")
    if not graph.groups:
        raise PlanError("the model has no prunable channel group (every channel is fixed by the head, the input, "
                        "ignored layers or ops the tracer cannot follow)")
    macs_model = MacsModel(graph, dict(graph.model.named_modules()))
    sel = _Selection(graph, spec, seed, stats, macs_model)
    base_cost = cost_model.cost({}, {}) if cost_model is not None else None
    counts = _counts_for_target(sel, spec, macs_model, cost_model, base_cost)
    remove = sel.removal(counts)
    base_macs = macs_model.macs()
    est = macs_model.macs(counts) / base_macs if base_macs else 1.0
    cost_est = cost_model.cost(counts, remove) / base_cost if cost_model is not None else None
    all_importance = sum(float(s.sum()) for s in sel.scores)
    removed = sum(float(sel.scores[gi][remove[g.gid]].sum()) for gi, g in enumerate(graph.groups) if g.gid in remove)
    return PruningPlan(remove, spec.criterion, spec.ratio, spec.threshold, spec.target_macs, spec.plan_round_to,
                       est, cost_est, removed / all_importance if all_importance > 0 else 0.0)


class _Selection:
    """The scores, the one global ranking and the per-group floors that every target selects along."""

    def __init__(self, graph: DependencyGraph, spec: PruneSpec, seed: int, stats: dict | None,
                 macs_model: MacsModel):
        self.graph, self.spec, self.round_to = graph, spec, spec.plan_round_to
        self.modules = macs_model.modules
        rng = np.random.default_rng(seed)
        crit = get_criterion(spec.criterion)
        scores = [crit.scores(g, self.modules, rng, stats) for g in graph.groups]
        if crit.relative:  # layer scales differ: compare channels relative to their group's mean
            scores = [s / (s.mean() + 1e-12) for s in scores]
        self.scores = scores
        self.floors = [_min_keep(g.width, self.round_to, spec.min_keep) for g in graph.groups]
        self.local_ratio: dict[int, float | None] = {}
        for pat, r in spec.overrides or ():
            for g in graph.groups:
                if any(fnmatch.fnmatch(m, pat) or m == pat for m in g.modules()):
                    self.local_ratio[g.gid] = r
        self.ranks = self._global_ranks(self._ranking_keys(macs_model))
        self.total = sum(g.width for g in graph.groups)

    def _ranking_keys(self, macs_model: MacsModel) -> list:
        """The scores the global ranking sorts: with ``macs_exponent`` under a MACs or latency target, divided by
        (MACs one channel's removal saves / the channel-weighted mean)^exponent. A P5 channel saves ~1/30 of
        a stem channel's MACs: ranked by importance alone, the cut spends most of its damage where it saves least."""
        beta = self.spec.macs_exponent  # PruneSpec refuses one without a MACs or latency target
        if not beta:
            return self.scores
        saved = macs_model.saved_per_channel()
        widths = np.array([g.width for g in self.graph.groups], dtype=np.float64)
        mean = float((saved * widths).sum() / widths.sum())
        if mean <= 0:
            return self.scores
        return [s / max(c / mean, 1e-6) ** beta for s, c in zip(self.scores, saved)]

    def _global_ranks(self, keyed: list) -> list:
        # one global ranking; ties (e.g. a fresh model's γ = 1 everywhere) are spread evenly over the groups
        keys = []
        for gi, s in enumerate(keyed):
            within = np.empty(len(s))
            within[np.argsort(s, kind="stable")] = np.arange(len(s)) / len(s)
            keys += [(float(s[k]), within[k], gi) for k in range(len(s))]
        rank_order = sorted(range(len(keys)), key=lambda i: keys[i][:2])
        global_rank = np.empty(len(keys), dtype=np.int64)
        global_rank[rank_order] = np.arange(len(keys))
        ranks, start = [], 0
        for s in keyed:
            ranks.append(global_rank[start:start + len(s)])
            start += len(s)
        return ranks

    def counts_at(self, n_global: int | None = None, frac: float | None = None) -> dict:
        """Removal count per group: the ``n_global`` lowest ranked, or ``frac`` of each group, or the threshold."""
        counts = {}
        for g, s, rk, fl in zip(self.graph.groups, self.scores, self.ranks, self.floors):
            if g.gid in self.local_ratio:
                r_local = self.local_ratio[g.gid]
                want = 0 if r_local is None else int(r_local * g.width)
            elif frac is not None:
                want = int(frac * g.width)
            elif n_global is not None:
                want = int((rk < n_global).sum())
            else:
                want = int((s < self.spec.threshold).sum())
            want = min(want, g.width - fl)
            kept = _round_kept(g.width, g.width - want, self.round_to)
            counts[g.gid] = g.width - kept
        return counts

    def removal(self, counts: dict) -> dict:
        remove = {}
        for g, rk in zip(self.graph.groups, self.ranks):
            r = counts.get(g.gid, 0)
            if r > 0:
                remove[g.gid] = sorted(int(i) for i in np.argsort(rk, kind="stable")[:r])
        return remove


def _counts_for_target(sel: _Selection, spec: PruneSpec, macs_model: MacsModel, cost_model, base_cost) -> dict:
    if spec.threshold is not None:
        return sel.counts_at()
    if spec.ratio is not None and spec.local:
        return sel.counts_at(frac=spec.ratio)
    base_macs = macs_model.macs()

    def ok(n):
        c = sel.counts_at(n)
        if spec.ratio is not None:
            return sum(c.values()) >= spec.ratio * sel.total - 1e-9
        if cost_model is not None:
            return cost_model.cost(c, sel.removal(c)) <= spec.target_macs * base_cost
        return macs_model.macs(c) <= spec.target_macs * base_macs

    if not ok(sel.total):
        best = sel.counts_at(sel.total)
        got = macs_model.macs(best) / base_macs if base_macs else 1.0
        what = f"ratio {spec.ratio}" if spec.ratio is not None else f"target MACs {spec.target_macs}"
        if cost_model is not None and spec.ratio is None:
            what = f"target {spec.target_macs} of the {type(cost_model).__name__} cost (reached " \
                   f"{cost_model.cost(best, sel.removal(best)) / base_cost:.3f}x)"
        raise PlanError(f"{what} is unreachable: with the per-layer floor (keep >= max(round_to={sel.round_to}, "
                        f"{spec.min_keep:.0%})) at most {sum(best.values())}/{sel.total} channels can go "
                        f"(MACs {got:.3f}x)")
    lo, hi = 0, sel.total
    while lo < hi:  # fewest globally-ranked channels that meet the target
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return sel.counts_at(lo)


def removed_per_layer(graph: DependencyGraph, plan: PruningPlan) -> dict:
    """{layer name: sorted output channels (BN: features) the plan removes}: the plan in the model's own terms,
    which the prune report stores so nothing has to recover it from the weights."""
    by_gid = {g.gid: g for g in graph.groups}
    layers: dict[str, set] = {}
    for gid, positions in plan.remove.items():
        for k in positions:
            for s in by_gid[gid].channels[k]:
                if s.role.cuts_out or s.role.is_norm:
                    layers.setdefault(s.module, set()).add(int(s.index))
    return {name: sorted(idx) for name, idx in sorted(layers.items())}


def agp_schedule(final_ratio: float, steps: int, initial: float = 0.0) -> list[float]:
    """Cumulative ratios for iterative pruning (Zhu & Gupta's AGP cubic schedule)."""
    if steps < 1:
        raise PlanError(f"steps: expected >= 1, found {steps}")
    return [final_ratio + (initial - final_ratio) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]
