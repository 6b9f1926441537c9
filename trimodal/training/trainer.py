"""The training loop shared by `pretrain`, `finetune` and `distill`: AdamW, warmup + cosine, clipping,
accumulation, atomic checkpoints with automatic resume, a progress bar with samples/s and MFU, dvclive metrics;
one process, or torchrun processes with DDP or FSDP (`trainer.strategy`, trimodal/training/distributed.py).

Resume is exact: a checkpoint holds model, optimizer, scheduler, and per rank the torch/Python/NumPy RNGs and the
data position (epoch, batches consumed); the loader's order is a pure function of (seed, epoch, rank) and the
masking generator is re-seeded from (seed, rank, step, micro-batch), so it needs no saved state. A run killed at
any point and rerun with the same number of processes ends with the same weights, bit for bit, as one never
interrupted.

Each rank streams its own share of the shards (trimodal/data/loader.py) with batch_size / processes samples per
step, so the global batch stays `batch_size`. Nothing in a step waits on the device: losses and FLOPs
accumulate as tensors and counters, and are read (and reduced across ranks) only every `log_every` steps.
MFU = FLOPs the model really did (model/flops.py counts them from the shapes of every matmul, convolution and
attention) / time / the device's peak (trimodal/training/mfu.py: bf16 datasheet peak on CUDA, measured fp32 on CPU).
"""
from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from dvclive import Live
from scmrepo.exceptions import SCMError
from torch import nn
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from trimodal.data.batches import (
    decisive_words,
    drop_modalities,
    noisy_questions,
    pairable,
    random_backgrounds,
    to_device,
)
from trimodal.data.loader import make_loader, read_question_answers
from trimodal.model.blocks import blocks
from trimodal.model.flops import FlopCounter
from trimodal.model.lockstep import is_aware, lockstep
from trimodal.model.losses import weighted_sum
from trimodal.params import Params, PathsParams, TrainerParams
from trimodal.params import TrainStageParams as TrainParams
from trimodal.training.checkpoint import full_weights, latest_checkpoint, load_checkpoint, save_checkpoint
from trimodal.training.distributed import World, all_sum, barrier, setup, teardown, touch_all, wrap
from trimodal.training.mfu import mfu, peak_flops

StepFn = Callable[[nn.Module, dict, torch.Generator], dict[str, torch.Tensor]]
Keep = Callable[[dict], bool]  # a sample's json (meta) -> whether a stage trains on it


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases and embeddings (every parameter with < 2 dims, plus embedding tables)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embedding_params or "pos" in name.split(".")[-1] else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def freeze(model: nn.Module, prefixes: list[str]) -> None:
    """Exactly the parameters named `prefix` or `prefix.*` are frozen, every other one trains (a model handed on
    from an earlier phase keeps no flags of it); a prefix that names none is a typo, not a no-op."""
    model.requires_grad_(True)
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        matched = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not matched:
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"frozen: {prefix!r} names no parameter of {type(model).__name__} (top level: {tops})")
        for name in matched:
            model.get_parameter(name).requires_grad_(False)


def language_only(meta: dict) -> bool:
    """A record of text without an image (e.g. the text corpus): a language-only batch's kind."""
    return "text" in meta.get("modalities", ()) and "image" not in meta.get("modalities", ())


def with_image(meta: dict) -> bool:
    return "image" in meta.get("modalities", ())


def _both(keep: Keep | None, kind: Keep, meta: dict) -> bool:
    return kind(meta) and (keep is None or keep(meta))


def record_stream(params: TrainParams, seed: int, position: dict, world: World, keep: Keep | None = None,
                  what: str = "train records") -> Iterator[tuple[dict, dict]]:
    """Endless (position after the batch, this rank's batch) of the records `keep` accepts (None: all), starting
    `consumed` batches into `epoch`. A filtered stream has no fixed epoch length; ranks still take one batch per
    step each, so they stay in step."""
    epoch, skip = position["epoch"], position["consumed"]
    while True:
        loader = make_loader(params.shards, "train", params.batch_size // world.size, shuffle=params.shuffle,
                             num_workers=params.num_workers, seed=seed, epoch=epoch, drop_last=True,
                             rank=world.rank, world=world.size, keep=keep)
        empty = True
        for index, batch in enumerate(loader):
            empty = False
            if index >= skip:
                yield {"epoch": epoch, "consumed": index + 1}, batch
        if empty:
            raise ValueError(f"not one batch of {params.batch_size // world.size} {what} in the train split of "
                             f"{params.shards} (rank {world.rank}): lower the stage's batch_size, or add such records")
        epoch, skip = epoch + 1, 0


