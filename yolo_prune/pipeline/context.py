"""What a pipeline run carries from stage to stage (``Context``), and the stage cache: a stage is skipped when its
folder's ``stage.json`` holds the same key (its parameters, its upstream stages' tokens, its input files)."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_write_text as _atomic_write_text

STAMP = "stage.json"
STAGE_VERSION = 1  # bump when a stage's outputs change meaning: old run folders are then recomputed

STAGE_DIRS = {
    "data": "0_data", "baseline": "0_baseline", "eval_baseline": "1_eval_baseline", "sparse": "2_sparse",
    "prune": "3_prune", "eval_pruned": "4_eval_pruned", "finetune": "5_finetune",
    "eval_finetuned": "6_eval_finetuned", "export": "7_export", "quantize": "7q_quantize", "benchmark": "8_benchmark",
    "transfer": "0_transfer", "plain": "5b_plain", "eval_plain": "6b_eval_plain",
}


def jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_signature(data_yaml: Path) -> dict:
    """The yaml's content plus file count and bytes of every split: cheap, and changes when images are added."""
    from ..data.yolo import load_data_yaml

    d = load_data_yaml(data_yaml)
    sig = {"yaml": file_digest(data_yaml)}
    for split in ("train", "val"):
        n = size = 0
        for src in d[split]:
            p = Path(src)
            files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p] if p.is_file() else []
            n += len(files)
            size += sum(f.stat().st_size for f in files)
            if p.is_dir() and p.parent.parent.joinpath("labels", p.name).is_dir():  # yolo layout: labels too
                labels = [f for f in p.parent.parent.joinpath("labels", p.name).rglob("*.txt")]
                n += len(labels)
                size += sum(f.stat().st_size for f in labels)
        sig[split] = [n, size]
    return sig


@dataclass
class StageResult:
    name: str
    folder: Path
    token: str
    outputs: dict
    result: dict
    skipped: bool
    seconds: float
    command: str = ""

    def out(self, key: str) -> Path:
        return self.folder / self.outputs[key]


def given_file(name: str, path) -> StageResult:
    """A model file the user gave (weights, plain_arm) as an upstream stage: its token is the file's digest."""
    p = Path(path)
    return StageResult(name, p.parent, file_digest(p), {"weights": p.name}, {}, True, 0.0)


@dataclass
class Context:
    """One run: the resolved config, the data, and every stage result so far.

    ``models`` maps a role (baseline, sparse, pruned, finetuned, plain) to (stage result, output key): the
    stage that last provided that model. ``stages``/``order``: the stages run (or reused) in this run."""
    cfg: dict
    out: Path
    device: str
    progress: bool
    n_stages: int = 0
    data: Path | None = None
    data_stage: StageResult | None = None
    data_files: dict = field(default_factory=dict)
    nc: int | None = None
    class_names: dict | None = None
    models: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    order: list = field(default_factory=list)
    auto_notes: list = field(default_factory=list)
    report: dict | None = None

    def use_data(self, data: Path) -> None:
        """The data yaml every stage reads from now on, and the class count / names the models get."""
        from ..data.yolo import load_data_yaml
        from ..train.api import resolve_nc

        self.data = data
        self.nc, self.class_names = resolve_nc(self.cfg["nc"], load_data_yaml(data)["names"], str(data))

    @property
    def data_up(self) -> list:
        """The data stage as an upstream (synthetic data only; a given data set enters the key as data_files)."""
        return [self.data_stage] if self.data_stage else []

    def model(self, role: str) -> StageResult:
        return self.models[role][0]

    def model_path(self, role: str) -> Path:
        res, key = self.models[role]
        return res.out(key)

    def record(self, res: StageResult) -> None:
        self.stages[res.name] = res
        self.order.append(res.name)

    def run_cached(self, stage) -> StageResult:
        """Run ``stage`` unless its folder already holds this exact stage (same key); record the result."""
        name = stage.name
        folder = self.out / STAGE_DIRS[name]
        command = stage.command(self)
        key_src = {"stage": name, "version": STAGE_VERSION, "params": jsonable(stage.params(self)),
                   "upstream": {u.name: u.token for u in stage.inputs(self)}, "files": stage.files(self)}
        key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
        header = f"[{len(self.order) + 1}/{self.n_stages}] {name} -> {folder}"
        stamp = _read_stamp(folder)
        if stamp and stamp.get("key") == key and all((folder / v).exists() for v in stamp["outputs"].values()):
            print(f"{header}: up to date, skipped", flush=True)
            res = StageResult(name, folder, stamp["token"], stamp["outputs"], stamp["result"], True,
                              float(stamp.get("seconds", 0.0)), command)
        else:
            print(f"{header}", flush=True)
            res = self._run_fresh(stage, folder, key, key_src, command)
        self.record(res)
        return res

    def _run_fresh(self, stage, folder: Path, key: str, key_src: dict, command: str) -> StageResult:
        """Empty the folder, run the stage, and stamp it last (a stage that failed half-way has no stamp)."""
        from tqdm import tqdm

        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        t0 = time.time()
        bar = tqdm(total=1, desc=f"stage {stage.name}", unit="stage", disable=not self.progress, leave=True)
        try:
            outputs, result = stage.run(self, folder)
        finally:
            bar.update(0)
        bar.update(1)
        bar.close()
        seconds = time.time() - t0
        outputs = {k: str(Path(v).resolve().relative_to(folder.resolve())) for k, v in outputs.items()}
        res = StageResult(stage.name, folder, uuid.uuid4().hex, outputs, jsonable(result), False, seconds, command)
        stamp = {"stage": stage.name, "key": key, "token": res.token, "inputs": key_src, "outputs": outputs,
                 "result": res.result, "seconds": seconds, "command": command,
                 "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        _atomic_write_text(folder / STAMP, json.dumps(stamp, indent=2))
        return res


def _read_stamp(folder: Path) -> dict | None:
    p = folder / STAMP
    if not p.is_file():
        return None
    try:
        s = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    return s if isinstance(s, dict) and {"key", "token", "outputs", "result"} <= set(s) else None
