"""LLM2Vec-Gen collapse diagnostics for a checkpoint or an untrained model (grace.llm2vec_gen.diagnostics).

    .venv/bin/python -m benchmarks.quality.llm2vec_gen_diagnostics --config llm2vec-gen             # untrained SmolLM2
    .venv/bin/python -m benchmarks.quality.llm2vec_gen_diagnostics --checkpoint OUT/checkpoint-120  # its run's config
    .venv/bin/python -m benchmarks.quality.llm2vec_gen_diagnostics --config llm2vec-gen --model tiny-random --texts 16

On N training texts of the run (its data order, after --skip; the backbone's responses from the
run's cache, missing ones generated): mean cosine to the teacher vs the best constant predictor,
mean pairwise cosine of the model's and the teacher's embeddings, the held-out cosine of a ridge
fit from the soft-token states to the targets, and with --decode N the unigram F1 of N
decodings against the backbone's answers (and against shuffled answers). An untrained model gets
the run's start first (standardisation, ridge head; --no-fit-start: the bare init). Prints the
figures; ``--output`` writes JSON (with the decoded samples).
Config overrides as for ``grace train``: ``--llm2vec_gen.teacher X``, ``--data.path F`` ...

``diagnose_run`` (also called by benchmarks.quality.llm2vec_gen_results) computes the figures;
grace.llm2vec_gen.diagnostics holds the measures themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def training_texts(config, n: int, skip: int = 0) -> list[str]:
    """Distinct encoder inputs of the first epoch of ``config``'s run, in its data order: the
    ``n`` that follow the first ``skip`` (fewer if the epoch holds fewer). With ``skip`` =
    max_steps * batch_size they are texts the run never trained on."""
    from grace.data.readers import DataFields, load_records
    from grace.llm2vec_gen.inputs import input_text
    from grace.training.loop import DataOrder

    d = config.data
    records = load_records(d.path, "unsupervised", DataFields(text=d.text_field), split=d.split)
    order = DataOrder(records, config.batch_size, config.seed, d.shuffle, 0, 1)
    texts: dict[str, None] = {}  # ordered set: repeated records count once
    for step in range(1, order.steps_per_epoch + 1):
        if len(texts) >= skip + n:
            break
        for record in order.batch(step):
            texts[input_text(config.llm2vec_gen.train_instruction, record)] = None
    return list(texts)[skip: skip + n]


def sts_spearman(encoder, path, pairs: int = 500, seed: int = 0) -> float:
    """Spearman correlation of cos(e_1, e_2) with the gold scores on a seeded subsample of
    ``pairs`` rows of an STS JSON-lines file (``sentence1``, ``sentence2``, ``score``), both
    sides encoded with ``encoder.encode`` (the query instruction, as symmetric tasks get it)."""
    import numpy as np
    from scipy.stats import spearmanr

    from grace.data.readers import json_lines

    rows = [row for _, row in json_lines(Path(path))]
    keep = np.random.default_rng(seed).permutation(len(rows))[:pairs]
    rows = [rows[i] for i in sorted(keep)]
    a = encoder.encode([r["sentence1"] for r in rows], convert_to_tensor=True, normalize_embeddings=True)
    b = encoder.encode([r["sentence2"] for r in rows], convert_to_tensor=True, normalize_embeddings=True)
    return float(spearmanr((a * b).sum(dim=-1).numpy(), [float(r["score"]) for r in rows]).statistic)


def diagnose_run(config, checkpoint=None, n: int = 256, seed: int = 0, skip: int = 0,
                 decode: int = 0, decode_tokens: int = 48, fit_start: bool = True,
                 sts_file=None, sts_pairs: int = 500) -> dict:
    """The figures for ``checkpoint`` (an LLM2Vec-Gen checkpoint folder) or, without one, for
    the untrained model ``config`` starts from, on ``n`` of its training texts (after the first
    ``skip``: ``training_texts``). The backbone's responses come from the
    run's response cache; missing ones are generated (and cached). With ``decode`` > 0 the first
    ``decode`` of the texts are also decoded from their soft prompts (greedy, ``decode_tokens``)
    and compared with the backbone's answers (unigram F1, paired vs shuffled); the pairs are
    returned under ``samples``. Without a checkpoint and with ``fit_start``, the untrained model
    first gets the start a run gives it before step 1 (``standardize``, ``align_init``: fitted on
    the run's first ``init_texts`` texts, grace.llm2vec_gen.head_fit). With ``sts_file`` (a dev
    split) the Spearman correlation on ``sts_pairs`` of its pairs is added (``sts_spearman``)."""
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
    from grace.llm2vec_gen.diagnostics import decoding_overlap, diagnose
    from grace.llm2vec_gen.head_fit import start_alignment_head
    from grace.llm2vec_gen.responses import ensure_run_responses, run_responses
    from grace.llm2vec_gen.teacher import load_teacher
    from grace.llm2vec_gen.trainer import new_model
    from grace.models.backbones import load_backbone

    g = config.llm2vec_gen
    teacher = load_teacher(g.teacher, g.teacher_rationale)
    if checkpoint is not None:
        encoder = LLM2VecGenEncoder.from_pretrained(str(checkpoint))
        model, tokenizer = encoder.model, encoder.tokenizer
    else:
        backbone, tokenizer = load_backbone(config.model.name, config.model.dtype)
        model = new_model(backbone, config, teacher)
    cache = run_responses(tokenizer, model.spec, g)

    def answers_to(texts: list[str]) -> list[str]:
        ensure_run_responses(model.backbone, tokenizer, texts, cache, g, seed=seed)
        return [cache[t].text for t in texts]

    if checkpoint is None and fit_start:  # the start training begins from (before step 1)
        start = training_texts(config, g.init_texts)
        start_alignment_head(model, tokenizer, teacher, start, answers_to(start), g)
    texts = training_texts(config, n, skip)
    answers = answers_to(texts)
    figures = diagnose(model, tokenizer, teacher, texts, answers, seed=seed)
    out = {"checkpoint": None if checkpoint is None else str(checkpoint),
           "model": config.model.name, "teacher": g.teacher, "skip": skip, **figures}
    encoder = LLM2VecGenEncoder(model, tokenizer)
    if sts_file:
        out["sts_spearman"] = sts_spearman(encoder, sts_file, sts_pairs, seed)
        out["sts_pairs"] = sts_pairs
    if decode:
        decoded = encoder.decode(
            texts[:decode], max_new_tokens=decode_tokens, instruction="", show_progress_bar=False)
        out.update(decoding_overlap(decoded, answers[:decode], seed=seed))
        out["samples"] = [{"text": t, "decoded": d, "answer": a}
                          for t, d, a in zip(texts, decoded, answers)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="an LLM2Vec-Gen checkpoint folder (or a run's output folder)")
    p.add_argument("--config", help="a YAML file or packaged config (default: the checkpoint's)")
    p.add_argument("--model", help="backbone of the untrained model (default: the config's)")
    p.add_argument("--texts", type=int, default=256, help="training texts embedded (default 256)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first N texts of the epoch (max_steps x batch_size: texts the run "
                        "never trained on)")
    p.add_argument("--decode", type=int, default=0,
                   help="also decode the first N texts and score them against the answers")
    p.add_argument("--decode-tokens", type=int, default=48, help="length of those decodings")
    p.add_argument("--no-fit-start", action="store_true",
                   help="untrained model: skip the standardisation/ridge start a run fits first")
    p.add_argument("--sts", help="an STS dev split (JSON lines: sentence1, sentence2, score): "
                                 "add the Spearman correlation on --sts-pairs of its pairs")
    p.add_argument("--sts-pairs", type=int, default=500, help="seeded subsample of --sts (500)")
    p.add_argument("--seed", type=int, default=0, help="the ridge split and the shuffled pairing")
    p.add_argument("--output", help="write the figures as JSON")
    args, extra = p.parse_known_args(argv)

    from grace.config.overrides import dotted_overrides
    from grace.config.schema import load_config
    from grace.errors import GraceInputError
    from grace.llm2vec_gen.checkpoint import resolve_folder

    try:
        overrides = dotted_overrides(extra)
        if args.model:
            overrides["model.name"] = args.model
        checkpoint = None
        if args.checkpoint:
            checkpoint = resolve_folder(args.checkpoint)
            if checkpoint is None:
                raise GraceInputError(f"{args.checkpoint}: not an LLM2Vec-Gen checkpoint")
        config_path = args.config or (str(checkpoint / "grace_config.yaml") if checkpoint else None)
        if config_path is None:
            raise GraceInputError("pass --checkpoint or --config")
        config = load_config(config_path, {"method": "llm2vec-gen", **overrides})
        figures = diagnose_run(config, checkpoint, n=args.texts, seed=args.seed, skip=args.skip,
                               decode=args.decode, decode_tokens=args.decode_tokens,
                               fit_start=not args.no_fit_start, sts_file=args.sts,
                               sts_pairs=args.sts_pairs)
    except GraceInputError as exc:
        print(f"llm2vec_gen_diagnostics: error: {exc}", file=sys.stderr)
        return 2
    for key, value in figures.items():
        if key == "samples":
            continue
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