def data_stream(params: TrainParams, seed: int, position: dict, world: World,
                keep: Keep | None = None) -> Iterator[tuple[dict, dict]]:
    """Endless (position, batch). With params.language_fraction, each micro-batch is drawn from one of two record
    streams, language-only or with an image, the choice a pure function of (seed, micro-batches drawn), the same on
    every rank; batch["language_fraction"] is the share drawn so far. Otherwise one stream of the records `keep`
    accepts."""
    if params.language_fraction is None:
        yield from record_stream(params, seed, position, world, keep,
                                 "train records" if keep is None else "train records this stage reads")
        return
    if not 0.0 <= params.language_fraction <= 1.0:
        raise ValueError(f"language_fraction must be within [0, 1], got {params.language_fraction}")
    start = {"language": {"epoch": 0, "consumed": 0}, "multimodal": {"epoch": 0, "consumed": 0}, "drawn": 0,
             "drawn_language": 0, **position.get("streams", {})}
    streams = {kind: record_stream(params, seed, start[kind], world, partial(_both, keep, test), what)
               for kind, test, what in (("language", language_only, "language-only records (text, no image)"),
                                        ("multimodal", with_image, "records with an image"))}
    where = {kind: start[kind] for kind in streams}
    drawn, language = start["drawn"], start["drawn_language"]
    while True:
        kind = "language" if random.Random(f"{seed}:mix:{drawn}").random() < params.language_fraction else "multimodal"
        where[kind], batch = next(streams[kind])
        drawn, language = drawn + 1, language + (kind == "language")
        # the measured share of language-only micro-batches since the phase began (resumes included)
        yield ({"streams": {**where, "drawn": drawn, "drawn_language": language}},
               {**batch, "language_fraction": language / drawn})


def prepare_checkpoints(checkpoints: Path, fingerprint: str) -> None:
    """Keep checkpoints only if they come from this exact configuration (a crashed run of the same job)."""
    marker = checkpoints / "fingerprint"
    if checkpoints.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        stale = sorted([*checkpoints.glob("step-*"), *checkpoints.glob(".step-*")])
        if stale:
            print(f"discarding checkpoints in {checkpoints}: they belong to another configuration")
        for path in stale:  # only this run's own: a phase's folder nested inside (pretrain/warmup) is its own
            shutil.rmtree(path)
    checkpoints.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def clear_checkpoints(checkpoints: Path) -> None:
    """After the final weights are saved, crash-recovery checkpoints have served their purpose."""
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True, exist_ok=True)


