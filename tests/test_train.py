import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from yolo_prune.data.synthetic import make_synthetic
from yolo_prune.data.yolo import DataWarning, build_dataset, load_data_yaml, scan_dataset
from yolo_prune.models import checkpoint, load, record_layers
from yolo_prune.train import finetune, resume, sparse_train, train
from yolo_prune.train.config import resolve
from yolo_prune.train.losses import build_loss
from yolo_prune.train.sparsity import gammas, prunable_bns, sr_at

ROOT = Path(__file__).resolve().parents[1]

# yolov5n v6 architecture as the yolov5 repo's models/yolov5n.yaml (legacy anchor head)
YOLOV5N = {
    "nc": 3, "depth_multiple": 0.33, "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
                 [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
             [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
             [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
             [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]], [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]],
}
QUICK = {"workers": 0, "val": False, "warmup_epochs": 0, "nbs": 4, "mosaic": 0.0, "close_mosaic": 0, "ema": True,
         "deterministic": False}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "shapes", n_train=8, n_val=4, imgsz=64, nc=3, seed=1)


def _model(kind, tmp_path):
    if kind == "yolov8n":
        return load("yolov8n.yaml", nc=3)
    if kind == "yolov5n":
        p = tmp_path / "yolov5n.yaml"
        p.write_text(yaml.safe_dump(YOLOV5N))
        return load(p, nc=3)
    cfg = ROOT / "cfg" / "yolov4-tiny.cfg"
    if not cfg.is_file():
        pytest.skip(f"{cfg} missing (written with the darknet loader)")
    return load(cfg, nc=3)


