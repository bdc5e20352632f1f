"""Benchmark (b) of issue 5: one GRACE training step against TRL's ``GRPOTrainer``.

    .venv/bin/python -m benchmarks.speed.bench_grpo_step            # SmolLM2-135M, writes results-speed.md
    .venv/bin/python -m benchmarks.speed.bench_grpo_step --quick    # tiny-random, < 1 minute, prints only

The last line printed is ``ratio: <TRL seconds per step / our seconds per step>`` (> 1: we are
faster).

What one step is, on both sides (unsupervised GRACE, ``reference`` reward, SPEC 1.3/1.4):
B texts of the Wikipedia sentences (the same texts in the same order: no shuffling), G sampled
rationales per text at T=1.0 (top_p 1, top_k off) up to ``--max-new-tokens``, one anchor
rationale per text at T=0.5, embeddings = masked mean of the last hidden states over text +
rationale (system prompt excluded), the unsupervised reward of ``grace.grpo.rewards.unsupervised``
(cos(anchor_i, x_ik) + 0.2 consistency + 0.2 in-batch hard term, x10), group-mean-centred
advantages without std scaling, then one PPO-clip epoch over the B*G rollouts in
``--mini-batches`` AdamW steps (lr, weight decay 0.01, constant schedule, grad-norm 1.0, no KL),
old log-probs from a no-grad pass. Same backbone (``grace.models.backbones.load_backbone``, two
copies), same dtype, full fine-tuning, no gradient checkpointing, same thread count.

* ours: ``grace.grpo.trainer.GraceTrainer.step`` built from the packaged ``unsup-wiki`` config with
  the sizes above as overrides, with the config's rollout engine (``--engine`` to choose:
  ``fast`` = ``grace.rollout.engine``, embeddings and old log-probs from the generation pass itself;
  ``simple`` = HF ``generate`` + a rescoring pass);
* TRL: ``trl.GRPOTrainer`` (``use_vllm`` off, so transformers ``generate``) with
  ``generation_batch_size = B*G``, ``steps_per_generation = --mini-batches`` (one generation
  feeds that many optimizer steps, like our mini-batches), ``loss_type="dapo"`` (token mean),
  ``scale_rewards="none"``, ``beta=0``, the same AdamW kernel as ours (``adamw_torch_fused``
  where our ``optim.fused_adamw`` is on, the default; else ``adamw_torch``). TRL's
  reward-function interface gives a callable the prompts and completion token ids, not hidden
  states, so the reward below does what a TRL user must do to get GRACE's reward: it generates the anchor rationales itself (HF ``generate``,
  T=0.5, the policy's current weights) and runs a second no-grad forward pass of the policy over
  prompt + completion to pool the embeddings, then calls the same ``grace.grpo.rewards.unsupervised``.
  The rewards are therefore the same function of the same kind of embeddings; what differs is
  the work needed to get them, which is the point of the comparison.

Remaining differences: our PPO loss has a dual clip (c=3) that TRL's does not; TRL applies no
weight decay to biases and norms; TRL's loss always computes per-token entropies, and its
log-probs go through a chunked, fused LM-head kernel (``trl/kernels/chunked_logprob.py``: saves
memory on GPUs, but its tiled backward is slow on CPU) -- neither can be switched off, and they
account for much of TRL's longer update; the sampled rationales differ (different RNG streams),
so their lengths -- and the work -- differ a little from step to step; with
``--penalize-truncation`` off (the default, as in ``demo-unsup-lee``: at 32 tokens nearly every
rationale is cut) a cut rollout keeps its scaled reward on both sides.

Timing: TRL drives its own loop; a callback runs one of our steps after each TRL generation
cycle (every ``--mini-batches`` optimizer steps), so the two alternate step by step in one
process and share the machine's load alike. Both run on ``--threads`` torch threads (default 1:
on a busy 2-core machine two OpenMP threads collapse; HF generate fell from 57 to 7 tokens/s).
The first step of each is a warm-up and is not counted; seconds per step = the sum of the N
timed steps / N. "rollout" is our ``time/rollout_s`` (generation + embeddings + old log-probs)
and TRL's ``_generate_and_score_completions`` (generation, old log-probs and the reward with
its anchor generation and embedding pass); "update" is the rest of the step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from benchmarks.common import paths
from benchmarks.common.report import add_step_arguments, machine, resolve_presets, write_section

DATA = paths.WIKI_SENTENCES
QUICK = dict(model="tiny-random", batch=2, rollouts=4, max_new_tokens=16, steps=2, mini_batches=2)
FULL = dict(model="smollm2-135m", batch=2, rollouts=4, max_new_tokens=32, steps=2, mini_batches=2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(p, QUICK, FULL, "timed steps per pipeline (after 1 warm-up each)", os.path.normpath(DATA))
    p.add_argument("--mixed-bf16", action="store_true",
                   help="bf16 mixed precision on both sides: ours with model.mixed_precision=bf16 and "
                        "rollout.dtype=bfloat16 (float32 master weights), TRL with bf16=True; "
                        "written to its own section")
    p.add_argument("--rollout-dtype", default=None,
                   help="our rollout.dtype (default: policy, or bfloat16 with --mixed-bf16); "
                        "auto: the package default (a bf16 copy on CPUs with bf16 units)")
    p.add_argument("--mixed-precision", default=None,
                   help="our model.mixed_precision (default: no, or bf16 with --mixed-bf16); "
                        "auto: the package default (bf16 on CPUs with bf16 units)")
    p.add_argument("--no-share-prompts", action="store_true",
                   help="our update gives every rollout row its own copy of the prompt "
                        "(optim.share_prompts false, the layout before issue 15); own section")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    p.add_argument("--max-prompt-tokens", type=int, default=128)
    p.add_argument("--penalize-truncation", action="store_true",
                   help="replace the reward of a cut rollout by -1 (reward.penalize_truncation)")
    args = resolve_presets(p.parse_args(argv), QUICK, FULL)
    if (args.batch * args.rollouts) % args.mini_batches:
        p.error("B*G must be divisible by --mini-batches (TRL splits the generation batch evenly)")
    return args


# -- the reward a TRL user writes to get GRACE's unsupervised reward ----------------------------
@torch.no_grad()
def embed(model, tokenizer, texts, responses, max_prompt_tokens, micro_batch_size=16):
    """Pooled embeddings of prompt(text) + response token ids: one separate forward pass.

    texts: N strings; responses: N lists of token ids (cut after EOS) -> (N, D) float32, L2-normed.
    """
    from grace.models.backbones import decoder_and_head
    from grace.models.pooling import pool, pooling_mask, position_ids_from_mask
    from grace.models.prompt import SYSTEM_PROMPT, build_prompts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prompt truncation warning: same prompts as ours
        prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, max_prompt_tokens)
    width = max(1, max(len(r) for r in responses))
    resp = torch.full((len(responses), width), tokenizer.pad_token_id, dtype=torch.long)  # (N, R)
    resp_mask = torch.zeros_like(resp)  # (N, R)
    for row, ids in enumerate(responses):
        resp[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        resp_mask[row, : len(ids)] = 1
    ids = torch.cat([prompts.input_ids, resp], 1)  # (N, P+R)
    mask = torch.cat([prompts.attention_mask, resp_mask], 1)  # (N, P+R)
    pmask = pooling_mask(mask, prompts.pool_start)  # (N, P+R)
    decoder, _ = decoder_and_head(model)
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(texts), micro_batch_size):
        sl = slice(s, s + micro_batch_size)
        hidden = decoder(input_ids=ids[sl].to(device), attention_mask=mask[sl].to(device),
                         position_ids=position_ids_from_mask(mask[sl]).to(device),
                         use_cache=False).last_hidden_state  # (n, P+R, D)
        out.append(pool(hidden, pmask[sl].to(device)))  # (n, D)
    return torch.cat(out)  # (N, D)


@torch.no_grad()
def anchor_responses(model, tokenizer, texts, max_new_tokens, temperature, max_prompt_tokens):
    """One sampled rationale per text (the anchor / context rationale), cut after EOS."""
    from grace.models.prompt import SYSTEM_PROMPT, build_prompts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, max_prompt_tokens)
    device = next(model.parameters()).device
    out = model.generate(input_ids=prompts.input_ids.to(device),
                         attention_mask=prompts.attention_mask.to(device),
                         max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                         top_p=1.0, top_k=0, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)[:, prompts.input_ids.shape[1]:]
    cut = []
    for row in out.tolist():
        cut.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    return cut


def make_trl_reward(tokenizer, cfg, get_model):
    """GRACE's unsupervised reward as a TRL reward function (see the module docstring)."""
    from grace.grpo.rewards import unsupervised

    G, r = cfg.rollout.num_rollouts, cfg.reward

    def grace_unsupervised_reward(prompts, completions, completion_ids, text, **kwargs):
        model = get_model()
        was_training = model.training
        model.eval()
        groups = [text[i] for i in range(0, len(text), G)]  # TRL repeats each prompt G times in a row
        assert all(text[i] == groups[i // G] for i in range(len(text))), "groups not contiguous"
        anchors = anchor_responses(model, tokenizer, groups, cfg.rollout.max_new_tokens,
                                   cfg.rollout.context_temperature, cfg.data.max_prompt_tokens)
        emb = embed(model, tokenizer, groups + list(text), anchors + list(completion_ids),
                    cfg.data.max_prompt_tokens, cfg.rollout.micro_batch_size)  # (B + B*G, D)
        model.train(was_training)
        B = len(groups)
        eos = tokenizer.eos_token_id
        truncated = torch.tensor([len(c) == 0 or c[-1] != eos for c in completion_ids]).view(B, G)
        if not r.penalize_truncation:
            truncated = torch.zeros_like(truncated)
        out = unsupervised(emb[:B], emb[B:].view(B, G, -1), truncated,
                           consistency_weight=r.consistency_weight, hard_weight=r.hard_weight,
                           scale=r.scale, truncation_penalty=r.truncation_penalty)  # (B, G)
        return out.total.reshape(-1).tolist()

    return grace_unsupervised_reward


# -- the two pipelines ---------------------------------------------------------------------------
def build_ours(args, workdir):
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    engine = {} if args.engine is None else {"rollout.engine": args.engine}
    if args.mixed_bf16:
        engine.update({"model.mixed_precision": "bf16", "rollout.dtype": "bfloat16"})
    # float32 on both sides unless asked: rollout.dtype auto would sample from a bf16 copy on
    # CPUs with bf16 units, while TRL samples from the float32 policy
    engine["rollout.dtype"] = args.rollout_dtype or engine.get("rollout.dtype", "policy")
    # likewise the update: model.mixed_precision auto is bf16 on those CPUs
    engine["model.mixed_precision"] = args.mixed_precision or engine.get("model.mixed_precision", "no")
    cfg = load_config("unsup-wiki", {
        **engine, "model.name": args.model, "model.dtype": args.dtype, "model.lora": False,
        "data.path": args.data, "data.shuffle": False, "data.max_prompt_tokens": args.max_prompt_tokens,
        "batch_size": args.batch, "rollout.num_rollouts": args.rollouts,
        "rollout.max_new_tokens": args.max_new_tokens, "optim.num_mini_batches": args.mini_batches,
        "optim.learning_rate": args.lr, "optim.kl_coef": 0.0,
        "optim.share_prompts": not args.no_share_prompts,
        "reward.penalize_truncation": args.penalize_truncation,
        "max_steps": args.steps + 1, "sample_every": 0, "output_dir": os.path.join(workdir, "ours"),
    })
    return cfg, GraceTrainer(cfg)


def build_trl(args, cfg, workdir, callback):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from grace.models.backbones import load_backbone
    from grace.data.readers import load_records
    from grace.models.prompt import SYSTEM_PROMPT

    B, G, k = args.batch, args.rollouts, args.mini_batches
    texts = load_records(args.data, "unsupervised")[: B * (args.steps + 1)]  # ours reads the same, in order
    dataset = Dataset.from_list([
        {"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": t}],
         "text": t}
        for t in texts
    ])
    model, tokenizer = load_backbone(args.model, args.dtype)
    targs = GRPOConfig(
        output_dir=os.path.join(workdir, "trl"), report_to="none", save_strategy="no",
        logging_steps=10**6, disable_tqdm=True, seed=cfg.seed, use_vllm=False,
        max_steps=k * (args.steps + 1),
        per_device_train_batch_size=B * G // k, steps_per_generation=k, gradient_accumulation_steps=1,
        num_generations=G, max_completion_length=args.max_new_tokens, num_iterations=1,
        temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=0,
        learning_rate=args.lr, weight_decay=cfg.optim.weight_decay, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=cfg.optim.max_grad_norm,
        optim="adamw_torch_fused" if getattr(cfg.optim, "fused_adamw", False) else "adamw_torch",  # as ours
        beta=0.0, epsilon=cfg.optim.clip_low, loss_type="dapo", scale_rewards="none",
        mask_truncated_completions=False, shuffle_dataset=False,
        gradient_checkpointing=False, bf16=args.mixed_bf16, fp16=False, dataloader_num_workers=0,
        use_cpu=args.mixed_bf16 and not torch.cuda.is_available(),
    )
    holder = {}
    reward = make_trl_reward(tokenizer, cfg, lambda: holder["trainer"].accelerator.unwrap_model(
        holder["trainer"].model))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=targs, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[callback])
    holder["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its end-of-training log dict clutters the output
    generate = trainer._generate_and_score_completions

    def timed_generate(*a, **kw):  # TRL's rollout + scoring (incl. the reward) time
        t0 = time.perf_counter()
        out = generate(*a, **kw)
        callback.trl_rollout.append(time.perf_counter() - t0)
        return out

    trainer._generate_and_score_completions = timed_generate
    return trainer


def make_callback(args):
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        """After each TRL generation cycle: record its time, then run and time one of our steps."""

        def __init__(self):
            self.ours = None  # GraceTrainer, set before training
            self.trl_step, self.trl_rollout, self.ours_step, self.ours_rollout = [], [], [], []
            self.mark = None

        def on_train_begin(self, targs, state, control, **kw):
            self.mark = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step % args.mini_batches:
                return
            self.trl_step.append(time.perf_counter() - self.mark)
            step = state.global_step // args.mini_batches
            t0 = time.perf_counter()
            metrics, _ = self.ours.step(step)
            self.ours_step.append(time.perf_counter() - t0)
            self.ours_rollout.append(metrics["time/rollout_s"])
            print(f"step {step}: TRL {self.trl_step[-1]:.2f} s, ours {self.ours_step[-1]:.2f} s"
                  + (" (warm-up)" if step == 1 else ""), flush=True)
            self.mark = time.perf_counter()

    return Interleave()


def summarize(args, cb) -> tuple[str, float]:
    n = args.steps
    rows = {"ours (GraceTrainer)": (cb.ours_step[1:], cb.ours_rollout[1:]),
            "TRL GRPOTrainer": (cb.trl_step[1:], cb.trl_rollout[1:])}
    assert all(len(s) == n and len(r) == n for s, r in rows.values()), (cb.trl_step, cb.trl_rollout)
    ours_s, trl_s = sum(cb.ours_step[1:]) / n, sum(cb.trl_step[1:]) / n
    lines = ["| pipeline | s/step (mean) | median | min | max | rollout+scoring s/step | update s/step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, (steps, roll) in rows.items():
        mean, mroll = sum(steps) / n, sum(roll) / n
        lines.append(f"| {name} | {mean:.2f} | {statistics.median(steps):.2f} | {min(steps):.2f} | "
                     f"{max(steps):.2f} | {mroll:.2f} | {mean - mroll:.2f} |")
    return "\n".join(lines), trl_s / ours_s


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    precision = ", bf16 mixed precision on both sides" if args.mixed_bf16 else ""
    if args.rollout_dtype:
        precision += f", our rollout.dtype {args.rollout_dtype}"
    if args.mixed_precision:
        precision += f", our model.mixed_precision {args.mixed_precision}"
    settings = (f"model {args.model}, dtype {args.dtype}{precision}, B={args.batch} texts x G={args.rollouts} "
                f"rationales, max_new_tokens={args.max_new_tokens}, {args.mini_batches} optimizer "
                f"steps per rollout batch, lr {args.lr}, full fine-tuning, prompts <= "
                f"{args.max_prompt_tokens} tokens, truncation penalty "
                f"{'on' if args.penalize_truncation else 'off'}, 1 warm-up + {args.steps} timed steps each, "
                f"{torch.get_num_threads()} torch thread(s)")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_grpo_step.") as workdir:
        cfg, ours = build_ours(args, workdir)
        settings += (f"; our rollout engine: {getattr(cfg.rollout, 'engine', 'n/a')}; our update: "
                     + ("each prompt once per micro-batch (optim.share_prompts)"
                        if getattr(cfg.optim, "share_prompts", False) else "every row with its prompt")
                     + ("; AdamW fused on both sides" if getattr(cfg.optim, "fused_adamw", False)
                        else "; AdamW torch's default on both sides"))
        print(settings, flush=True)
        cb = make_callback(args)
        cb.ours = ours
        trl_trainer = build_trl(args, cfg, workdir, cb)
        trl_trainer.train()
    table, ratio = summarize(args, cb)
    env = machine("trl", "peft")
    print(table)
    print(f"machine: {env}")
    print(f"wall time {time.perf_counter() - t_start:.0f} s")
    if args.write:
        cmd = "python -m benchmarks.speed.bench_grpo_step " + " ".join(sys.argv[1:] if argv is None else argv)
        section = (("grpo_step_bf16" if args.mixed_bf16 else "grpo_step")
                   + (f"_rollout_{args.rollout_dtype}" if args.rollout_dtype else "")
                   + (f"_mixed_{args.mixed_precision}" if args.mixed_precision else "")
                   + ("_plain_prompts" if args.no_share_prompts else ""))
        write_section(section, "\n".join([
            "## (b) One GRACE training step vs TRL `GRPOTrainer`"
            + (" (bf16 mixed precision)" if args.mixed_bf16 else "")
            + (" (our update: every rollout row with its own prompt)" if args.no_share_prompts else ""),
            "",
            f"`{cmd.strip()}` -- {time.strftime('%Y-%m-%d')}",
            "",
            f"- machine: {env}",
            f"- settings: {settings}; data: the first texts of `wiki-sentences.txt`, in order",
            "- TRL side: `GRPOTrainer` (transformers generate, no vLLM), `loss_type=dapo`, "
            "`scale_rewards=none`, `beta=0`, `steps_per_generation` = optimizer steps per rollout "
            "batch; its reward function generates the anchor rationales and runs a second forward "
            "pass to pool embeddings, then calls the same `grace.grpo.rewards.unsupervised` (see the "
            "script's docstring for every difference)",
            "",
            table,
            "",
            f"**ratio (TRL s/step / ours s/step): {ratio:.2f}** (target: >= 2.5, i.e. our step <= 0.4x TRL's)",
        ]))
        print(f"wrote the {section} section of benchmarks/speed/results-speed.md")
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