class Objectives(nn.Module):
    """step_fn as a module, so DDP / FSDP wrap the whole objective computation. With `touch`, every parameter gets
    a (zero) gradient on every rank, which FSDP's reduce-scatter needs when the model is one unit; with `in_step`,
    the step runs in lockstep with the other ranks (per-block units; trimodal/training/distributed.py)."""

    def __init__(self, model: nn.Module, step_fn: StepFn, touch: bool = False, monitors: tuple[str, ...] = (),
                 in_step: bool = False, device: torch.device | None = None):
        super().__init__()
        self.model, self.step_fn, self.touch, self.monitors = model, step_fn, touch, monitors
        self.in_step, self.device = in_step, device

    def forward(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the weighted total to backpropagate, each objective's loss and each monitor for the log)."""
        with lockstep(device=self.device) if self.in_step else nullcontext() as state:
            losses = self.step_fn(self.model, batch, generator)
        total = weighted_sum({k: v for k, v in losses.items() if k not in self.monitors},
                             self.model.config.loss_weights)
        if state is not None:  # the placeholders' outputs, times 0: their blocks' backward runs in step
            total = total + state.residual()
        return (touch_all(total, self.model) if self.touch else total), losses


def checkpoint_dir(paths: PathsParams, name: str) -> Path:
    """A training stage's resumable checkpoints, as dvc.yaml declares them (${paths.checkpoints}/<stage>)."""
    return Path(paths.checkpoints) / name


@dataclass(frozen=True)
class TrainJob:
    """What a training stage hands `fit` besides its model and step, built once per stage (`TrainJob.of`): the
    stage's name (its dvclive folder <paths.metrics>/<name>/ and checkpoint_dir(paths, name)), its training settings,
    the trainer's, the seed, and the fingerprint its checkpoints must match to be resumed. A phase with settings of
    its own (DeepSeek-VL's adaptor warm-up, PPO's reward model) is a job of the same stage with those settings."""

    name: str
    params: TrainParams
    trainer: TrainerParams
    seed: int
    fingerprint: str
    paths: PathsParams

    @classmethod
    def of(cls, params: Params, name: str, fingerprint: str, settings: TrainParams | None = None) -> TrainJob:
        """The job of stage `name`, trained with `settings` (None: its own section of params, params.<name>)."""
        settings = getattr(params, name) if settings is None else settings
        return cls(name, settings, params.trainer, params.seed, fingerprint, params.paths)

    def checkpoints(self, phase: str | None = None) -> Path:
        """A phase checkpoints in a folder of its own inside the stage's."""
        return checkpoint_dir(self.paths, self.name) / phase if phase else checkpoint_dir(self.paths, self.name)

    def desc(self, phase: str | None = None) -> str:
        return f"{self.name}/{phase}" if phase else self.name


def fit(model: nn.Module, step_fn: StepFn, job: TrainJob, *, phase: str | None = None, keep: Keep | None = None,
        summary: dict | None = None, every_rank: bool = False, monitors: tuple[str, ...] = ()) -> nn.Module | None:
    """A training stage's loop: dvclive metrics in <paths.metrics>/<name>/ and resumable checkpoints in
    job.checkpoints(phase), as dvc.yaml declares them. Returns the trained model on rank 0 (which alone
    goes on to evaluate and save) and None on the other ranks. The stage's `loss_weights` overrides go into the
    model's config first (and so into the saved model's config.json).
    A stage of several phases (DeepSeek-VL's pretrain: adaptor warm-up, then joint pretraining) fits each: a
    `phase` checkpoints in a folder of its own inside the stage's and logs its metrics as `<phase>/<metric>` in
    the stage's dvclive folder, and `every_rank` returns the model on every rank, for the next phase (under FSDP
    the shards gathered into a whole model on each rank, which the next phase shards again).
    `keep`: the train records the steps take (None: all); `summary`: numbers about the data (e.g. records skipped)
    for the stage's dvclive summary; `monitors`: numbers the step returns beside its losses that are logged, not
    trained on (e.g. DPO's reward margin)."""
    name, params = job.name, job.params
    unknown = set(params.loss_weights) - set(model.config.loss_weights)
    if unknown:
        raise ValueError(f"{name}.loss_weights names no objective: {sorted(unknown)} "
                         f"(known: {sorted(model.config.loss_weights)})")
    model.config.loss_weights.update({k: float(v) for k, v in params.loss_weights.items()})
    world = setup()
    try:
        live = (Live(str(Path(job.paths.metrics) / name), resume=True, save_dvc_exp=False, dvcyaml=None)
                if world.main else nullcontext())
    except SCMError as e:  # dvclive reads the git HEAD, which a `git init` without a commit lacks
        raise RuntimeError(f"{name}: dvclive needs the project's git repository to have a commit "
                           f"(git add -A && git commit -m init): {e}") from e
    try:
        with live as logger:  # None on ranks > 0 (nullcontext)
            if logger is not None and summary:
                logger.summary.update({f"{phase}/{k}" if phase else k: v for k, v in summary.items()})
            return train(model, step_fn, job, logger, phase=phase, world=world, keep=keep, every_rank=every_rank,
                         monitors=monitors)
    finally:
        # rank 0 evaluates and saves alone afterwards: no collective follows. A phase that hands its model on
        # (every_rank) keeps the process group for the next one: a second init after destroy_process_group can
        # read the first group's stale gloo addresses from torchrun's store ("Connection refused")
        if not every_rank:
            teardown(world)


def whole_model(model: nn.Module, objectives: nn.Module, world: World, everywhere: bool = False) -> nn.Module | None:
    """Collective under FSDP: the trained weights gathered into an ordinary (unsharded) model on rank 0, or on
    every rank (`everywhere`: a phase handing its model on to the next)."""
    weights = full_weights(objectives, everywhere)
    if not (world.main or everywhere):
        return None
    whole = type(model)(model.config)
    whole.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()})
    return whole.to(world.device)