@pytest.mark.parametrize("kind", ["yolov8n", "yolov5n", "yolov4-tiny"])
def test_loss_decreases_on_fixed_batch(kind, tmp_path, syn):
    torch.manual_seed(0)
    det = _model(kind, tmp_path).train()
    data = load_data_yaml(syn)
    ds = build_dataset(data, "train", 64, 4, resolve(QUICK), augment=False)
    batch = ds.collate_fn([ds[i] for i in range(4)])
    crit = build_loss(det, resolve(), 64)
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=5e-3)
    x = batch["img"].float() / 255
    losses = []
    for _ in range(8):
        loss, items = crit(det(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(items) == ({"box", "cls", "dfl"} if kind == "yolov8n" else {"box", "obj", "cls"})
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0] and min(losses[-3:]) < min(losses[:3]), losses


def test_anchor_loss_honours_scale_x_y(tmp_path):
    det = _model("yolov4-tiny", tmp_path)
    crit = build_loss(det, resolve(), 64)
    assert crit.darknet and crit.scale_xy == pytest.approx(det.scale_x_y)
    # scale_x_y 1.05 cannot reach a neighbour cell: one cell per matched anchor; yolov5 uses up to 3
    raw = [torch.zeros(1, 3, 64 // s, 64 // s, 8) for s in det.strides]
    targets = torch.tensor([[0, 1, 0.3, 0.3, 0.4, 0.4]])
    per_level = [len(t[0]) for t in crit.build_targets(raw, targets)]
    v5 = build_loss(_model("yolov5n", tmp_path), resolve(), 64)
    raw5 = [torch.zeros(1, 3, 64 // s, 64 // s, 8) for s in (8, 16, 32)]
    per_level5 = [len(t[0]) for t in v5.build_targets(raw5, targets)]
    assert max(per_level) <= 3 and sum(per_level) >= 1
    assert max(per_level5) > 3  # more cells than anchors: neighbour cells added


def test_bad_labels_skipped_and_counted(tmp_path, syn):
    root = tmp_path / "bad"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    src = syn.parent / "images" / "train"
    for k, name in enumerate(["a", "b", "c"]):
        (root / "images/train" / f"{name}.jpg").write_bytes((src / f"00000{k + 1}.jpg").read_bytes())
    (root / "images/train/broken.jpg").write_bytes(b"not an image")
    (root / "labels/train/a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"       # good
        "3 0.5 0.5 0.2 0.2\n"       # class >= nc
        "1 nan 0.5 0.2 0.2\n"       # NaN
        "1 -0.1 0.5 0.2 0.2\n"      # negative
        "1 0.5 0.5 0.2\n"           # wrong column count
        "0 0.5 0.5 0.2 0.2\n")      # duplicate
    (root / "labels/train/b.txt").write_text("2 0.3 0.3 0.1 0.1\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train",
                                                     "val": "images/train", "names": ["x", "y", "z"]}))
    data = load_data_yaml(root / "data.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(data, "train", 64, 2, resolve(QUICK))
    ours = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(ours) == 1  # ONE warning listing everything
    msg = str(ours[0].message)
    assert "1 unreadable images and 5 bad label lines" in msg and "broken.jpg" in msg and "a.txt: line 2" in msg
    rep = ds.scan_report
    assert rep["images"] == 3 and rep["labels"] == 2 and rep["missing_labels"] == 1
    assert len(rep["bad_lines"]) == 5 and rep["unreadable"][0].endswith("broken.jpg")
    assert sorted(ds.labels[0]["cls"].ravel().tolist()) == [0.0]  # a.jpg keeps its one good line
    assert not list(root.rglob("*.cache"))  # nothing written next to the data


def test_empty_dataset_stops_before_epoch_one(tmp_path, syn):
    root = tmp_path / "empty"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "images/train/a.jpg").write_bytes((syn.parent / "images/train/000001.jpg").read_bytes())
    (root / "labels/train/a.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train",
                                                     "val": "images/train", "names": ["x", "y", "z"]}))
    det = load("yolov8n.yaml", nc=3)
    with pytest.warns(DataWarning), pytest.raises(ValueError, match="no valid labels in 1 images"):
        train(det, root / "data.yaml", epochs=1, imgsz=64, batch=2, out_dir=tmp_path / "run", overrides=QUICK)
    assert not (tmp_path / "run" / "last.pt").exists()
    (root / "images/train/a.jpg").unlink()
    with pytest.raises(ValueError, match="no images found"):
        train(det, root / "data.yaml", epochs=1, imgsz=64, batch=2, out_dir=tmp_path / "run", overrides=QUICK)


def test_sparse_epoch_moves_gamma_toward_zero(tmp_path, syn):
    mean_gamma = {}
    for sr in (0.0, 0.05):
        torch.manual_seed(0)
        det = load("yolov8n.yaml", nc=3)
        bns = prunable_bns(det)
        before = gammas(bns).mean()
        res = train(det, syn, epochs=1, imgsz=64, batch=4, out_dir=tmp_path / f"sr{sr}",
                    overrides={**QUICK, "sr": sr, "max_steps": 1})
        mean_gamma[sr] = float(before - gammas(bns).mean())
        assert res["history"][0]["sr"] == sr
    # one nesterov SGD step at lr 0.01 (momentum 0.937): the L1 term alone moves every |γ| by 1.937*lr*sr
    assert mean_gamma[0.05] - mean_gamma[0.0] > 0.01 * 0.05
    assert (tmp_path / "sr0.05" / "gamma_hist.png").stat().st_size > 1000
    rows = list(csv.DictReader((tmp_path / "sr0.05" / "results.csv").open()))
    assert {"gamma<0.001", "gamma<0.01", "gamma<0.1", "loss_box", "sr"} <= set(rows[0])


def test_freeze_bn_trains_gamma_but_keeps_running_statistics(tmp_path, syn):
    moved = {}
    for freeze in (False, True):
        torch.manual_seed(0)
        det = load("yolov8n.yaml", nc=3)
        before = {k: v.clone() for k, v in det.state_dict().items()}
        train(det, syn, epochs=1, imgsz=64, batch=4, out_dir=tmp_path / f"f{freeze}",
              overrides={**QUICK, "ema": False, "freeze_bn": freeze, "bn_recalibrate": 2, "max_steps": 2,
                         "lr0": 0.1})
        after = det.state_dict()
        moved[freeze] = {kind: sum(int(not torch.equal(after[k], before[k])) for k in after if k.endswith(kind))
                         for kind in ("bn.running_mean", "bn.running_var", "bn.weight")}
    assert moved[True]["bn.running_mean"] == moved[True]["bn.running_var"] == 0  # no update, no recalibration
    assert moved[True]["bn.weight"] > 10  # γ still trains
    assert moved[False]["bn.running_mean"] > 10  # train-mode BN moves them: the test can fail


def test_targeted_sparsity_zeroes_exactly_what_the_cut_removes(tmp_path, syn):
    """γ of the channels a target-MACs cut removes reach exactly 0, so pruning afterwards changes no output."""
    from yolo_prune.prune.run import prune_checkpoint
    from yolo_prune.train.sparsity import targeted_masks

    torch.manual_seed(0)
    run = tmp_path / "targeted"
    seen = []
    # 8 images, batch 4: 2 optimizer steps per epoch; shrinking from epoch 1 (0-based) to 2/3 of 3 epochs
    res = sparse_train("yolov8n.yaml", syn, out_dir=run, hooks={"epoch_start": [lambda s: seen.append(s.epoch)]},
                       overrides={**QUICK, "epochs": 3, "imgsz": 64, "batch": 4, "sparsity": "targeted",
                                  "target_macs": 0.6, "target_start": 1, "target_zero_at": 2 / 3})
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [int(r["targeted"]) for r in rows] == [0, int(rows[1]["targeted"]), int(rows[2]["targeted"])]
    assert int(rows[2]["targeted"]) > 50 and seen == [0, 1, 2]
    trained = load(run / "last.pt")
    masks = targeted_masks(trained, 0.6, 16)
    bns = prunable_bns(trained)
    zeroed = sum(int((bns[n].weight.detach()[m] == 0).sum()) for n, m in masks.items())
    assert zeroed == int(rows[2]["targeted"]) == sum(int(m.sum()) for m in masks.values())
    live = torch.cat([bns[n].weight.detach()[~m] for n, m in masks.items()])
    assert (live != 0).all()  # only the chosen channels were shrunk
    rep = prune_checkpoint(run / "last.pt", tmp_path / "cut.pt", target_macs=0.6, round_to=16, imgsz=64,
                           compensate="exact")
    assert rep["macs_ratio"] <= 0.6
    for name, mask in masks.items():  # every BN lost exactly its zeroed channels
        assert rep["widths_after"][name][0] == rep["widths_before"][name][0] - int(mask.sum()), name
    assert rep["verification"]["max_rel_diff"] < 1e-4  # the cut removed constant channels only
    assert res["gamma"]["gamma<0.001"] > 0.2


def test_targeted_config_errors():
    with pytest.raises(ValueError, match="'target_macs'.*found None"):
        resolve({"sparsity": "targeted"})
    with pytest.raises(ValueError, match="'sparsity': expected l1 or targeted, found 'l2'"):
        resolve({"sparsity": "l2"})
    with pytest.raises(ValueError, match="'target_start'"):
        resolve({"sparsity": "targeted", "target_macs": 0.5, "epochs": 10, "target_start": 7})


def test_sr_schedules():
    cfg = {"sr": 1e-3, "epochs": 10, "sr_warmup": 2, "sr_schedule": "constant"}
    assert [sr_at(e, cfg) for e in (0, 1, 2, 9)] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    assert sr_at(2, {**cfg, "sr_schedule": "linear"}) == pytest.approx(1e-3)
    assert sr_at(6, {**cfg, "sr_schedule": "linear"}) == pytest.approx(0.5e-3)
    assert sr_at(6, {**cfg, "sr_schedule": "cosine"}) == pytest.approx(0.5e-3)
    assert sr_at(3, {**cfg, "sr": 0.0}) == 0.0


def test_resume_after_interrupted_epoch(tmp_path, syn):
    overrides = {**QUICK, "sr": 1e-3, "sr_schedule": "linear", "nbs": 8}  # 8 images, batch 8: 1 step per epoch
    run = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill_in_third_epoch(state):
        if state.epoch == 2:
            raise Killed

    det = load("yolov8n.yaml", nc=3)
    with pytest.raises(Killed):
        sparse_train("yolov8n.yaml", syn, out_dir=run, overrides={**overrides, "epochs": 4, "imgsz": 64, "batch": 8},
                     hooks={"after_backward": [kill_in_third_epoch]})
    saved = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert saved["epoch"] == 1 and len(saved["history"]) == 2  # epochs 1-2 kept, the killed one lost
    seen = []
    res = resume(run, hooks={"epoch_start": [lambda s: seen.append((s.epoch, s.sr, s.optimizer.param_groups[1]["lr"]))]})
    assert [e for e, _, _ in seen] == [2, 3] and res["epochs_done"] == 4
    cfg = resolve({**overrides, "epochs": 4})
    assert [sr for _, sr, _ in seen] == pytest.approx([sr_at(2, cfg), sr_at(3, cfg)])
    assert [lr for _, _, lr in seen] == pytest.approx([0.01 * (1 - 2 / 4 * 0.99), 0.01 * (1 - 3 / 4 * 0.99)])
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    final = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert final["ema_updates"] == 4 and final["optimizer"]["state"]  # one step per epoch, momentum kept
    assert len(final["history"]) == 4 and final["history"][:2] == saved["history"]
    with pytest.raises(ValueError, match="already finished"):
        resume(run)
    del det


def test_widths_survive_finetune_and_reload_with_teacher(tmp_path, syn):
    from yolo_prune.prune import prune_model

    det = load("yolov8n.yaml", nc=3)
    checkpoint.save(det, tmp_path / "dense.pt")
    prune_model(det, ratio=0.3, imgsz=64)
    widths = record_layers(det)
    assert widths != record_layers(load(tmp_path / "dense.pt"))  # really pruned
    checkpoint.save(det, tmp_path / "pruned.pt", meta={"stage": "prune"})
    res = finetune(tmp_path / "pruned.pt", syn, out_dir=tmp_path / "ft", teacher=tmp_path / "dense.pt",
                   overrides={**QUICK, "epochs": 1, "imgsz": 64, "batch": 4, "val": True, "val_max_images": 2})
    assert "loss_distill" in res["history"][0] and "mAP50-95" in res["history"][0]
    for name in ("last.pt", "best.pt"):
        assert record_layers(load(tmp_path / "ft" / name)) == widths
    meta = torch.load(tmp_path / "ft" / "best.pt", weights_only=True)["meta"]
    assert meta["stage"] == "finetune" and meta["epoch"] == 1
    with pytest.raises(ValueError, match="sr must be 0"):
        finetune(tmp_path / "pruned.pt", syn, out_dir=tmp_path / "ft2", overrides={"sr": 1e-3})


def test_unknown_key_did_you_mean():
    with pytest.raises(KeyError, match="did you mean 'sr_warmup'"):
        resolve({"sr_warmpu": 2})
    with pytest.raises(ValueError, match="expected constant, linear or cosine"):
        resolve({"sr_schedule": "step"})


def test_ddp_two_gloo_processes(tmp_path, syn):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(ROOT / "tools" / "sparse_train.py"), "--weights", "yolov8n.yaml", "--data", str(syn), "--epochs", "1",
           "--imgsz", "64", "--batch", "4", "--sr", "1e-3", "--out", str(out), "--no-val", "--workers", "0",
           "--set", "nbs=4", "warmup_epochs=0", "mosaic=0", "close_mosaic=0", "deterministic=false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("sparse epoch 1/1:") == 1  # rank 0 only
    state = torch.load(out / "last.pt", weights_only=True)["train_state"]
    assert state["ema_updates"] == 2  # 8 images / batch 4 = 2 steps, each process 2 images per step
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 1
    assert not list(out.glob(".*.tmp"))
    assert load(out / "last.pt").nc == 3


def test_distill_loss_zero_for_identical_outputs():
    from yolo_prune.train.distill import distill_loss

    raw = [torch.randn(2, 3, 4, 4, 8), torch.randn(2, 3, 2, 2, 8)]
    assert abs(float(distill_loss(raw, raw))) < 1e-5
    assert float(distill_loss([r + torch.randn_like(r) for r in raw], raw)) > 0.1
    af = {"boxes": torch.randn(2, 64, 10), "scores": torch.randn(2, 3, 10)}
    assert abs(float(distill_loss(af, af))) < 1e-5
    assert float(distill_loss({"boxes": torch.randn(2, 64, 10), "scores": torch.randn(2, 3, 10)}, af)) > 0.1
    with pytest.raises(ValueError, match="student scores has shape"):
        distill_loss({"boxes": af["boxes"], "scores": torch.randn(2, 4, 10)}, af)


def test_distill_loss_of_confident_negatives_is_zero_to_itself_and_never_negative():
    """Class logits of -10..-20 (probabilities 2e-9..5e-5, as a freshly built head's priors or a trained model's
    background): the entropy from clamped probabilities made a model's gap to itself negative."""
    from yolo_prune.train.distill import distill_loss

    g = torch.Generator().manual_seed(0)
    raw = [torch.rand(2, 3, 4, 4, 85, generator=g) * -10 - 10]
    assert float(distill_loss(raw, raw)) == 0.0
    af = {"boxes": torch.randn(2, 64, 10, generator=g), "scores": torch.rand(2, 80, 10, generator=g) * -10 - 10}
    assert float(distill_loss(af, af)) == 0.0
    nudged = [r + 0.01 * torch.randn(r.shape, generator=g) for r in raw]
    assert float(distill_loss(nudged, raw)) > 0
    assert float(distill_loss({**af, "scores": af["scores"] + 0.5}, af)) > 0


def test_recalibrate_bn_replaces_stale_statistics():
    from yolo_prune.train.bn import recalibrate_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.SiLU(),
                              torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))
    with torch.no_grad():  # stale statistics, as after weights moved faster than momentum 0.03 follows
        net[1].running_mean.fill_(5.0)
        net[4].running_var.fill_(100.0)
    x = torch.rand(8, 3, 16, 16)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    net.eval()
    assert recalibrate_bn(net, [x]) == 1
    assert not net.training and net[1].momentum == 0.1  # mode and momentum restored
    with torch.no_grad():
        eval_out = net(x)
        net.train()
        train_out = net(x)  # batch statistics of the same batch
    # eval with the recalibrated statistics = train mode on the batch they came from (var: unbiased vs biased)
    assert torch.allclose(eval_out, train_out, atol=0.05), (eval_out - train_out).abs().max()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())
    # uint8 batches (the loader's) are scaled to 0..1; no batch leaves the statistics alone
    before = net[1].running_mean.clone()
    assert recalibrate_bn(net, []) == 0 and torch.equal(net[1].running_mean, before)
    recalibrate_bn(net, [{"img": (x * 255).round().to(torch.uint8)}])
    assert torch.allclose(net[1].running_mean, before, atol=0.02)


