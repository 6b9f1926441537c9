"""The typed schema of the parameters, and the one place their values live: conf/ (Hydra groups).

conf/ is the source of truth. params.yaml is its composition (what DVC tracks and `dvc repro` reads), written by
`python -m stages.common.params write` (or `dvc exp run`, which composes conf/ with -S overrides), never by hand;
`python -m stages.common.params check` and tests/test_params.py fail, naming the keys, when the two diverge.
The dataclasses below hold no defaults: a value missing from params.yaml is an error, not a silent fallback.
Each stage reads params.yaml through `load_params` once, at its edge; OmegaConf merges it onto the schema, so a
typo'd key or a wrong type fails loudly before any work starts. Command-line `key=value` overrides (OmegaConf
dotlist) apply on top. `defaults(overrides)` gives the typed composition of conf/ itself (tests, benchmarks).
`write` checks a composition against the schema too, so a wrong type is refused before params.yaml changes.
Configuration mistakes (an unknown group choice or key, a wrong type, a missing value) raise `ConfigError`, one
line naming the key (trimodal/config_errors.py); `run_main` prints it for an entry point, exit code 2.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from trimodal.config_errors import (
    ConfigError,
    dotted,
    expected_type,
    key_of,
    one_line,
    override_key,
    unknown_key,
    yaml_problem,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
WRITE = "python -m stages.common.params write"


@dataclass
class DemoParams:
    n_records: int  # ~24 test records per modality subset (10% test split)
    n_fusion: int  # records whose answer needs two modalities (group "fusion")
    n_corpus: int
    image_size: int
    sample_rate: int
    audio_seconds: float
    n_shapes: int  # classes (stages/demo.py ALL_SHAPES); conf/demo/hard.yaml: 8
    n_colors: int  # conf/demo/hard.yaml: 8, with similar hues and pitches
    noise: float  # pixel noise std / 128 and extra audio noise std / 0.3
    n_ood_questions: int = 0  # test-only records asking in held-out phrasings (group "ood-question")
    n_ood_renders: int = 0  # test-only image records in held-out renderings (group "ood-render")
    captions: str = "short"  # "a red circle"; "described": size and place too, in 10 words (conf/demo/described.yaml)


@dataclass
class PathsParams:
    """Where each artifact lives (conf/config.yaml `paths`). dvc.yaml interpolates the same values into the stages'
    deps and outs, so a path is written once; a stage reads only the paths its dvc.yaml entry names."""
    sources: str
    demo: str
    raw: str
    cache: str
    validated: str
    validate_report: str
    tokenizer: str
    shards: str
    pretrained: str
    finetuned: str
    instructed: str
    preferences: str
    teacher: str
    student: str
    student_int8: str
    report: str
    alignment_report: str
    metrics: str
    details: str
    checkpoints: str


@dataclass
class DataParams:
    sources: list[str]


@dataclass
class IngestParams:
    timeout_s: float  # one fetch attempt, wall clock (connect, redirects, whole body)
    fetch_timeout_s: float  # one URL, all attempts together (trimodal/data/fetch.py)
    retries: int
    processes: int
    threads: int
    shard_size: int
    max_audio_bytes: int
    force_ingest: bool  # fetch every remote URL again, fetched before or not (stages/ingest.py)
    media_ttl_s: float  # remote media fetched longer ago are fetched again; 0: never


@dataclass
class ValidateParams:
    min_side: int
    max_pixels: int
    sample_rate: int
    max_seconds: float
    max_caption_chars: int
    max_reject_fraction: float
    near_duplicate_image_rms: float  # 8x8 RGB thumbnails this close (0-255 levels) are one image; 0 = off
    near_duplicate_audio_db: float  # 16x32 log-Mel grids this close (dB) are one sound; 0 = off
    dedup_text_only: bool  # also quarantine text-only records that repeat an earlier one's text and question


@dataclass
class TokenizerParams:
    vocab_size: int
    min_frequency: int


@dataclass
class ShardParams:
    image_size: int
    n_mels: int
    n_fft: int
    hop_length: int
    max_text_tokens: int
    samples_per_shard: int


@dataclass
class SplitParams:
    """Read by tokenizer (it learns from train only) and shard: a record's split is a hash of its content group."""
    val_fraction: float
    test_fraction: float


@dataclass
class TrainStageParams:
    """Settings of a training stage (pretrain, finetune, distill), used by trimodal.training.trainer."""

    shards: str  # local folder or s3://bucket/prefix written by the shard stage
    steps: int
    batch_size: int  # global batch: split across processes when trainer.devices > 1
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    accumulation: int
    checkpoint_every: int
    # parameter-name prefixes that do not train (e.g. [encoder.vision, encoder.text, encoder.audio]; DeepSeek-VL's
    # stages: [vision, language_model] = the adaptor alone)
    frozen: list[str]
    # None: batches as the shards mix the records; a number: that share of the steps takes a batch of language-only
    # records (text, no image), the rest a batch of records with an image (DeepSeek-VL's joint pretraining: 0.7)
    language_fraction: float | None
    num_workers: int
    shuffle: int
    log_every: int
    modality_dropout: float  # a multi-input sample keeps a random proper subset of its inputs this often
    modality_dropout_keep_groups: list[str]  # never dropped
    question_noise: float  # a question word is dropped or replaced by a random token this often
    background_swap: float  # an image on a plain background gets a random one this often
    # records whose inputs are not views of one content: never a contrastive pair (model.objectives)
    contrastive_skip_groups: list[str]
    loss_weights: dict  # this stage's lambda overrides of model.config.loss_weights