def train(model: nn.Module, step_fn: StepFn, job: TrainJob, live=None, *, phase: str | None = None,
          world: World | None = None, keep: Keep | None = None, every_rank: bool = False,
          monitors: tuple[str, ...] = ()) -> nn.Module | None:
    """Train to job.params.steps, resuming from the latest checkpoint in job.checkpoints(phase) made with
    job.fingerprint and the same number of processes and strategy. Returns the model on rank 0, None on the others.
    `live`: the dvclive logger (None: none), where a phase's metrics are `<phase>/<metric>`; `keep`: the records
    taken (data_stream)."""
    params, seed, strategy = job.params, job.seed, job.trainer.strategy
    checkpoints, desc, prefix = job.checkpoints(phase), job.desc(phase), f"{phase}/" if phase else ""
    world = world or setup()
    if params.batch_size % world.size:
        raise ValueError(f"batch_size {params.batch_size} is not divisible by {world.size} processes")
    sharded = strategy == "fsdp" and world.size > 1
    model.to(world.device)
    if world.main:
        prepare_checkpoints(checkpoints,
                            f"{job.fingerprint}:{world.size}:{strategy if world.size > 1 else 'single'}")
    barrier(world)
    # a model may train what the recipe freezes (DeepSeek-VL: a tower that starts random; model/deepseek_vl/modeling.py)
    prefixes = model.frozen_for_recipe(params.frozen) if hasattr(model, "frozen_for_recipe") else params.frozen
    freeze(model, prefixes)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters()) - trained
    if world.main:
        kept = "" if prefixes == params.frozen else \
            f"; the recipe's {', '.join(params.frozen)}, less towers that start random"
        print(f"{desc}: training {trained:,} parameters, {frozen:,} frozen ({', '.join(prefixes) or 'none'}{kept})")
    if live is not None:
        live.summary.update({f"{prefix}trained_parameters": trained, f"{prefix}frozen_parameters": frozen})
    if job.trainer.activation_checkpointing:  # each block keeps its input only and recomputes in backward
        model.activation_checkpointing_enable()
    per_block = sharded and is_aware(step_fn)
    units = blocks(model) if per_block else None
    if sharded and world.main:
        print(f"{desc}: FSDP units: " + (f"{len(units)} blocks and the root" if per_block else
                                         "the whole model as one (this stage's step does not keep ranks in lockstep)"))
    objectives = wrap(Objectives(model, step_fn, touch=sharded and not per_block, monitors=monitors,
                                 in_step=per_block, device=world.device), strategy, world, units)
    # after wrap: shards. fused: one kernel for all parameters (CPU and CUDA) instead of a dozen small ops each
    optimizer = torch.optim.AdamW(param_groups(model, params.weight_decay), lr=params.lr, fused=True)
    scheduler = get_cosine_schedule_with_warmup(optimizer, params.warmup_steps, params.steps)
    generator = torch.Generator()  # re-seeded per micro-batch below: resume-exact on any number of processes
    step, position = 0, {"epoch": 0, "consumed": 0}
    resume = latest_checkpoint(checkpoints)
    if resume is not None:
        state = load_checkpoint(resume, objectives if sharded else model, optimizer, scheduler, world)
        step, position = state["step"], state["position"]
        if world.main:
            print(f"{desc}: resuming from {resume} (step {step})")
    model.train()
    # bf16 autocast on CUDA; fp32 on CPU, where bf16 matmuls measured ~400x slower than fp32 ones
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if world.device.type == "cuda" else nullcontext()
    stream = data_stream(params, seed, position, world, keep)
    # the words question noise spares: each training question's decisive one (batches.noisy_questions)
    spared = decisive_words(read_question_answers(params.shards, "train")) if params.question_noise > 0 else None
    progress = tqdm(total=params.steps, initial=step, desc=desc, unit="step", disable=not world.main)
    counter, meter = FlopCounter(), Meter(sorted([*model.config.loss_weights, *monitors]), world,
                                          peak_flops(world.device)[0])
    while step < params.steps:
        for micro in range(params.accumulation):
            position, batch = next(stream)
            generator.manual_seed(hash((seed, world.rank, step, micro)) & 0x7FFF_FFFF_FFFF)
            batch = drop_modalities(batch, params.modality_dropout, generator, params.modality_dropout_keep_groups)
            batch = noisy_questions(batch, params.question_noise, generator, model.config, spared)
            batch = random_backgrounds(batch, params.background_swap, generator)
            batch["pairable"] = pairable(batch, params.contrastive_skip_groups)  # for the contrastive objectives
            batch = to_device(batch, world.device)
            with counter:
                with autocast:
                    total, losses = objectives(batch, generator)
                (total / params.accumulation).backward()
            meter.add(losses, len(batch["ids"]), batch.get("language_fraction"))
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update()
        if step % params.log_every == 0 or step == params.steps:
            log(live, step, meter.read(counter.reset()), model, scheduler, progress, prefix)
        if step % params.checkpoint_every == 0 or step == params.steps:
            save_checkpoint(checkpoints, step, objectives if sharded else model, optimizer, scheduler, position,
                            world, sharded=sharded)
    progress.close()
    if sharded:
        model = whole_model(model, objectives, world, everywhere=every_rank)
    if model is not None:
        model.eval()
    return model if world.main or every_rank else None


