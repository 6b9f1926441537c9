"""params.yaml -> typed dataclasses, once, at each stage's edge.

OmegaConf merges the YAML onto the dataclass schema, so a typo'd key or a wrong type fails loudly
before any work starts. Command-line `key=value` overrides (OmegaConf dotlist) apply on top.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf


@dataclass
class DemoParams:
    n_records: int = 1680  # ~24 test records per modality subset (10% test split)
    n_fusion: int = 240  # records whose answer needs two modalities (group "fusion")
    n_corpus: int = 240
    image_size: int = 64
    sample_rate: int = 16000
    audio_seconds: float = 1.0
    n_shapes: int = 3  # classes (stages/demo.py ALL_SHAPES); conf/demo/hard.yaml: 8
    n_colors: int = 4  # conf/demo/hard.yaml: 8, with similar hues and pitches
    noise: float = 0.0  # pixel noise std / 128 and extra audio noise std / 0.3


@dataclass
class DataParams:
    sources: list[str] = field(default_factory=list)


@dataclass
class IngestParams:
    timeout_s: float = 10.0
    retries: int = 2
    processes: int = 1
    threads: int = 16
    shard_size: int = 1000
    max_audio_bytes: int = 50_000_000


@dataclass
class ValidateParams:
    min_side: int = 16
    max_pixels: int = 40_000_000
    sample_rate: int = 16000
    max_seconds: float = 10.0
    max_caption_chars: int = 512
    max_reject_fraction: float = 0.2
    near_duplicate_image_rms: float = 4.0  # 8x8 RGB thumbnails this close (0-255 levels) are one image; 0 = off
    near_duplicate_audio_db: float = 0.5  # 16x32 log-Mel grids this close (dB) are one sound; 0 = off
    dedup_text_only: bool = False  # also quarantine text-only records that repeat an earlier one's text and question


@dataclass
class TokenizerParams:
    vocab_size: int = 1024
    min_frequency: int = 2


@dataclass
class ShardParams:
    image_size: int = 64
    n_mels: int = 64
    n_fft: int = 400
    hop_length: int = 160
    max_text_tokens: int = 64
    samples_per_shard: int = 256


@dataclass
class SplitParams:
    """Read by tokenizer (it learns from train only) and shard: a record's split is a hash of its content group."""
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass
class TrainStageParams:
    """Settings of a training stage (pretrain, finetune, distill), used by stages.common.trainer."""

    shards: str = "data/shards"  # local folder or s3://bucket/prefix written by the shard stage
    steps: int = 200
    batch_size: int = 16  # global batch: split across processes when trainer.devices > 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    accumulation: int = 1
    checkpoint_every: int = 50
    freeze_encoders: bool = False
    num_workers: int = 0
    shuffle: int = 256
    log_every: int = 10
    modality_dropout: float = 0.0  # a multi-input sample keeps a random proper subset of its inputs this often
    modality_dropout_keep_groups: list[str] = field(default_factory=lambda: ["fusion"])  # never dropped
    # records whose inputs are not views of one content: never a contrastive pair (model.objectives)
    contrastive_skip_groups: list[str] = field(default_factory=lambda: ["fusion"])
    loss_weights: dict = field(default_factory=dict)  # this stage's lambda overrides of model.config.loss_weights


@dataclass
class DistillParams(TrainStageParams):
    """A training stage plus the KD loss of seed 001 section 2.4 and the student's shape."""

    alpha: float = 0.5  # weight of the soft (teacher) term; 1 - alpha goes to the hard labels
    temperature: float = 2.0
    student: dict = field(default_factory=dict)  # TrimodalConfig overrides applied to the teacher's config
    init_from_teacher: bool = True  # start from the teacher's leading layers and dimensions (sliced)


@dataclass
class QuantizeParams:
    calibration_batches: int = 8  # val batches whose activations fix the input scales and zero points
    batch_size: int = 32
    prune_amount: float = 0.0  # fraction of each Linear weight zeroed by L1 magnitude before quantizing
    max_val_drop: float = 0.0  # fragile Linears go back to float until val accuracy is within this of float
    max_fp32_linears: int = 8  # ... or this many are back
    int8_min_features: int = 128  # Linears with fewer inputs or outputs compute in float from int8 weights
    # speed measurement (reported, never deciding): per-Linear replay and whole-model latency at these batch
    # sizes; [] = none
    speed_batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    speed_new_tokens: int = 12  # greedy tokens per inference (evaluate.max_new_tokens)
    speed_repeats: int = 20  # interleaved timing rounds per Linear and batch size


@dataclass
class EvaluateParams:
    split: str = "test"
    batch_size: int = 32
    max_new_tokens: int = 12
    image_noise_std: float = 0.2  # robustness: Gaussian noise on pixels in [0, 1]
    audio_noise_std: float = 1.0  # robustness: Gaussian noise on log-Mel features
    latency_batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    latency_repeats: int = 20  # interleaved rounds: the per-round ratios need enough for quartiles
    threads: int = 0  # torch intra-op threads for the latency measurement; 0 = torch's default
    extra_bleu_order: int = 2  # an extra, labelled BLEU column with n-grams up to this order (0 = none)
    question_type_words: int = 3  # the question-type prior baseline keys questions by their first words


@dataclass
class TrainerParams:
    devices: int = 1  # > 1: the training stages re-launch themselves under torchrun (gloo on CPU, nccl on GPU)
    strategy: str = "ddp"  # with devices > 1: ddp (replicated) or fsdp (FSDP2, sharded; stages/common/distributed.py)


@dataclass
class Params:
    seed: int = 0
    split: SplitParams = field(default_factory=SplitParams)
    demo: DemoParams = field(default_factory=DemoParams)
    data: DataParams = field(default_factory=DataParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)
    shard: ShardParams = field(default_factory=ShardParams)
    # TrimodalConfig fields (conf/model/<preset>.yaml); validated by the config class itself
    model: dict = field(default_factory=dict)
    pretrain: TrainStageParams = field(default_factory=TrainStageParams)
    finetune: TrainStageParams = field(default_factory=TrainStageParams)
    distill: DistillParams = field(default_factory=DistillParams)
    quantize: QuantizeParams = field(default_factory=QuantizeParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    trainer: TrainerParams = field(default_factory=TrainerParams)


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> Params:
    """Read params.yaml (plus `a.b=c` overrides) into a validated `Params`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run stages from the repository root (where dvc.yaml is)")
    schema = OmegaConf.structured(Params)
    merged = OmegaConf.merge(schema, OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
