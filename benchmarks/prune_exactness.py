#!/usr/bin/env python
"""How exactly does pruning constant channels preserve the output? One row per model x compensation mode.

  python benchmarks/prune_exactness.py [--shared ../shared]

30% of every group's channels get γ = 0 (β kept, or β = 0 for the 'off, β=0' column), exactly those are
pruned, and the max relative output difference at 64x96 is reported (boxes and scores apart for detectors).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchvision  # noqa: E402

from yolo_prune.models import load  # noqa: E402
from yolo_prune.prune.exactness import constant_channel_check  # noqa: E402


def randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.rand(m.num_features, generator=g) - 0.5
            m.running_mean.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(__file__).resolve().parents[1]
    models = {"yolov8n.yaml": lambda: load("yolov8n.yaml"), "yolo11n.yaml": lambda: load("yolo11n.yaml"),
              "yolov5n.pt (pretrained)": lambda: load(Path(a.shared) / "weights" / "yolov5n.pt"),
              "yolov4-tiny.cfg": lambda: load(root / "cfg" / "yolov4-tiny.cfg")}
    for name in ("resnet18", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "regnet_x_400mf"):
        models[name] = lambda name=name: getattr(torchvision.models, name)(num_classes=10).eval()
    print("| model | exact | bias (default) | off | off, β=0 |\n|---|---|---|---|---|")
    for name, build in models.items():
        cells = []
        for comp, zb in (("exact", False), ("bias", False), ("off", False), ("off", True)):
            torch.manual_seed(0)
            m = build()
            if "pretrained" not in name:
                randomize_bn(m)
            cells.append(f"{constant_channel_check(m, comp, zb)['max_rel_diff']:.1e}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
