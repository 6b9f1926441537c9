"""The training loop shared by `pretrain` and `finetune`: AdamW, warmup + cosine, clipping, accumulation,
atomic checkpoints with automatic resume, a progress bar with samples/s and an MFU estimate, dvclive metrics.

Resume is exact on CPU: a checkpoint holds model, optimizer, scheduler, the torch/Python/NumPy RNGs and the
data position (epoch, batches consumed); the loader's order is a pure function of (seed, epoch) and the
masking generator is re-seeded from (seed, rank, step, micro-batch), so it needs no saved state. A run
killed at any point and rerun ends with the same weights, bit for bit, as one never interrupted.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from dvclive import Live
from scmrepo.exceptions import SCMError
from torch import nn
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from stages.common.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from stages.common.loader import make_loader
from stages.common.params import TrainStageParams as TrainParams

StepFn = Callable[[nn.Module, dict, torch.Generator], dict[str, torch.Tensor]]


def model_inputs(batch: dict) -> dict:
    """Loader batch (stages.common.loader) -> the model's encoder arguments."""
    return {"pixel_values": batch["image"], "image_present": batch["image_present"],
            "input_features": batch["mel"], "mel_lengths": batch["mel_lengths"],
            "text_ids": batch["text_ids"], "text_mask": batch["text_mask"]}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases and embeddings (every parameter with < 2 dims, plus embedding tables)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embedding_params or "pos" in name.split(".")[-1] else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def freeze_encoders(model: nn.Module) -> None:
    for encoder in (model.encoder.vision, model.encoder.text, model.encoder.audio):
        encoder.requires_grad_(False)


def data_stream(params: TrainParams, seed: int, epoch: int, skip: int) -> Iterator[tuple[int, int, dict]]:
    """Endless (epoch, batch index in epoch, global batch), starting at `skip` batches into `epoch`."""
    while True:
        loader = make_loader(params.shards, "train", params.batch_size, shuffle=params.shuffle,
                             num_workers=params.num_workers, seed=seed, epoch=epoch, drop_last=True)
        for index, batch in enumerate(loader):
            if index >= skip:
                yield epoch, index, batch
        epoch, skip = epoch + 1, 0


def world() -> tuple[int, int]:
    """(rank, world size); initialises the gloo/nccl process group when launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), size) if size > 1 else (0, 1)


def shard_of(batch: dict, rank: int, size: int) -> dict:
    """This process's rows of a global batch: every process reads the same stream, so the global batch (and
    its loss) is the one a single process would see."""
    if size == 1:
        return batch
    return {k: v[rank::size] for k, v in batch.items()}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def launch(devices: int, module: str, argv: list[str]) -> bool:
    """Re-run this stage under torchrun with `devices` processes; False when already inside one (or devices=1)."""
    if devices <= 1 or "LOCAL_RANK" in os.environ:
        return False
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc_per_node={devices}", "-m", module, *argv])
    return True


def measured_peak_flops(size: int = 512, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of this device, the MFU denominator."""
    g = torch.Generator().manual_seed(0)  # never touch the global RNG: resume must replay it exactly
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def prepare_checkpoints(checkpoints: Path, fingerprint: str) -> None:
    """Keep checkpoints only if they come from this exact configuration (a crashed run of the same job)."""
    marker = checkpoints / "fingerprint"
    if checkpoints.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        if any(checkpoints.glob("step-*")):
            print(f"discarding checkpoints in {checkpoints}: they belong to another configuration")
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def clear_checkpoints(checkpoints: Path) -> None:
    """After the final weights are saved, crash-recovery checkpoints have served their purpose."""
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True, exist_ok=True)


