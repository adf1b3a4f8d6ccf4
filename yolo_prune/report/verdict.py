"""The report's verdict: how much mAP the shipped model kept at what speed, against the baseline and the
same-budget plain arm, and the warning when it lost too much."""
from __future__ import annotations


def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def verdict(rows: list[dict], backend: str, warn_map_drop: float) -> tuple[str, str | None, dict]:
    """("kept X% of mAP at Y× speed" sentence, warning or None, the numbers)."""
    base, final = rows[0], rows[-1]
    kept = final["mAP50-95"] / base["mAP50-95"] if base["mAP50-95"] > 0 else None
    kept50 = final["mAP50"] / base["mAP50"] if base["mAP50"] > 0 else None
    b_ms, f_ms = base["latency_ms"].get(backend), final["latency_ms"].get(backend)
    speed = b_ms / f_ms if b_ms and f_ms else None
    macs_ratio = final["macs"] / base["macs"] if base["macs"] else None
    params_ratio = final["params"] / base["params"] if base["params"] else None
    text = (f"The {final['stage']} model kept {fmt(kept and 100 * kept, '.1f', '?')}% of the baseline mAP50-95 "
            f"({fmt(kept50 and 100 * kept50, '.1f', '?')}% of mAP50) at {fmt(speed, '.2f', '?')}× {backend} "
            f"speed ({fmt(macs_ratio, '.2f', '?')}× MACs, {fmt(params_ratio, '.2f', '?')}× parameters).")
    warning = None
    if kept is None:
        warning = "The baseline mAP50-95 is 0, so the kept share cannot be computed: check the data and weights."
    elif kept < 1 - warn_map_drop:
        warning = (f"mAP50-95 dropped by {100 * (1 - kept):.1f}% (from {base['mAP50-95']:.4f} to "
                   f"{final['mAP50-95']:.4f}), more than the {100 * warn_map_drop:.0f}% allowed by warn_map_drop. "
                   "Fine-tune longer (epochs_finetune), prune less (target_macs / ratio) or sparse-train longer "
                   "(epochs_sparse, sr) so the removed channels matter less.")
    numbers = {"kept_map50_95": kept, "kept_map50": kept50, "speedup": speed, "backend": backend,
               "macs_ratio": macs_ratio, "params_ratio": params_ratio}
    return text, warning, numbers


def _where_it_was_lost(rows: list[dict], data: dict) -> str:
    """Which stage lost the mAP, and what to change for the chain that ran: the cut is measured from the model
    it was applied to (the sparse one, else the baseline)."""
    stage = {r["stage"]: r["mAP50-95"] for r in rows}
    before_cut = stage.get("sparse", rows[0]["mAP50-95"])
    lost_in_cut = before_cut - stage.get("pruned", before_cut)
    if lost_in_cut <= 0.01:
        return ("the cut was (nearly) free, so the loss is in the fade and the fine-tune: give both more epochs "
                "(epochs_sparse, epochs_finetune) or prune less (a larger target_macs)")
    if data.get("compensate") == "reconstruct":
        distil = "" if data.get("finetune_distill") else ", distil from the baseline (finetune_distill: 0.2)"
        return (f"the cut cost {lost_in_cut:.4f} mAP50-95 even with the least-squares refit and the fine-tune did "
                f"not win it back: fine-tune longer (epochs_finetune){distil} or prune less (a larger target_macs)")
    return (f"the cut itself cost {lost_in_cut:.4f} mAP50-95: sparse-train longer or use sparsity targeted so the "
            "removed channels are zero, or refit what is removed (compensate: reconstruct)")


def _against_plain_arm(text: str, warning: str | None, numbers: dict, rows: list[dict], data: dict):
    """Add the same-budget comparison (or say there is none) and, for a transferred baseline, what it means."""
    final, plain, transfer = rows[-1], data.get("plain"), data.get("transfer")
    notes = []
    if transfer:
        if warning and warning.startswith("The baseline mAP50-95 is 0"):
            warning = None  # expected of a new head: the note below says what the reference is
        notes.append(f"The baseline is the input model with a new, untrained head for {transfer['nc']} classes "
                     f"({transfer['summary']}), so its mAP is no reference; the plain arm is.")
    if plain:
        rel = final["mAP50-95"] / plain["mAP50-95"] if plain["mAP50-95"] > 0 else None
        numbers["vs_plain_arm"] = rel
        numbers["plain_arm_map50_95"] = plain["mAP50-95"]
        epochs = f"{plain['epochs']} epochs, " if plain.get("epochs") else ""
        text += (f" Against the same-budget plain fine-tune of the baseline ({epochs}mAP50-95 "
                 f"{plain['mAP50-95']:.4f}): {fmt(rel and 100 * rel, '.1f', '?')}%.")
        limit = 1 - float(data.get("warn_plain_drop", 0.02))
        if rel is not None and rel < limit:
            more = (f"It scores {100 * rel:.1f}% of what the same training without pruning reached, below the "
                    f"{100 * limit:.0f}% of warn_plain_drop: {_where_it_was_lost(rows, data)}.")
            warning = f"{warning} {more}" if warning else more
    else:
        numbers["vs_plain_arm"] = None
        text += (" No same-budget plain fine-tune arm was run (plain_arm: train adds one), so this does not show "
                 "whether pruning cost more than the training it got.")
    if notes:
        text += " " + " ".join(notes)
    return text, warning
