"""The one set of rules for a YOLO label line, shared by the training parser and the evaluation reader.

A line is ``class cx cy w h`` (normalised) or a polygon ``class x1 y1 x2 y2 ...`` (its bounding box is used).
Rejected: wrong column count, non-numeric, NaN/inf, a class that is not an integer in 0..nc-1, negative values,
values above 1 (1 % tolerance, clipped back), zero width or height, and exact duplicates of an earlier line.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MAX_LABEL_BYTES = 64 * 1024 * 1024  # a label file larger than this is not a label file


def check_label_line(parts: list[str], nc: int | None, seen: set) -> tuple[list[float] | None, str | None]:
    """(row [cls, cx, cy, w, h], None) for a good line, (None, reason) for a rejected one. ``seen`` holds the
    keys of the file's earlier lines (duplicates are rejected)."""
    if len(parts) > 6 and len(parts) % 2 == 1:  # polygon (segment) label: use its bounding box
        try:
            xy = np.array(parts[1:], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            return None, "non-numeric value"
        if not np.isfinite(xy).all():
            return None, "NaN or infinite value"
        x1, y1, x2, y2 = xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()
        parts = [parts[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    elif len(parts) != 5:
        return None, f"expected 5 values (class cx cy w h) or a polygon, found {len(parts)} columns"
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        return None, "non-numeric value"
    if not all(math.isfinite(v) for v in vals):
        return None, "NaN or infinite value"
    cls, box = vals[0], vals[1:]
    hi = (nc - 1) if nc is not None else None
    if cls != int(cls) or cls < 0 or (nc is not None and cls >= nc):
        return None, f"class {parts[0]} outside 0..{hi if hi is not None else 'nc-1'}"
    if min(box) < 0:
        return None, "negative value"
    if max(box) > 1.01:
        return None, f"value {max(box):g} > 1 (coordinates must be normalised to 0..1)"
    if box[2] <= 0 or box[3] <= 0:
        return None, "zero width or height"
    key = (int(cls), *(round(v, 6) for v in box))
    if key in seen:
        return None, "duplicate of an earlier line"
    seen.add(key)
    return [cls, *box], None


def read_label_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason) for a label file that is too large, unreadable or not UTF-8."""
    try:
        if path.stat().st_size > MAX_LABEL_BYTES:
            return None, f"label file larger than {MAX_LABEL_BYTES:,} bytes"
        return path.read_bytes().decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text (undecodable byte at offset {e.start})"
    except OSError as e:
        return None, f"unreadable label file ({e.__class__.__name__})"


def parse_labels(path: Path, nc: int | None) -> tuple[np.ndarray, list[str]]:
    """Valid rows (n, 5) [cls, cx, cy, w, h] clipped to 0..1, and one reason per rejected line ("line 3: ...")."""
    text, why = read_label_text(path)
    if text is None:
        return np.zeros((0, 5), np.float32), [why]
    rows, problems, seen = [], [], set()
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        row, reason = check_label_line(parts, nc, seen)
        if row is None:
            problems.append(f"line {n}: {reason}")
        else:
            rows.append(row)
    lb = np.array(rows, dtype=np.float32).reshape(-1, 5)
    lb[:, 1:] = lb[:, 1:].clip(0, 1)  # the 1 % tolerance above clipped back into the image
    return lb, problems
