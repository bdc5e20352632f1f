"""Where the time of a rollout and of a policy update goes (issue 15): torch.profiler splits.

    .venv/bin/python -m benchmarks.speed.profile_steps            # SmolLM2-135M, writes results-speed.md
    .venv/bin/python -m benchmarks.speed.profile_steps --quick    # tiny model, prints only

Profiles, in one process and one dtype at a time (float32, then bfloat16 unless --dtypes says
otherwise):
- one decode step at B=32 rows (prompts of Wikipedia sentences, 16 tokens already decoded, the
  cache with room for 32 as a 32-token rollout has),
  through the HF decoder and through grace.rollout.decode_step's static step;
- one prefill of those 32 prompts (shared system prefix once, then the suffixes);
- one policy update on a mini-batch of 16 rollouts of 32 tokens (4 texts x G=4, as GRACE
  samples them): forward + backward of the token log-probs, then one AdamW step (torch's
  default on CPU, the trainer's; foreach; fused), every rollout row with its own copy of the
  prompt (the plain layout) and, for the default and fused AdamW, each prompt run once for its
  rollouts (grace.rollout.shared_prompt, the trainer's ``optim.share_prompts``).

Each is run ``--repeats`` times after a warm-up; the profile of the last run is split by op
into matmuls, attention, norms/activations/elementwise, sampling/log-softmax, cache and index
copies, optimizer, and *Python and dispatch* (the wall time no op accounts for). Wall times
are medians. The split is written as a table to results-speed.md (section ``profile``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.common import paths  # noqa: E402
from benchmarks.common.report import machine, write_section  # noqa: E402

DATA = paths.WIKI_SENTENCES

# op -> category: exact names first, then name fragments (first match wins; names are aten::...)
EXACT = {
    "cache / index copies": {"aten::t", "aten::to", "aten::_to_copy", "aten::copy_", "aten::ne",
                             "aten::view", "aten::reshape", "aten::transpose", "aten::unsqueeze",
                             "aten::squeeze", "aten::expand", "aten::slice", "aten::select",
                             "aten::narrow", "aten::as_strided", "aten::item",
                             "aten::_local_scalar_dense", "aten::empty", "aten::full",
                             "aten::ones", "aten::zeros", "aten::arange", "aten::fill_",
                             "aten::zero_", "aten::resize_", "aten::clone", "aten::contiguous",
                             "aten::cat", "aten::stack", "aten::split", "aten::pad",
                             "aten::constant_pad_nd", "aten::index", "aten::index_put_",
                             "aten::index_select", "aten::repeat_interleave", "aten::isin",
                             "aten::masked_fill", "aten::masked_fill_", "aten::embedding",
                             "aten::scatter", "aten::nonzero", "aten::where", "aten::new_empty",
                             "aten::new_zeros", "aten::empty_strided", "aten::detach",
                             "aten::alias", "aten::lift_fresh", "aten::unbind"},
}
FRAGMENTS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "mkldnn",
               "aten::_addmm_activation"),
    "attention": ("scaled_dot_product", "flash_attention", "_efficient_attention", "_safe_softmax"),
    "optimizer": ("_foreach", "_fused_adam", "adamw"),
    "sampling / log-softmax": ("softmax", "cumsum", "searchsorted", "argmax", "aten::rand",
                               "aten::gather", "aten::sort", "logsumexp", "nll"),
    "norms / activations / elementwise": ("aten::mul", "aten::add", "aten::pow", "aten::mean",
                                          "aten::rsqrt", "aten::silu", "aten::neg", "aten::sub",
                                          "aten::div", "aten::sum", "aten::exp", "aten::cos",
                                          "aten::sin", "aten::sigmoid", "aten::clamp", "aten::eq",
                                          "aten::lt", "aten::ge", "aten::gt", "aten::le",
                                          "aten::bitwise", "aten::logical", "aten::max",
                                          "aten::min", "aten::abs", "aten::norm", "aten::lerp",
                                          "aten::addcdiv", "aten::addcmul", "aten::sqrt",
                                          "aten::linalg_vector_norm", "aten::threshold",
                                          "aten::maximum", "aten::minimum", "aten::sign"),
}
ORDER = ["matmul", "attention", "norms / activations / elementwise", "sampling / log-softmax",
         "cache / index copies", "optimizer", "other ops", "Python and dispatch"]


def category(name: str) -> str:
    """The category of one op. The for-loop AdamW's elementwise ops count as elementwise (the
    profile cannot tell them from the model's); foreach and fused ones as optimizer."""
    for cat, names in EXACT.items():
        if name in names:
            return cat
    low = name.lower()
    for cat, parts in FRAGMENTS.items():
        if any(p.lower() in low for p in parts):
            return cat
    return "other ops"