class Meter:
    """Losses, samples and FLOPs since the last read, kept as device tensors and plain counters: a step never waits
    on the device. read() reduces them over the ranks with one collective (one host sync)."""

    def __init__(self, names: list[str], world: World, peak: float):
        self.names, self.world, self.peak = names, world, peak
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.samples, self.start = 0, time.perf_counter()
        self.language_fraction: float | None = None  # data_stream's measured mix, when it mixes

    def add(self, losses: dict[str, torch.Tensor], samples: int, language_fraction: float | None = None) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.samples += samples
        if language_fraction is not None:
            self.language_fraction = language_fraction

    def read(self, flops: int) -> dict[str, float]:
        """Mean of each objective over the micro-batches (all ranks) that had it; samples/s and MFU of the window."""
        device = self.world.device
        local = {**self.sums, **{f"n_{k}": torch.tensor(float(n), device=device) for k, n in self.counts.items()},
                 "samples": torch.tensor(float(self.samples), device=device),
                 "flops": torch.tensor(float(flops), device=device)}
        totals = all_sum(local, [*self.names, *(f"n_{k}" for k in self.names), "samples", "flops"], self.world)
        elapsed = time.perf_counter() - self.start
        means = {k: totals[k] / totals[f"n_{k}"] for k in self.names if totals[f"n_{k}"]}
        # every rank draws the same stream at each micro-batch (data_stream): the local share is the global one
        mixed = {} if self.language_fraction is None else {"language_fraction": self.language_fraction}
        self.sums, self.counts, self.samples, self.start = {}, {}, 0, time.perf_counter()
        return {**means, **mixed, "samples_per_s": totals["samples"] / elapsed,
                "mfu": mfu(totals["flops"], elapsed, self.peak, self.world.size)}


def log(live, step: int, read: dict[str, float], model: nn.Module, scheduler, progress, prefix: str = "") -> None:
    """The progress bar's postfix and, on rank 0, the dvclive metrics of one window."""
    losses = {k: v for k, v in read.items() if k in model.config.loss_weights}
    total = weighted_sum(losses, model.config.loss_weights) if losses else float("nan")
    progress.set_postfix(loss=f"{total:.3f}", samples_s=f"{read['samples_per_s']:.1f}", mfu=f"{read['mfu']:.1%}")
    if live is None:
        return
    live.step = step
    # unprefixed: the folder (metrics/<stage>/) names the stage, and the training stages' summaries share columns
    # (loss, samples_per_s, mfu, ...) in `dvc metrics show`
    for k, v in {"loss": total, **read, "lr": scheduler.get_last_lr()[0]}.items():
        live.log_metric(prefix + k, v)
    live.make_summary()