@dataclass
class PretrainParams(TrainStageParams):
    """`pretrain`, plus DeepSeek-VL's adaptor warm-up (the paper's stage 1), run first when set (null: none)."""

    adaptor_warmup: TrainStageParams | None


@dataclass
class DistillParams(TrainStageParams):
    """A training stage plus the KD loss (docs/model.md "Distillation and quantization") and the student's shape."""

    alpha: float  # weight of the soft (teacher) term; 1 - alpha goes to the hard labels
    temperature: float
    student: dict  # overrides merged into the teacher's config (nested: a DeepSeek-VL sub-config's keys)
    init_from_teacher: bool  # start from the teacher's leading layers and dimensions (sliced)


@dataclass
class InstructionsParams:
    """The tasks as instructions (trimodal/alignment/instructions.py), shared by instruct, preferences and align."""

    options: int  # captions listed by the choice task (the record's own among them)
    # a training turn's template and question word is dropped or replaced by another template's word this often
    prompt_noise: float
    templates: dict  # task -> {"train": [...], "held_out": [...]} (instructions.check_templates)


@dataclass
class InstructParams(TrainStageParams):
    """A training stage on instructions plus the fine-tuning objectives."""

    eval_batch_size: int


@dataclass
class PreferencesParams:
    shards: str
    batch_size: int
    splits: list[str]  # the splits whose records get a pair: train teaches align, val measures it
    other_task: float  # the share of corruptions that are the record's answer to another of its tasks


@dataclass
class PPOParams:
    reward_steps: int  # Bradley-Terry steps of the reward model, before PPO
    kl_coef: float
    clip: float
    max_new_tokens: int  # the policy's sampled responses


@dataclass
class AlignParams(TrainStageParams):
    """A training stage on preference pairs: DPO (default) or a reward model + PPO (model/preference.py)."""

    method: str  # dpo | ppo
    replay: bool  # the fine-tuning objectives keep training beside the preference loss
    anchor: bool  # the replayed instruction turns target the reference's next-token distributions, not the answers
    pairs: str  # the pairs table (JSON lines): the preferences stage's, or yours
    beta: float
    eval_batch_size: int
    ppo: PPOParams


@dataclass
class QuantizeParams:
    shards: str  # the shard stage's output (local folder or s3://): calibration and timing use its val split
    calibration_batches: int  # val batches whose activations fix the input scales and zero points
    batch_size: int
    prune_amount: float  # fraction of each Linear weight zeroed by L1 magnitude before quantizing
    max_val_drop: float  # fragile Linears go back to float until val accuracy is within this of float
    max_fp32_linears: int  # ... or this many are back
    sensitivity_batches: int  # the first this many calibration batches score each Linear in the sweep
    int8_min_features: int  # Linears with fewer inputs or outputs compute in float from int8 weights
    # speed measurement (reported, never deciding): per-Linear replay and whole-model latency at these batch
    # sizes; [] = none
    speed_batch_sizes: list[int]
    speed_new_tokens: int  # greedy tokens per inference (evaluate.max_new_tokens)
    speed_repeats: int  # interleaved timing rounds per Linear and batch size


@dataclass
class TargetsParams:
    """The project's distillation and quantization targets, which evaluate's report judges (met or not)."""

    student_parameters: float  # the student's parameters at most this share of the teacher's
    student_accuracy: float  # on every row, the student's accuracy at least this share of the teacher's
    student_speedup: float  # the student at least this many times faster than the teacher ...
    speedup_batch_size: int  # ... at this batch size (one of latency_batch_sizes; absent: not judged)
    int8_size: float  # the INT8 weights file at most this share of the FP32 student's
    int8_drop_points: float  # on every row, INT8 accuracy at most this many points below the FP32 student's
    held_out_gap_points: float  # the teacher on a held-out group at most this many points below records like it


@dataclass
class EvaluateParams:
    shards: str  # the shard stage's output (local folder or s3://)
    split: str
    batch_size: int
    max_new_tokens: int
    image_noise_std: float  # robustness: Gaussian noise on pixels in [0, 1]
    audio_noise_std: float  # robustness: Gaussian noise on log-Mel features
    latency_batch_sizes: list[int]
    latency_repeats: int  # interleaved rounds: the per-round ratios need enough for quartiles
    threads: int  # torch intra-op threads for the latency measurement; 0 = torch's default
    extra_bleu_order: int  # an extra, labelled BLEU column with n-grams up to this order (0 = none)
    question_type_words: int  # the question-type prior baseline keys questions by their first words
    targets: TargetsParams