def split(prof, wall: float) -> dict[str, float]:
    """Seconds per category from a profile (self CPU time of each op on the calling thread),
    plus the wall time no op accounts for."""
    out = dict.fromkeys(ORDER, 0.0)
    for evt in prof.key_averages():
        if evt.key.startswith("aten::") or "mkldnn" in evt.key or evt.key.startswith("_"):
            out[category(evt.key)] += evt.self_cpu_time_total / 1e6
    out["Python and dispatch"] = max(0.0, wall - sum(out.values()))
    return out


def _profiled(fn, repeats: int) -> tuple[float, dict]:
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up
    times = []
    for _ in range(max(repeats, 1)):  # unprofiled: the wall time reported
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # one more run, for the split
        start = time.perf_counter()
        fn()
        last = time.perf_counter() - start
    return statistics.median(times), split(prof, last)


def _decode_setup(model, tokenizer, texts, decoded: int):
    """A prefilled batch of len(texts) rows with ``decoded`` tokens already fed (HF decoder)."""
    from grace.models.prompt import build_prompts
    from grace.rollout.engine import prefill
    from grace.rollout.kv_cache import cache_kwargs

    prompts = build_prompts(tokenizer, texts)
    pre = prefill(model, prompts, tokenizer.pad_token_id, True, room=2 * decoded)  # a 2x-decoded-token rollout at its middle step
    attn, pos = pre.attn, pre.next_pos
    tok = torch.full((len(texts),), 198)
    for _ in range(decoded):
        attn = torch.cat([attn, torch.ones(len(texts), 1, dtype=torch.long)], dim=1)
        model.model(input_ids=tok[:, None], attention_mask=attn, position_ids=pos[:, None],
                    **cache_kwargs(model.model, pre.cache), use_cache=True)
        pos = pos + 1
    return prompts, pre.cache, attn, pos


