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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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

    from grace.cli import _dotted_overrides
    from grace.config.schema import load_config
    from grace.errors import GraceInputError
    from grace.llm2vec_gen.checkpoint import resolve_folder
    from grace.llm2vec_gen.diagnose import diagnose_run

    try:
        overrides = _dotted_overrides(extra)
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