def test_darknet_cli_chain_targeted_sparse_prune_finetune(tmp_path, syn):
    """Acceptance 4: the two training CLIs on a darknet cfg (random init, synthetic data), with targeted sparsity so
    that the cut in between removes only faded channels."""
    cfg = ROOT / "cfg" / "yolov4-tiny.cfg"
    common = ["--data", str(syn), "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--no-val",
              "--set", "warmup_epochs=0", "close_mosaic=0", "mosaic=0", "nbs=4"]

    def run(tool, *args):
        r = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    out = run("sparse_train.py", "--weights", str(cfg), *common, "--sparsity", "targeted", "--target-macs", "0.6",
              "--round-to", "8", "--out", str(tmp_path / "sparse"))
    assert "γ share" in out
    run("prune.py", "--weights", str(tmp_path / "sparse" / "last.pt"), "--target-macs", "0.6", "--round-to", "8",
        "--compensate", "exact", "--imgsz", "64", "--out", str(tmp_path / "p.pt"))
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["macs_ratio"] <= 0.6 and rep["verification"]["max_rel_diff"] < 1e-4
    # a darknet cfg cannot hold the border term, so the exact cut says so and writes no .cfg; the bias cut does
    assert "darknet cfg" in " ".join(rep["notes"]) and not (tmp_path / "p.cfg").exists()
    run("prune.py", "--weights", str(tmp_path / "sparse" / "last.pt"), "--target-macs", "0.6", "--round-to", "8",
        "--imgsz", "64", "--out", str(tmp_path / "pb.pt"))
    assert (tmp_path / "pb.cfg").is_file() and (tmp_path / "pb.weights").is_file()
    run("finetune.py", "--weights", str(tmp_path / "p.pt"), *common, "--teacher", str(tmp_path / "sparse" / "last.pt"),
        "--out", str(tmp_path / "ft"))
    assert record_layers(load(tmp_path / "ft" / "last.pt")) == record_layers(load(tmp_path / "p.pt"))