@torch.no_grad()
def profile_decode(model, tokenizer, texts, repeats: int) -> dict:
    """Seconds and split of one decode step (HF decoder, static step), and of one prefill."""
    from grace.rollout.decode_step import StaticDecodeStep
    from grace.rollout.engine import prefill
    from grace.rollout.sampling import sample_and_score
    from grace.rollout.kv_cache import cache_kwargs

    prompts, cache, attn, pos = _decode_setup(model, tokenizer, texts, 16)
    head = model.lm_head
    tok = torch.full((len(texts),), 198)
    mask = torch.cat([attn, torch.ones(len(texts), 1, dtype=torch.long)], dim=1)
    length = cache.get_seq_length()
    static = StaticDecodeStep(model)

    def rewind():
        for layer in cache.layers:
            layer.length = length
            layer._refresh()

    def hf_step():
        rewind()
        h = model.model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                        **cache_kwargs(model.model, cache), use_cache=True).last_hidden_state[:, 0]
        sample_and_score(head(h), 1.0)  # as training rollouts: sampled, with log-probs

    def static_step():
        rewind()
        sample_and_score(head(static(tok, pos, cache, mask.bool())), 1.0)

    def prefill_prompts():
        prefill(model, prompts, tokenizer.pad_token_id, True, room=32)

    return {"decode step (HF decoder)": _profiled(hf_step, repeats),
            "decode step (static)": _profiled(static_step, repeats),
            "prefill": _profiled(prefill_prompts, max(2, repeats // 2))}


def profile_update(model, tokenizer, texts, tokens: int, repeats: int, autocast: bool) -> dict:
    """Seconds and split of one policy update on len(texts) rollouts (foreach and fused AdamW)."""
    from grace.grpo.policy_loss import policy_loss
    from grace.models.prompt import build_prompts
    from grace.rollout.engine import generate_and_score
    from grace.rollout.hf_path import response_logprobs
    from grace.rollout.shared_prompt import shared_prompt_logprobs

    torch.manual_seed(0)
    G = 4
    scored = generate_and_score(model, tokenizer, build_prompts(tokenizer, texts[: max(1, len(texts) // G)]),
                                num_samples=G, temperature=1.0, max_new_tokens=tokens)
    seqs, old = scored.seqs, scored.logprobs
    advantages = torch.randn(len(seqs))
    results = {}
    for name, kwargs, layouts in (("default (for-loop on CPU)", {}, ("plain", "shared")),
                                  ("foreach", {"foreach": True}, ("plain",)),
                                  ("fused", {"fused": True}, ("plain", "shared"))):
        for layout in layouts:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9, **kwargs)
            logprobs = shared_prompt_logprobs if layout == "shared" else response_logprobs
            model.train()

            def update():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    lp = logprobs(model, seqs, 1.0)
                    loss, _ = policy_loss(lp, old, advantages, seqs.response_mask)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            label = ", each prompt once" if layout == "shared" else ""
            results[f"policy update, AdamW {name}{label}"] = _profiled(update, repeats)
    model.eval()
    return results


def _table(results: dict) -> list[str]:
    lines = ["| what | wall s (median) | " + " | ".join(ORDER) + " |", "|---" * (len(ORDER) + 2) + "|"]
    for name, (wall, parts) in results.items():
        total = sum(parts.values()) or 1.0
        lines.append(f"| {name} | {wall:.4f} | "
                     + " | ".join(f"{100 * parts[c] / total:.0f}%" for c in ORDER) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny-random model, 8 rows, prints only")
    p.add_argument("--model", default=None)
    p.add_argument("--rows", type=int, default=None, help="decode rows (default 32)")
    p.add_argument("--update-rows", type=int, default=16)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--label", default="", help="written after the section title (e.g. 'before')")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--section", default="profile",
                   help="results-speed.md section to write (another name keeps the existing one)")
    p.add_argument("--autocast", choices=("auto", "on", "off"), default="auto",
                   help="also profile the float32 updates under bf16 autocast: auto (only where the "
                        "CPU has bf16 matrix units, as the trainer's mixed_precision auto; elsewhere "
                        "bf16 matmuls run several times slower than float32), on, off")
    args = p.parse_args()
    model_name = args.model or ("tiny-random" if args.quick else "smollm2-135m")
    rows = args.rows or (8 if args.quick else 32)
    write = (not args.quick) if args.write is None else args.write
    torch.set_num_threads(args.threads)
    from grace.models.backbones import load_backbone

    lines = [f"## Profile: where a decode step, a prefill and a policy update spend their time{args.label}", "",
             f"`python -m benchmarks.speed.profile_steps` ({time.strftime('%Y-%m-%d')}), "
             f"model `{model_name}`, "
             f"decode/prefill B={rows}, update {args.update_rows} rollouts x {args.tokens} tokens, "
             f"median of {args.repeats} unprofiled runs; split of one more, profiled run by "
             "torch.profiler (self CPU time per op; *Python and dispatch* = wall time not inside "
             "any op, profiler overhead included).",
             f"Machine: {machine(threads=args.threads)}.", ""]
    texts = [t.strip() for t in DATA.read_text().splitlines() if t.strip()]
    from grace.models.backbones import cpu_has_bf16_units

    autocast_too = args.autocast == "on" or (args.autocast == "auto" and cpu_has_bf16_units())
    if not autocast_too:
        lines += ["Updates under bf16 autocast: not profiled in this run (`--autocast "
                  f"{args.autocast}`; bf16 matrix units: {'yes' if cpu_has_bf16_units() else 'no'}).", ""]
    for dtype in args.dtypes:
        model, tokenizer = load_backbone(model_name, dtype)
        model.eval()
        results = profile_decode(model, tokenizer, texts[:rows], args.repeats)
        for autocast in ((False, True) if dtype == "float32" and autocast_too else (False,)):
            part = profile_update(model, tokenizer, texts[:args.update_rows], args.tokens,
                                  max(2, args.repeats // 2), autocast)
            results.update({f"{k}{' (bf16 autocast)' if autocast else ''}": v for k, v in part.items()})
        lines += [f"### weights {dtype}", "", *_table(results), ""]
        hf, st = results["decode step (HF decoder)"][0], results["decode step (static)"][0]
        lines.append(f"Decode step, static / HF: {st / hf:.2f} ({hf * 1000:.1f} -> {st * 1000:.1f} ms).")
        lines.append("")
        print("\n".join(lines[-(len(results) + 6):]), flush=True)
        del model
    if write:
        write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