@dataclass
class PromoteParams:
    """`trimodal promote` (trimodal/registry.py): not a DAG stage, nothing in dvc.yaml reads it."""
    stage: str  # the GTO stage that means production
    metrics: list[str]  # HEAD's model must be lower on none of these and higher on one (test split, overall)


@dataclass
class TrainerParams:
    devices: int  # > 1: the training stages re-launch themselves under torchrun (gloo on CPU, nccl on GPU)
    strategy: str  # with devices > 1: ddp (replicated) or fsdp (FSDP2, sharded; trimodal/training/distributed.py)
    activation_checkpointing: bool = False  # blocks recompute their activations in backward (less memory)


@dataclass
class Params:
    seed: int
    split: SplitParams
    demo: DemoParams
    data: DataParams
    ingest: IngestParams
    validate: ValidateParams
    tokenizer: TokenizerParams
    shard: ShardParams
    # the model's settings (conf/model/<preset>.yaml): `family` (absent: trimodal) and its config's fields,
    # validated by the config class itself (model/families.py)
    model: dict
    pretrain: PretrainParams
    finetune: TrainStageParams
    instructions: InstructionsParams
    instruct: InstructParams
    preferences: PreferencesParams
    align: AlignParams
    distill: DistillParams
    quantize: QuantizeParams
    evaluate: EvaluateParams
    promote: PromoteParams
    trainer: TrainerParams
    paths: PathsParams


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> Params:
    """Read params.yaml (plus `a.b=c` overrides) into a validated `Params`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run stages from the repository root (where dvc.yaml is)")
    try:
        values = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not YAML: {yaml_problem(e)} (`{WRITE}` rewrites it from conf/)") from None
    return _typed(values, overrides)


def _typed(values, overrides: Sequence[str] = ()) -> Params:
    """`values` (then `overrides`) on the schema, as a `Params`; a mismatch is a ConfigError naming the key."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Params), values, _dotlist(overrides))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = override_key(e.full_key, overrides)
        known = [*dotted(OmegaConf.to_container(OmegaConf.structured(Params))),
                 *dotted(OmegaConf.to_container(OmegaConf.create(values)))]
        raise unknown_key(key, [k for k in known if k != key and not k.startswith(key + ".")]) from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} has no value: set it in conf/, then `{WRITE}`") from None
    except OmegaConfBaseException as e:  # a ValidationError, mostly: a value of the wrong type
        expected = expected_type(Params, e.full_key) if e.full_key else None
        if expected is None:
            raise ConfigError(f"{e.full_key or 'params'}: {one_line(e.msg)}") from None
        value = OmegaConf.to_container(e.value) if OmegaConf.is_config(e.value) else e.value
        raise ConfigError(f"{e.full_key}: expected {expected}, got {value!r}") from None


def _dotlist(overrides: Sequence[str]):
    """`key=value` overrides as one config, each parsed alone so that an unreadable one is named."""
    parsed = []
    for override in overrides:
        try:
            parsed.append(OmegaConf.from_dotlist([override]))
        except yaml.YAMLError as e:
            raise ConfigError(f"override {override!r} is not YAML: {yaml_problem(e)}") from None
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {override!r}: {one_line(e.msg)}") from None
    return OmegaConf.merge({}, *parsed)


def compose(overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR) -> dict:
    """conf/ composed by Hydra with `overrides` (group choices such as model=small, or values): a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
            return OmegaConf.to_container(hydra_compose(config_name="config", overrides=list(overrides)),
                                          resolve=True)
    except MissingConfigException as e:  # a group choice without its yaml: name the ones there are
        group, _, choice = (e.missing_cfg_file or "").rpartition("/")
        if not e.options:
            raise ConfigError(one_line(e)) from None
        raise ConfigError(f"{group}={choice}: no conf/{group}/{choice}.yaml; {group} is one of "
                          f"{', '.join(e.options)}") from None
    except HydraException as e:
        if not isinstance(e.__cause__, (ConfigKeyError, ConfigAttributeError)):
            raise ConfigError(one_line(e)) from None
        full_key = e.__cause__.full_key
        key = override_key(full_key, overrides)  # a value override of a key conf/ lacks
        others = [o for o in overrides if key_of(o) != key]
        if len(others) == len(overrides) or full_key.startswith(key + "."):
            # a mapping override (a.b={c: 1}) adding a key under a section conf/ holds: Hydra adds only with `+`
            raise ConfigError(f"unknown key {full_key}; to add a key conf/ does not hold, "
                              f"write +{full_key}=VALUE") from None
        raise unknown_key(key, dotted(compose(others, conf_dir))) from None
    except OmegaConfBaseException as e:  # an interpolation that does not resolve
        raise ConfigError(f"{e.full_key}: {one_line(e.msg)}") from None


def defaults(overrides: Sequence[str] = ()) -> Params:
    """The typed composition of conf/ (with Hydra `overrides`): what params.yaml holds when nothing was edited."""
    return _typed(compose(overrides))
