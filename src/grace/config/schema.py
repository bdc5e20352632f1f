"""Training configuration: one dataclass per stage, every field documented where it is defined.

Override path (one only): defaults here -> YAML file (``--config``) -> command-line flags.
Flags are either the common short ones (``--model``, ``--data``, ``--mode`` ...) or any field as
``--section.field VALUE`` (for example ``--rollout.max_new_tokens 32``); values are parsed and
type-checked against the field's type. The whole config is saved with every checkpoint.

Every field is checked when the config is built, before anything loads (each section's ``checks()``,
below its fields): a value out of range, nan or inf is a ``GraceInputError`` naming field and value.

Defaults follow the GRACE reference run (GRACE paper, arXiv 2510.04506) except where noted. The contrastive
baselines (``method: infonce | simcse``, grace.contrastive.trainers) read ``baseline`` and, of ``optim``,
only weight_decay, lr_scheduler, warmup_steps and max_grad_norm; GRACE ignores ``baseline``.
LLM2Vec-Gen (``method: llm2vec-gen``, grace.llm2vec_gen) reads ``llm2vec_gen`` and the same four
``optim`` fields; its packaged config ``llm2vec-gen`` sets the paper's schedule.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from grace.config.checks import Check, at_least, choice, finite, fraction, non_negative, positive, rule
from grace.config.methods import METHODS, MODES, VARIANTS, lr_schedulers
from grace.errors import GraceInputError
from grace.models.backbones import DTYPES
from grace.models.pooling import POOLINGS, is_pooling
from grace.models.prompt import SYSTEM_PROMPT

PACKAGED_CONFIGS = Path(__file__).parent / "presets"  # usable by name: --config sup-nli
@dataclass
class ModelConfig:
    name: str = "smollm2-135m"  # packaged name, local folder or hub id (see grace.models.backbones)
    dtype: str = "float32"  # float32 | bfloat16 | float16 (weights and compute)
    lora: bool = False  # False: full fine-tuning (paper); True: peft LoRA (small machines)
    lora_rank: int = 16  # LoRA r
    lora_alpha: int = 32  # LoRA alpha
    lora_dropout: float = 0.0  # LoRA dropout
    lora_target_modules: str = "all-linear"  # peft target_modules
    trust_remote_code: bool = False  # only if the user asks for it
    gradient_checkpointing: bool = False  # trade compute for memory in the policy update
    mixed_precision: str = "auto"  # auto | no | bf16: autocast the training forward/backward in
    # bfloat16 (weights and optimizer state stay in model.dtype). auto: bf16 for float32 weights on
    # a CPU with bf16 matrix units (AMX / AVX512-BF16: the policy update ran 2.8x faster there,
    # benchmarks/speed/results-speed.md), no elsewhere (GPUs included: ask for bf16 there)

    def checks(self) -> list[Check]:
        return [
            rule(bool(self.name.strip()), "name", "a packaged name, folder or hub id", self.name),
            choice("dtype", self.dtype, tuple(DTYPES)),
            at_least("lora_rank", self.lora_rank, 1),
            at_least("lora_alpha", self.lora_alpha, 1),
            fraction("lora_dropout", self.lora_dropout),
            (self.mixed_precision in ("auto", "no", "bf16", "fp16"),
             f"mixed_precision '{self.mixed_precision}' (choose auto, no, bf16)"),
        ]


@dataclass
class DataConfig:
    path: str | None = None  # JSONL/JSON/CSV/Parquet/TXT file, "gensim:FILE", or hub dataset
    split: str = "train"  # split, for hub datasets
    text_field: str = "text"  # unsupervised text field
    query_field: str = "query"  # supervised fields
    positive_field: str = "positive"
    negative_field: str = "negative"
    shuffle: bool = True  # reshuffle every epoch (seeded)
    max_prompt_tokens: int = 1024  # prompts longer than this are truncated (ref), with a warning
    system_prompt: str = SYSTEM_PROMPT  # one prompt for every input (GRACE, arXiv 2510.04506)

    def checks(self) -> list[Check]:
        return [at_least("max_prompt_tokens", self.max_prompt_tokens, 1)]


@dataclass
class RolloutConfig:
    num_rollouts: int = 8  # G: sampled rationales per trained text (the group)
    temperature: float = 1.0  # of the trained rollouts (ref); > 0: greedy rollouts (0) would make
    # every rollout of a group identical (every advantage 0); log-probs are log softmax(logits / T)
    top_p: float = 1.0  # nucleus sampling of the trained rollouts, in (0, 1]
    context_temperature: float = 0.5  # the single anchor / query / negative rationale (ref); 0: greedy
    max_new_tokens: int = 64  # rationale length cap (ref 2048; ~256 is the knee; CPU 32-128)
    pooling: str = "mean"  # embedding of text + rationale behind the rewards: mean (paper: every
    # pooled token alike) | balanced (text mean and rationale mean, equal weight; beyond the
    # paper, grace.models.pooling.pool_sums) | text:W (text mean weight W, rationale mean 1 - W)
    encode_pooling: str | None = None  # the pooling the trained model is read with (GraceEncoder,
    # grace eval / serve / explain on its checkpoints); null: ``pooling``, the one its rewards
    # used. The rationales do not depend on it, only how text and rationale are weighed
    micro_batch_size: int = 16  # sequences per forward pass when scoring and updating
    engine: str = "fast"  # fast: grace.rollout.engine (one pass, shared prefill) | simple: HF generate + rescoring pass
    generation_batch_size: int = 64  # rollout rows decoded together (a group is never split)
    decode: str = "auto"  # the fast engine's decoding step: auto (static step where the model
    # allows, else HF's decoder) | static | compiled (the static step under torch.compile: 3-4 min
    # to build once per process on 2 cores; 0.75x the uncompiled step's speed on our machine) | hf
    dtype: str = "auto"  # auto: bfloat16 for a float32 policy on a CPU with bf16 matrix units
    # (AMX / AVX512-BF16), the policy itself elsewhere | policy: always the policy itself |
    # bfloat16 | float32: a copy of the policy in that dtype, refreshed every step (with a copy,
    # old log-probs are recomputed by the policy, so the first PPO ratio is exactly 1)

    def checks(self) -> list[Check]:
        return [
            at_least("num_rollouts", self.num_rollouts, 2, " (a group)"),
            positive("temperature", self.temperature, " for GRPO rollouts (0 would make every "
                      "rollout of a group identical, so every advantage 0)"),
            rule(finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p),
            non_negative("context_temperature", self.context_temperature),
            at_least("max_new_tokens", self.max_new_tokens, 1),
            at_least("micro_batch_size", self.micro_batch_size, 1),
            (is_pooling(self.pooling),
             f"pooling '{self.pooling}' (choose {', '.join(POOLINGS)} or text:W, 0 < W < 1)"),
            (self.encode_pooling is None or is_pooling(self.encode_pooling),
             f"encode_pooling '{self.encode_pooling}' (choose null, {', '.join(POOLINGS)} or text:W, "
             "0 < W < 1)"),
            choice("engine", self.engine, ("fast", "simple")),
            at_least("generation_batch_size", self.generation_batch_size, 1),
            choice("decode", self.decode, ("auto", "static", "compiled", "hf")),
            (self.dtype in ("auto", "policy", "float32", "bfloat16", "float16"),
             f"dtype '{self.dtype}' (choose auto, policy, float32, bfloat16)"),
        ]


@dataclass
class RewardConfig:
    variant: str = "reference"  # paper | reference | decoupled (GRACE paper, arXiv 2510.04506)
    consistency_weight: float = 0.2  # lambda_1
    hard_weight: float = 0.2  # lambda_2
    scale: float = 10.0  # multiplies the reward (= 1/tau, tau = 0.1 in the reference code)
    truncation_penalty: float = -1.0  # replaces the reward of a rollout cut at max_new_tokens
    penalize_truncation: bool = True  # False: cut rollouts keep their scaled reward (tiny random models)
    repetition_penalty: float = 0.0  # beyond the paper: each rollout's reward loses this times its
    # repetition rate (share of its token bigrams it already used: grace.rollout.quality). At
    # lr 3e-5 without it the policy fell into loops ("in a beautiful woman in a beautiful
    # woman ...") after ~120 steps (benchmarks/quality/results-budget.md). 0: off
    template_penalty: float = 0.0  # beyond the paper: each rollout's reward loses this times its
    # template rate (share of its token trigrams found in a rollout of another text of the
    # process's batch: grace.rollout.quality): against one frame for every text ("This text
    # conveys a scene of ..."), the drift of the supervised runs. 0: off
    copy_penalty: float = 0.0  # beyond the paper: each rollout's reward loses this times its copy
    # rate (share of its tokens inside a 4-gram of its own input text: grace.rollout.quality):
    # against rationales that repeat the text, the drift of the unsupervised runs (copy rate
    # 0.23 -> 0.39 over 45 minutes, benchmarks/quality/results-data/budget/READINGS.md). Tried
    # once (1, unsupervised, 50 steps, seed 0): copy rate 0.24 -> 0.17, dev-mini 65.9 -> 62.7. 0: off

    def checks(self) -> list[Check]:
        return [
            choice("variant", self.variant, VARIANTS),
            non_negative("consistency_weight", self.consistency_weight),
            non_negative("hard_weight", self.hard_weight),
            positive("scale", self.scale),
            rule(finite(self.truncation_penalty), "truncation_penalty", "finite", self.truncation_penalty),
            non_negative("repetition_penalty", self.repetition_penalty),
            non_negative("template_penalty", self.template_penalty),
            non_negative("copy_penalty", self.copy_penalty),
        ]


@dataclass
class OptimConfig:
    learning_rate: float = 1e-6  # AdamW, constant (paper/ref)
    weight_decay: float = 0.01
    lr_scheduler: str = "constant"  # a transformers.SchedulerType name (grace.config.methods.lr_schedulers)
    warmup_steps: int = 0  # rollout steps of linear warmup (schedulers with warmup)
    num_mini_batches: int = 4  # optimizer steps per rollout batch (ref: 64 groups / 4)
    clip_low: float = 0.2  # PPO clip epsilon below 1, in (0, 1)
    clip_high: float = 0.2  # PPO clip epsilon above 1, > 0
    dual_clip: float | None = 3.0  # dual-clip constant c > 1 for negative advantages; null disables
    kl_coef: float = 0.0  # low-variance KL to the frozen initial policy (ref: 0)
    normalize_advantage_std: bool = False  # divide group-centred rewards by the group std
    # the update runs each text's prompt once for its rollouts in a micro-batch (one packed row,
    # block attention mask; grace.rollout.shared_prompt): same log-probs, fewer positions. Needs
    # sdpa or eager attention, else (or false) every rollout row carries its prompt
    share_prompts: bool = True
    max_grad_norm: float = 1.0  # gradients are clipped to this total norm
    # torch's fused AdamW kernel (same update to float rounding): a GRACE step's update (2 texts
    # x 4) 3.93 -> 3.33 s on 2 Xeon cores. false: torch's default (a for-loop on CPU, foreach on
    # CUDA), e.g. for parameters the fused kernel refuses
    fused_adamw: bool = True
    # beyond the paper: InfoNCE on the pooled text + rationale embeddings, with gradient, in each
    # step's first optimizer step (grpo.contrastive_term; GRPO moves them only by tokens). 0: off
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.05  # its softmax temperature (the baselines' 0.05)
    # beyond the paper: the term's last N positives (detached) as extra negatives of every
    # query (grace.contrastive.memory; empty after a resume). 0: off, in-batch negatives only
    contrastive_memory: int = 0
    # beyond the paper: KL from the frozen initial model to the policy on the step's raw input
    # texts (every vocabulary entry and predicted token), added to the first optimizer step: holds
    # the language model while the contrastive term moves the hidden states (grpo.anchor_term). 0: off
    anchor_weight: float = 0.0

    def checks(self) -> list[Check]:
        return [
            positive("learning_rate", self.learning_rate),
            non_negative("weight_decay", self.weight_decay),
            choice("lr_scheduler", self.lr_scheduler, lr_schedulers()),
            at_least("warmup_steps", self.warmup_steps, 0),
            at_least("num_mini_batches", self.num_mini_batches, 1),
            rule(finite(self.clip_low) and 0 < self.clip_low < 1, "clip_low", "in (0, 1)",
                  self.clip_low),
            positive("clip_high", self.clip_high),
            rule(self.dual_clip is None or (finite(self.dual_clip) and self.dual_clip > 1),
                  "dual_clip", "> 1 and finite, or null", self.dual_clip),
            non_negative("kl_coef", self.kl_coef),
            positive("max_grad_norm", self.max_grad_norm),
            non_negative("contrastive_weight", self.contrastive_weight),
            positive("contrastive_temperature", self.contrastive_temperature),
            at_least("contrastive_memory", self.contrastive_memory, 0),
            non_negative("anchor_weight", self.anchor_weight),
        ]


@dataclass
class BaselineConfig:
    """The contrastive baselines (GRACE paper, arXiv 2510.04506): infonce (supervised) and simcse (unsupervised)."""

    learning_rate: float = 2e-5  # AdamW lr of the baselines, used instead of optim.learning_rate
    temperature: float = 0.05  # softmax temperature of InfoNCE and SimCSE (E5 / SimCSE papers)
    dropout: float = 0.1  # simcse only: attention dropout making the positives (Llama has no other)

    def checks(self) -> list[Check]:
        return [
            positive("learning_rate", self.learning_rate),
            positive("temperature", self.temperature),
            fraction("dropout", self.dropout),
        ]


@dataclass
class LLM2VecGenConfig:
    """LLM2Vec-Gen (LLM2Vec-Gen paper, arXiv 2603.10913): a frozen backbone, K soft tokens and two heads (grace.llm2vec_gen)."""

    num_tokens: int = 10  # K soft tokens appended to every input
    teacher: str = "all-MiniLM-L6-v2"  # packaged sentence-transformers model, an ST folder, or a grace model/checkpoint
    teacher_rationale: str = "none"  # grace teachers: none (mean pooling, SimCSE/InfoNCE) | greedy (GRACE)
    head_init: str = "scaled"  # scaled: p = alpha*h, alignment head 0 (grace.llm2vec_gen.model) | default: nn.Linear's
    align_init: str = "ridge"  # after head_init: ridge: the alignment head starts as a ridge fit on init_texts (grace.llm2vec_gen.head_fit) | none: as head_init left it
    standardize: bool = True  # the alignment head reads its input standardised by statistics of init_texts (stored in the checkpoint)
    standardize_momentum: float = 0.1  # with standardize: each training micro-batch moves those statistics by this share (0: fixed)
    init_texts: int = 512  # training texts (of the first steps) that standardize and align_init are fitted on
    align_head_learning_rate: float | None = 2e-5  # AdamW lr of the alignment head; null: learning_rate
    recon_weight: float = 1.0  # weight of L_recon (next-token CE of the response from the soft prompts)
    align_weight: float = 1000.0  # weight of L_align (MSE to the teacher's embedding of the response; paper 1: at 1 its gradient on the soft tokens was 3,800x smaller (0.0038 vs 14.25, results-llm2vec-gen.md) than L_recon's)
    learning_rate: float = 5e-5  # AdamW lr of the soft tokens and the reconstruction head, used instead of optim.learning_rate (paper 5e-4: the embeddings collapsed within 10 steps here)
    micro_batch_size: int = 8  # examples per forward/backward; a step accumulates the whole batch
    max_input_tokens: int = 512  # encoder input (text + soft tokens); longer texts lose their tail
    max_response_tokens: int = 512  # reconstruction targets are cut to this many tokens
    train_instruction: str = ""  # prepended (with a space) to every training query; the response answers the same text
    query_instruction: str = "Generate text that is semantically similar to this text:"  # encoding queries / symmetric tasks
    document_instruction: str = "Summarize the following passage:"  # encoding documents
    responses_file: str | None = None  # JSON-lines responses to train on (read only; grace.llm2vec_gen.responses); queries it lacks are generated
    cache: str | None = None  # SQLite generation cache the backbone's responses are kept in; null: $GRACE_CACHE/rationales.sqlite
    response_max_new_tokens: int = 500  # response length cap (paper: 500; CPU: 64-128)
    response_temperature: float = 0.0  # 0: greedy responses; > 0: sampled
    response_batch_size: int = 16  # queries answered together
    response_dtype: str = "auto"  # auto: the backbone as loaded | bfloat16 | float32: a copy in that dtype answers (bf16: several times faster on CPUs with bf16 units)
    decode_max_new_tokens: int = 64  # length of the decoded samples in samples.jsonl
    grad_norm_every: int = 0  # every N steps log each weighted loss's gradient norm on the soft tokens (first micro-batch; costs a backward each); 0: never

    def checks(self) -> list[Check]:
        lr = self.align_head_learning_rate
        return [
            at_least("num_tokens", self.num_tokens, 1),
            rule(bool(self.teacher.strip()), "teacher", "a model name or folder", self.teacher),
            choice("teacher_rationale", self.teacher_rationale, ("none", "greedy")),
            choice("head_init", self.head_init, ("scaled", "default")),
            choice("align_init", self.align_init, ("ridge", "none")),
            at_least("init_texts", self.init_texts, 5),
            fraction("standardize_momentum", self.standardize_momentum),
            rule(lr is None or (finite(lr) and lr > 0), "align_head_learning_rate",
                  "> 0 and finite, or null", lr),
            non_negative("recon_weight", self.recon_weight),
            non_negative("align_weight", self.align_weight),
            (self.recon_weight + self.align_weight > 0,
             "recon_weight and align_weight must be >= 0, not both 0"),
            positive("learning_rate", self.learning_rate),
            at_least("micro_batch_size", self.micro_batch_size, 1),
            (self.max_input_tokens > self.num_tokens, f"max_input_tokens must exceed "
             f"llm2vec_gen.num_tokens {self.num_tokens} (got {self.max_input_tokens})"),
            at_least("max_response_tokens", self.max_response_tokens, 1),
            at_least("response_max_new_tokens", self.response_max_new_tokens, 1),
            non_negative("response_temperature", self.response_temperature),
            at_least("response_batch_size", self.response_batch_size, 1),
            choice("response_dtype", self.response_dtype, ("auto", "float32", "bfloat16")),
            at_least("decode_max_new_tokens", self.decode_max_new_tokens, 1),
            at_least("grad_norm_every", self.grad_norm_every, 0),
        ]


@dataclass
class TrainConfig:
    method: str = "grace"  # grace | infonce (needs supervised) | simcse, llm2vec-gen (need unsupervised)
    mode: str = "unsupervised"  # supervised (triplets) | unsupervised (texts)
    output_dir: str = "runs/grace"  # checkpoints, metrics.jsonl, samples.jsonl
    batch_size: int = 64  # groups (baselines: examples) per step, over all processes
    max_steps: int = 100  # rollout steps
    max_minutes: float | None = None  # time budget: stop (and checkpoint) at the first step after
    # this many minutes of training steps, counted over the run's resumes (trainer_state's
    # train_seconds; loading, saving and logging are not counted); max_steps still caps the
    # steps and sets the learning-rate schedule. null: no budget
    save_every: int = 50  # checkpoint every N steps (and at the end)
    sample_every: int = 10  # log a few sample rationales every N steps
    num_samples_logged: int = 2  # how many sample rationales to log
    seed: int = 0  # seeds the data order, the sampling and dropout; in [0, 2**32)
    report_to: str = "none"  # trackers beside metrics.jsonl: none | tensorboard | wandb, ... (comma list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    llm2vec_gen: LLM2VecGenConfig = field(default_factory=LLM2VecGenConfig)

    def __post_init__(self) -> None:
        checks = [
            choice("method", self.method, METHODS),
            choice("mode", self.mode, MODES),
            rule(bool(str(self.output_dir).strip()), "output_dir", "a folder", self.output_dir),
            at_least("batch_size", self.batch_size, 1),
            at_least("max_steps", self.max_steps, 1),
            rule(self.max_minutes is None or (finite(self.max_minutes) and self.max_minutes > 0),
                  "max_minutes", "> 0 and finite, or null", self.max_minutes),
            at_least("save_every", self.save_every, 1),
            at_least("sample_every", self.sample_every, 0, " (0: never)"),
            at_least("num_samples_logged", self.num_samples_logged, 0),
            rule(0 <= self.seed < 2**32, "seed", "in [0, 2**32)", self.seed),
        ]
        for name in (f.name for f in dataclasses.fields(self)):  # each section's checks, as name.key
            if dataclasses.is_dataclass(section := getattr(self, name)):
                checks += [(ok, f"{name}.{what}") for ok, what in section.checks()]
        for ok, what in checks:
            if not ok:
                raise GraceInputError(f"invalid config: {what}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value, tp, where: str):
    """Parse/check ``value`` against the annotation ``tp`` (str, int, float, bool, Optional)."""
    args = typing.get_args(tp)
    if type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise GraceInputError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise GraceInputError(f"{where}: expected {tp.__name__}, got {value!r}")
        try:
            parsed = tp(value)
        except (TypeError, ValueError):
            raise GraceInputError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != parsed:
            raise GraceInputError(f"{where}: expected int, got {value!r}")
        return parsed
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise GraceInputError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls, values: dict, where: str, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GraceInputError(f"{where}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in values.items():
        tp, key = hints[name], prefix + name  # key: the dotted name, as in --section.field
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise GraceInputError(f"{where}: '{key}' must be a mapping")
            kwargs[name] = _build(tp, value, where, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, f"{where}: {key}")
    return cls(**kwargs)


def load_config(path: str | None = None, overrides: dict[str, object] | None = None) -> TrainConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (dotted keys)."""
    values: dict = {}
    source = "overrides"  # without a file, every value checked below came from overrides
    if path:
        file = Path(path)
        if not file.is_file() and (PACKAGED_CONFIGS / f"{path}.yaml").is_file():
            file = PACKAGED_CONFIGS / f"{path}.yaml"  # a packaged config by name
        if not file.is_file():
            names = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
            raise GraceInputError(f"config file not found: {path} (packaged configs: {names})")
        source = str(file)
        try:
            values = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise GraceInputError(f"{file}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(values, dict):
            raise GraceInputError(f"{file}: the config must be a mapping of keys to values")
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GraceInputError(f"override {key}: '{part}' is not a section")
        node[parts[-1]] = value
    return _build(TrainConfig, values, source)
