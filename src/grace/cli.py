"""The ``grace`` command. It parses arguments and calls the library; it holds no logic.

    grace train --config configs/unsup-lee.yaml --model tiny-random --max-steps 2 --output-dir OUT
    grace train ... --rollout.max_new_tokens 32 --optim.learning_rate 1e-5   (any config field)
    grace demo                                                              (README command 1)
    grace decode --model OUT "some text"          (LLM2Vec-Gen: the text an embedding holds)
    grace explain "text A" "text B" [--model M]   (why two texts are close, token by token)
    grace serve --model M --port 8000             (HTTP embeddings API and web explorer)
    grace push OUT user/repo [--results R.json]   (upload a checkpoint and its model card)
    grace --version                               (also: python -m grace ...)

--model takes a training output folder too: its newest good checkpoint (named on stderr).
User errors (bad data, unknown model, missing file, unusable output path) print one line and
exit with code 2; Ctrl-C prints one line and exits with code 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grace import __version__
from grace.errors import GraceInputError

TOKENS_HELP = ("rationale length cap (default: the model's own: a training checkpoint's "
               "rollout.max_new_tokens, else 64)")

# Short flags -> dotted config keys.
SHORT_FLAGS = {
    "model": "model.name",
    "method": "method",
    "mode": "mode",
    "data": "data.path",
    "max_steps": "max_steps",
    "max_minutes": "max_minutes",
    "output_dir": "output_dir",
    "batch_size": "batch_size",
    "seed": "seed",
    "variant": "reward.variant",
    "lora": "model.lora",
    "dtype": "model.dtype",
    "report_to": "report_to",
}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (GRACE)",
                       description="Train with a YAML config plus overrides; any config field "
                       "can be set as --section.field VALUE.")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--model", help="packaged name (smollm2-135m, tiny-random), folder or hub id")
    p.add_argument("--method", help="training method: grace | infonce | simcse | llm2vec-gen")
    p.add_argument("--mode", help="supervised | unsupervised")
    p.add_argument("--data", help="data file (JSONL/JSON/CSV/Parquet/TXT), gensim:FILE or hub name")
    p.add_argument("--max-steps", type=int, dest="max_steps")
    p.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="time budget: stop and checkpoint after this many minutes of training "
                        "(over resumes); --max-steps still caps the steps")
    p.add_argument("--output-dir", dest="output_dir",
                   help="checkpoints and logs; a folder that holds checkpoints is resumed")
    p.add_argument("--override-config", dest="override_config", action="store_true",
                   help="rerun an existing output dir with settings that differ from its "
                        "recorded config")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="groups per step (global)")
    p.add_argument("--seed", type=int)
    p.add_argument("--variant", help="reward variant: paper | reference | decoupled")
    p.add_argument("--lora", action="store_const", const=True, help="train a LoRA adapter")
    p.add_argument("--dtype", help="float32 | bfloat16")
    p.add_argument("--report-to", dest="report_to",
                   help="trackers beside metrics.jsonl: none (default) | tensorboard | wandb ...")


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the embedded default: short unsupervised GRACE on SmolLM2, "
                       "Lee similarity before and after")
    p.add_argument("--config", default=None, help="YAML config (default: the packaged demo config)")
    p.add_argument("--output-dir", default="runs/demo", dest="output_dir")
    p.add_argument("--max-steps", type=int, default=None, dest="max_steps")
    p.add_argument("--model", default=None)


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate an encoder on an MTEB-style suite (scores by mteb)",
                       description="Run a suite of local MTEB tasks (grace.evaluation.suite) and "
                       "write the scores as JSON.")
    p.add_argument("--model", required=True,
                   help="packaged name, checkpoint, training output folder (its newest good "
                        "checkpoint), model folder or hub id")
    p.add_argument("--rationale", default="greedy",
                   help="none | greedy | sampled | echo (the text itself as the rationale: the copy baseline)")
    p.add_argument("--suite", default="lite",
                   help="lite (test splits: the final table) | dev (training/dev splits only: choose settings here) | dev-mini (four dev tasks, minutes: training curves)")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="folder laid out like shared/data (Lee runs without one)")
    p.add_argument("--output", default=None,
                   help="results JSON file (checked before the run; missing folders are made)")
    p.add_argument("--full", action="store_true", help="whole test sets instead of the subsamples")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None,
                   help=TOKENS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", dest="cache", action="store_false", help="no rationale cache")
    p.add_argument("--capability", action="store_true", help="also evaluate general abilities")
    p.add_argument("--dtype", default="float32",
                   help="float32 | bfloat16 (bf16 is several times faster on CPUs with bf16 units)")
    p.add_argument("--pooling", default=None, type=pooling_type,
                   help="mean (paper: every text and rationale token alike) | balanced (text mean "
                        "and rationale mean, equal weight) | text:W (text mean weight W, rationale "
                        "mean 1 - W); default: the model's own (a checkpoint's "
                        "rollout.encode_pooling, else the pooling it was trained with; mean)")
    p.add_argument("--system-prompt", dest="system_prompt", default=None,
                   help="system message every text is encoded under (default: the model's own: a "
                        "checkpoint's trained prompt, else the paper's)")


def pooling_type(value: str) -> str:
    """argparse type of a pooling (grace eval --pooling, benchmarks' --reading): one that
    grace.models.pooling.pool_sums knows, else its error as argparse's."""
    from grace.models.pooling import text_share

    try:
        text_share(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _decode_parser(sub) -> None:
    p = sub.add_parser("decode", help="LLM2Vec-Gen: decode texts' embeddings back into text",
                       description="Greedy decoding by the frozen LM from each text's soft "
                       "prompts: the text its embedding holds. One line per text.")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="texts to encode and decode")
    p.add_argument("--model", required=True,
                   help="LLM2Vec-Gen checkpoint or training output folder (its newest good "
                        "checkpoint)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=64)
    p.add_argument("--instruction", default=None,
                   help="instruction before each text (default: the checkpoint's query instruction)")
    p.add_argument("--document", action="store_true",
                   help="use the checkpoint's document instruction instead")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16")


def _explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="why two texts are close: the cosine split over their tokens",
                       description="Encode two texts, print their rationales, the cosine and each "
                       "token's exact share of it (grace.explain.pair).")
    p.add_argument("text_a", metavar="TEXT_A")
    p.add_argument("text_b", metavar="TEXT_B")
    p.add_argument("--model", default="smollm2-135m",
                   help="packaged name, grace or LLM2Vec-Gen checkpoint or training output "
                        "folder, sentence-transformers folder")
    p.add_argument("--rationale", default="greedy", help="greedy | none")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None,
                   help=TOKENS_HELP + " (and of an LLM2Vec-Gen model's decodings)")
    p.add_argument("--top-k", dest="top_k", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="no rationale cache")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16")


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="HTTP embeddings API (OpenAI shape) and the web explorer",
                       description="Serve /v1/embeddings, /v1/explain, /health, the explorer "
                       "page at /, TEI's /embed, /tokenize and /info, and /metrics (grace.server).")
    p.add_argument("--model", required=True, help="what GraceEncoder.from_pretrained loads")
    # default=None: the defaults live once, in grace.server.ServerConfig
    p.add_argument("--host", default=None, help="default: ServerConfig.host (127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default: ServerConfig.port (8000)")
    p.add_argument("--rationale", default=None, help="none | greedy (default: ServerConfig.rationale)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None,
                   help="rationale length cap (default: ServerConfig.max_new_tokens)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: ServerConfig.dtype)")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="no rationale cache")
    p.add_argument("--max-texts", dest="max_texts", type=int, default=None,
                   help="texts per request (default: ServerConfig.max_texts)")
    p.add_argument("--max-chars", dest="max_chars", type=int, default=None,
                   help="characters per text (default: ServerConfig.max_chars)")
    p.add_argument("--max-batch", dest="max_batch", type=int, default=None,
                   help="texts encoded together across concurrent requests")
    p.add_argument("--max-batch-tokens", dest="max_batch_tokens", type=int, default=None,
                   help="input tokens per model call (default: ServerConfig.max_batch_tokens)")
    p.add_argument("--max-input-tokens", dest="max_input_tokens", type=int, default=None,
                   help="tokens per text; more -> 413 (default: ServerConfig.max_input_tokens)")
    p.add_argument("--max-pending-texts", dest="max_pending_texts", type=int, default=None,
                   help="texts accepted and not yet answered; more -> 429 "
                   "(default: ServerConfig.max_pending_texts)")