class Objectives(nn.Module):
    """step_fn as a module, so DistributedDataParallel can wrap the whole objective computation."""

    def __init__(self, model: nn.Module, step_fn: StepFn):
        super().__init__()
        self.model, self.step_fn = model, step_fn

    def forward(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.step_fn(self.model, batch, generator)


def fit(model: nn.Module, step_fn: StepFn, params: TrainParams, seed: int, name: str, fingerprint: str) -> int:
    """A training stage's loop: dvclive metrics in metrics/<name>/ and resumable checkpoints in checkpoints/<name>/
    (relative to the repository root, as dvc.yaml declares them). Returns this process's rank: rank 0 alone
    goes on to evaluate and save."""
    rank, _ = world()
    try:
        live = Live(f"metrics/{name}", resume=True, save_dvc_exp=False, dvcyaml=None) if rank == 0 else nullcontext()
    except SCMError as e:  # dvclive reads the git HEAD, which a `git init` without a commit lacks
        raise RuntimeError(f"{name}: dvclive needs the project's git repository to have a commit "
                           f"(git add -A && git commit -m init): {e}") from e
    with live as logger:  # None on ranks > 0 (nullcontext)
        train(model, step_fn, params, seed, Path("checkpoints") / name, logger, desc=name, fingerprint=fingerprint)
    return rank


def train(model: nn.Module, step_fn: StepFn, params: TrainParams, seed: int, checkpoints: Path,
          live=None, desc: str = "train", fingerprint: str = "") -> nn.Module:
    """Train to params.steps, resuming from the latest checkpoint in `checkpoints` made with `fingerprint`.

    Under torchrun (trainer.devices > 1) every process reads the same global batches and trains on its rows,
    with DistributedDataParallel averaging gradients; rank 0 alone writes checkpoints, metrics and progress.
    """
    rank, size = world()
    if params.batch_size % size:
        raise ValueError(f"batch_size {params.batch_size} is not divisible by {size} processes")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else \
        torch.device("cpu")
    model.to(device)
    if rank == 0:
        prepare_checkpoints(checkpoints, fingerprint)
    if params.freeze_encoders:
        freeze_encoders(model)
    optimizer = torch.optim.AdamW(param_groups(model, params.weight_decay), lr=params.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, params.warmup_steps, params.steps)
    generator = torch.Generator()  # re-seeded per micro-batch below: resume-exact on any number of processes
    step, epoch, consumed = 0, 0, 0
    if size > 1:
        torch.distributed.barrier()
    resume = latest_checkpoint(checkpoints)
    if resume is not None:
        state = load_checkpoint(resume, model, optimizer, scheduler)
        step, epoch, consumed = state["step"], state["extra"]["epoch"], state["extra"]["consumed"]
        if rank == 0:
            print(f"{desc}: resuming from {resume} (step {step})")
    model.train()
    objectives = Objectives(model, step_fn)
    if size > 1:
        objectives = torch.nn.parallel.DistributedDataParallel(objectives, find_unused_parameters=True)
    # bf16 autocast on CUDA; fp32 on CPU, where bf16 matmuls are ~400x slower (shared/KNOWN-ISSUES.md)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    stream = data_stream(params, seed, epoch, consumed)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = measured_peak_flops()
    progress = tqdm(total=params.steps, initial=step, desc=desc, unit="step", disable=rank != 0)
    while step < params.steps:
        start, samples, positions, totals = time.perf_counter(), 0, 0, {}
        for micro in range(params.accumulation):
            epoch, index, batch = next(stream)
            generator.manual_seed(hash((seed, rank, step, micro)) & 0x7FFF_FFFF_FFFF)
            batch = to_device(shard_of(batch, rank, size), device)
            with autocast:
                losses = objectives(batch, generator)
            loss = sum(model.config.loss_weights[k] * v for k, v in losses.items()) / params.accumulation
            loss.backward()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item() / params.accumulation
            samples += len(batch["ids"]) * size
            positions += size * (int(batch["image_present"].sum()) * model.config.num_patches + int(
                batch["text_mask"].sum()) + int(batch["mel_lengths"].sum()) // 4)
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step, consumed = step + 1, index + 1
        if size > 1:  # log the global-batch loss: per objective, the mean over the processes that had it
            names = sorted(model.config.loss_weights)  # the same list on every rank, whatever its batch held
            packed = torch.tensor([[totals.get(k, 0.0), float(k in totals)] for k in names])
            torch.distributed.all_reduce(packed)
            totals = {k: v / n for k, (v, n) in zip(names, packed.tolist(), strict=True) if n}
        elapsed = time.perf_counter() - start
        mfu = 6 * n_params * positions / elapsed / (peak * size)  # 6 N D: forward + backward FLOPs per position
        total = sum(model.config.loss_weights[k] * v for k, v in totals.items())
        progress.set_postfix(loss=f"{total:.3f}", samples_s=f"{samples / elapsed:.1f}", mfu=f"{mfu:.1%}")
        progress.update()
        if rank == 0 and live is not None and (step % params.log_every == 0 or step == params.steps):
            live.step = step
            live.log_metric(f"{desc}/loss", total)
            for k, v in totals.items():
                live.log_metric(f"{desc}/{k}", v)
            live.log_metric(f"{desc}/lr", scheduler.get_last_lr()[0])
            live.log_metric(f"{desc}/samples_per_s", samples / elapsed)
            live.log_metric(f"{desc}/mfu", mfu)
            live.make_summary()
        if rank == 0 and (step % params.checkpoint_every == 0 or step == params.steps):
            save_checkpoint(checkpoints, step, model, optimizer, scheduler, {"epoch": epoch, "consumed": consumed})
    progress.close()
    model.eval()
    return model