def _push_parser(sub) -> None:
    p = sub.add_parser("push", help="upload a checkpoint or saved model to the Hugging Face Hub",
                       description="Upload a model folder with its model card (grace.encoders.hub): "
                       "weights, tokenizer, configs; never the optimizer or trainer state. The "
                       "token is HF_TOKEN's or the one `hf auth login` stored.")
    p.add_argument("folder", metavar="OUT",
                   help="checkpoint, saved model folder, or training output folder (its newest "
                        "good checkpoint)")
    p.add_argument("repo_id", metavar="REPO_ID", help="hub repo, e.g. user/grace-smollm2 (created "
                   "if missing)")
    p.add_argument("--results", default=None,
                   help="grace eval --output JSON for the card's model-index (default: "
                        "OUT's eval_results.json if it scores OUT)")
    p.add_argument("--private", action="store_true", default=None, help="create the repo private")
    p.add_argument("--message", default=None, help="commit message")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grace", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"grace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _demo_parser(sub)
    _eval_parser(sub)
    _decode_parser(sub)
    _explain_parser(sub)
    _serve_parser(sub)
    _push_parser(sub)
    return parser


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        from grace.config.overrides import dotted_overrides
        from grace.config.schema import load_config
        from grace.train import train

        overrides = dotted_overrides(extra)
        for flag, key in SHORT_FLAGS.items():
            value = getattr(args, flag, None)
            if value is not None:
                overrides[key] = value
        config = load_config(args.config, overrides)
        _check_output_dir(config.output_dir)  # before the model loads
        try:
            checkpoint = train(config, override_config=args.override_config)
        except KeyboardInterrupt:  # checkpoints are written to checkpoint-N.tmp and renamed
            raise KeyboardInterrupt("the checkpoints already written are complete; the same "
                                    "command resumes from the newest") from None
        print(f"done: last checkpoint {checkpoint}")
        return 0
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "demo":
        from grace.demo import run_demo

        _check_output_dir(args.output_dir)
        run_demo(args.config, args.output_dir, args.max_steps, args.model)
        return 0
    if args.command == "eval":
        from grace.evaluation.suite import run_suite

        run_suite(args.model, suite=args.suite, data_dir=args.data_dir, rationale=args.rationale,
                  max_new_tokens=args.max_new_tokens, full=args.full, output=args.output,
                  seed=args.seed, cache=args.cache, capability=args.capability, dtype=args.dtype,
                  pooling=args.pooling, system_prompt=args.system_prompt)
        return 0
    if args.command == "decode":
        from grace.encoders.llm2vec_gen import decode_texts

        for line in decode_texts(args.model, args.texts, max_new_tokens=args.max_new_tokens,
                                 instruction=args.instruction, document=args.document,
                                 dtype=args.dtype):
            print(line)
        return 0
    if args.command == "explain":
        return _explain(args)
    if args.command == "serve":
        from grace.server import ServerConfig, serve

        given = {k: getattr(args, k) for k in ("host", "port", "rationale", "max_new_tokens", "dtype",
                                               "max_texts", "max_chars", "max_batch",
                                               "max_batch_tokens", "max_input_tokens",
                                               "max_pending_texts")
                 if getattr(args, k) is not None}
        serve(ServerConfig(model=args.model, cache=args.cache, **given))
        return 0
    if args.command == "push":
        from grace.encoders.base import training_output_checkpoint
        from grace.encoders.hub import push_folder

        report = push_folder(training_output_checkpoint(args.folder), args.repo_id,
                             private=args.private, eval_results=args.results,
                             commit_message=args.message)
        print(f"pushed {len(report.uploaded)} files to {report.url}; left out: "
              f"{', '.join(report.left_out) or 'nothing'}")
        return 0
    return 2


def _check_output_dir(path) -> None:
    """``GraceInputError`` if ``path`` is a file, or cannot be made (a file on the way)."""
    folder = Path(path)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"cannot be made: {existing} is a file"
        raise GraceInputError(f"--output-dir {folder} {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GraceInputError(f"--output-dir {folder}: folder {existing} is not writable")


def _explain(args) -> int:
    import json

    from grace.encoders.base import GraceEncoder
    from grace.explain.pair import explain_pair

    if args.top_k < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise GraceInputError("--top-k and --max-new-tokens must be >= 1")
    encoder = GraceEncoder.from_pretrained(args.model, dtype=args.dtype, cache=args.cache,
                                           rationale=args.rationale,
                                           max_new_tokens=args.max_new_tokens)  # None: the model's
    ex = explain_pair(encoder, args.text_a, args.text_b,
                      decode_tokens=encoder.options.max_new_tokens)
    if args.json:
        print(json.dumps(ex.to_dict(), ensure_ascii=False))
    else:
        from grace.explain.render import render

        render(ex, top_k=args.top_k)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except GraceInputError as exc:
        print(f"grace: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FileNotFoundError as exc:
        print(f"grace: error: file not found: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"grace: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
