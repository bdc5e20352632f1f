"""LLM2Vec-Gen training (LLM2Vec-Gen paper, arXiv 2603.10913) on the shared loop (grace.training.loop.Trainer): data order, configs,
checkpoints, resume, metrics.jsonl, samples.jsonl and the progress bar are GRACE's.

Before the loop: the teacher is loaded, the model is built around the frozen backbone (the
trainable-parameter count is printed), and the backbone's responses to every query the run
will visit are generated into the generation cache, or read from it (or from
``llm2vec_gen.responses_file``; grace.llm2vec_gen.responses).

One step = ONE optimizer step on ``batch_size`` queries (global), in micro-batches of
``llm2vec_gen.micro_batch_size`` whose gradients accumulate:

    t       = teacher(response)                                  no gradient      (B, d_t)
    p, z, e = model(query ⊕ K soft tokens)                                        (B, K, d) ...
    L_align = MSE(e, t)                                  mean over queries and dimensions
    L_recon = CE(frozen LM(p ⊕ response) -> response)    token-mean over the step's responses
    L       = recon_weight * L_recon + align_weight * L_align

then grad-norm clipping (``optim.max_grad_norm``), AdamW at ``llm2vec_gen.learning_rate``
(``optim.weight_decay``), the ``optim.lr_scheduler`` schedule with ``optim.warmup_steps``
(packaged config ``llm2vec-gen``: linear, 100 warmup steps, batch 32, lr 5e-4, as the paper).
With ``recon_weight: 0`` (the paper's alignment-only ablation) the reconstruction pass is skipped.

Deviations from the paper: training responses are generated up to
``response_max_new_tokens`` (paper 500; on CPUs less) and cut to ``max_response_tokens``; EOS is a
reconstruction target only for responses that ended by themselves; several processes each
average their own micro-batches and DDP averages the processes (exact for equal shares).
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from grace.errors import GraceInputError
from grace.llm2vec_gen.checkpoint import LLM2VecGenSpec, backbone_reference
from grace.llm2vec_gen.diagnostics import constant_baseline_cosine, mean_pairwise_cosine
from grace.llm2vec_gen.inputs import build_encoder_inputs, build_response_targets, input_text
from grace.llm2vec_gen.losses import alignment_loss, reconstruction_loss, token_accuracy
from grace.llm2vec_gen.model import LLM2VecGenModel
from grace.llm2vec_gen.responses import ensure_run_responses, run_responses
from grace.llm2vec_gen.teacher import load_teacher
from grace.models.fingerprint import model_fingerprint
from grace.training.loop import DataOrder, Trainer


def new_model(backbone, config, teacher) -> LLM2VecGenModel:
    """An untrained LLM2Vec-Gen model around ``backbone`` as ``config`` describes it (heads
    initialised by ``llm2vec_gen.head_init``): what training starts from."""
    g = config.llm2vec_gen
    spec = LLM2VecGenSpec(
        backbone=backbone_reference(config.model.name), hidden_size=backbone.config.hidden_size,
        teacher_dim=teacher.dim, num_tokens=g.num_tokens, teacher=g.teacher,
        query_instruction=g.query_instruction, document_instruction=g.document_instruction,
        max_input_tokens=g.max_input_tokens, backbone_dtype=config.model.dtype,
        backbone_fingerprint=model_fingerprint(backbone),
    )
    model = LLM2VecGenModel(backbone, spec)
    model.init_heads(g.head_init)
    model.alignment_input.momentum = g.standardize_momentum if g.standardize else 0.0
    return model


class LLM2VecGenTrainer(Trainer):
    """See the module docstring."""

    modes = ("unsupervised",)  # unlabeled queries

    def __init__(self, config, accelerator=None):
        if config.model.lora:
            raise GraceInputError("method 'llm2vec-gen' keeps the backbone frozen and trains only "
                                  "soft tokens and two heads: --lora does not apply")
        super().__init__(config, accelerator)
        self._prepare_responses()
        if self.start_step == 0:
            self._fit_alignment_head()

    @property
    def learning_rate(self) -> float:
        return self.config.llm2vec_gen.learning_rate

    def prepare_model(self, backbone):
        g = self.config.llm2vec_gen
        self.teacher = load_teacher(g.teacher, g.teacher_rationale, self.acc.device)
        model = new_model(backbone, self.config, self.teacher)
        c = model.parameter_counts()
        if self.acc.is_main_process:
            print(f"llm2vec-gen: {c['trainable']:,} trainable parameters (soft tokens "
                  f"{c['soft_tokens']:,}, reconstruction head {c['reconstruction_head']:,}, "
                  f"alignment head {c['alignment_head']:,}); backbone frozen "
                  f"({c['backbone_frozen']:,} parameters)", flush=True)
        return model

    def load_weights(self, model, checkpoint) -> None:
        model.load_trainable(checkpoint)

    def param_groups(self, model) -> list[dict]:
        lr = self.config.llm2vec_gen.align_head_learning_rate
        if lr is None:
            return super().param_groups(model)
        head = list(model.alignment_head.parameters())
        rest = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
        return [{"params": rest}, {"params": head, "lr": lr}]

    def _fit_alignment_head(self) -> None:
        """Before step 1: the alignment input's standardisation and the ridge start of the
        alignment head (grace.llm2vec_gen.head_fit), on the first ``init_texts`` training texts.
        Every process fits the same texts to the same numbers (no communication needed)."""
        from grace.llm2vec_gen.head_fit import start_alignment_head

        g = self.config.llm2vec_gen
        texts = self._texts_of_steps(1, self.config.max_steps)[: g.init_texts]
        t0 = time.perf_counter()
        info = start_alignment_head(self.policy, self.tokenizer, self.teacher, texts,
                                    [self.responses[t].text for t in texts], g,
                                    batch_size=g.micro_batch_size)
        if info is not None and self.acc.is_main_process:
            print(f"llm2vec-gen alignment head: standardize {g.standardize}, align_init "
                  f"{g.align_init} on {info['texts']} training texts"
                  + (f" (ridge alpha {info['ridge_alpha']:g})" if "ridge_alpha" in info else "")
                  + f", {time.perf_counter() - t0:.0f} s", flush=True)

    # -- responses ------------------------------------------------------------------------
    def _texts_of_steps(self, first: int, last: int) -> list[str]:
        """The encoder input texts of the global batches of steps ``first..last``."""
        cfg = self.config
        order = DataOrder(self.order.records, cfg.batch_size, cfg.seed, cfg.data.shuffle, 0, 1)
        texts = (input_text(cfg.llm2vec_gen.train_instruction, r)
                 for step in range(first, last + 1) for r in order.batch(step))
        return list(dict.fromkeys(texts))

    def _prepare_responses(self) -> None:
        cfg, g, acc = self.config, self.config.llm2vec_gen, self.acc
        generated = 0
        if acc.is_main_process:
            cache = run_responses(self.tokenizer, self.policy.spec, g)
            if cache.imported:
                print(f"llm2vec-gen responses: imported {cache.imported} from the old JSON-lines "
                      f"cache into {cache.where}", flush=True)
            texts = self._texts_of_steps(self.start_step + 1, cfg.max_steps)
            generated = ensure_run_responses(self.policy.backbone, self.tokenizer, texts, cache, g,
                                             seed=cfg.seed)
            print(f"llm2vec-gen responses: {cache.where} ({len(cache)} for these settings"
                  + (f" and {g.responses_file}" if g.responses_file else "")
                  + f", {generated} generated now)", flush=True)
        acc.wait_for_everyone()
        self.responses = cache if acc.is_main_process else run_responses(self.tokenizer, self.policy.spec, g)

    # -- one step -------------------------------------------------------------------------
    def step(self, step: int) -> tuple[dict, list]:
        cfg, g = self.config, self.config.llm2vec_gen
        self.seed_step(step)
        t0 = time.perf_counter()
        texts = [input_text(g.train_instruction, r) for r in self.order.batch(step)]
        responses = [self.responses[t] for t in texts]
        targets = self.teacher.encode([r.text for r in responses])  # (B, d_t)
        t_teacher = time.perf_counter() - t0
        resp_ids, resp_mask = build_response_targets(
            self.tokenizer, [r.text for r in responses], [r.finished for r in responses],
            g.max_response_tokens)  # (B, T)
        n, n_tokens = len(texts), resp_mask.sum()
        device = self.acc.device
        sums = {"recon": 0.0, "align": 0.0, "accuracy": 0.0, "cosine": 0.0}
        truncated, seen_tokens, embeddings = 0, 0, []
        self.model.train()
        micro = list(torch.arange(n).split(g.micro_batch_size))
        for i, rows in enumerate(micro):
            enc = build_encoder_inputs(self.tokenizer, [texts[j] for j in rows], "",
                                       g.max_input_tokens, g.num_tokens)
            truncated += enc.num_truncated
            width = int(resp_mask[rows].sum(dim=1).max())
            rid = resp_ids[rows, :width].to(device)  # (m, T')
            rmask = resp_mask[rows, :width].to(device)  # (m, T')
            recon = g.recon_weight > 0
            sync = self.acc.no_sync(self.model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                out = self.model(enc.input_ids.to(device), enc.attention_mask.to(device),
                                 rid if recon else None, rmask if recon else None)
                target = targets[rows].to(device)  # (m, d_t)
                l_align = alignment_loss(out["embedding"], target)
                share = len(rows) / n
                loss = g.align_weight * l_align * share
                if recon:
                    l_recon = reconstruction_loss(out["recon_logits"], rid, rmask)
                    token_share = rmask.sum() / n_tokens
                    loss = loss + g.recon_weight * l_recon * token_share
                    sums["recon"] += float(l_recon.detach() * token_share)
                    sums["accuracy"] += float(token_accuracy(out["recon_logits"].detach(), rid, rmask)
                                              * token_share)
                if i == 0 and g.grad_norm_every and step % g.grad_norm_every == 0:
                    sums.update(self._soft_token_grad_norms(g.align_weight * l_align,
                                                            g.recon_weight * l_recon if recon else None))
                self.acc.backward(loss)
            embeddings.append(out["embedding"].detach().float().cpu())
            sums["align"] += float(l_align.detach()) * share
            sums["cosine"] += float(F.cosine_similarity(out["embedding"].detach().float(), target,
                                                        dim=-1).mean()) * share
            seen_tokens += int(enc.attention_mask.sum()) + g.num_tokens * len(rows) + int(rmask.sum())
        # nan / inf stop the run before the step (as a nan / inf gradient norm does)
        self.check_loss(torch.tensor(g.recon_weight * sums["recon"] + g.align_weight * sums["align"]))
        norm = self.optimizer_step()
        elapsed = time.perf_counter() - t0
        metrics = {
            "step": step,
            "loss/total": g.recon_weight * sums["recon"] + g.align_weight * sums["align"],
            "loss/align": sums["align"],
            "align/cosine": sums["cosine"],
            # the collapse diagnostics (grace.llm2vec_gen.diagnostics), on this batch
            "align/constant_baseline": constant_baseline_cosine(targets),
            **({"align/pairwise_model": mean_pairwise_cosine(torch.cat(embeddings)),
                "align/pairwise_teacher": mean_pairwise_cosine(targets)} if n >= 2 else {}),
            **({"loss/recon": sums["recon"], "recon/token_accuracy": sums["accuracy"]}
               if g.recon_weight > 0 else {}),
            "grad_norm": norm,
            **{k: v for k, v in sums.items() if k.startswith("grad/")},
            "lr": self.scheduler.get_last_lr()[0],
            "inputs/truncated": truncated,
            "responses/tokens_mean": float(n_tokens) / n,
            "time/teacher_s": t_teacher,
            "time/step_s": elapsed,
            "throughput/tokens_per_s": seen_tokens / max(elapsed, 1e-9),
        }
        samples = []
        if cfg.sample_every and step % cfg.sample_every == 0 and cfg.num_samples_logged:
            samples = self._samples(step, texts[: cfg.num_samples_logged],
                                    responses[: cfg.num_samples_logged])
        return metrics, samples

    def _soft_token_grad_norms(self, align_term, recon_term) -> dict:
        """Norm of each weighted loss's gradient on the soft tokens (this micro-batch): how much
        of the soft tokens' update each loss drives. The graph is kept for the real backward."""
        soft = self.policy.soft_tokens
        out = {}
        for name, term in (("align", align_term), ("recon", recon_term)):
            if term is not None:
                (grad,) = torch.autograd.grad(term, soft, retain_graph=True)
                out[f"grad/{name}_soft_tokens"] = float(grad.norm())
        return out

    @torch.no_grad()
    def _samples(self, step: int, texts: list[str], responses: list) -> list[dict]:
        """Greedy decodings of the soft prompts of a few queries of the step."""
        g, model = self.config.llm2vec_gen, self.policy
        model.eval()
        enc = build_encoder_inputs(self.tokenizer, texts, "", g.max_input_tokens, g.num_tokens)
        out = model(enc.input_ids.to(self.acc.device), enc.attention_mask.to(self.acc.device))
        ids = model.decode(out["soft_prompts"], g.decode_max_new_tokens, self.tokenizer.eos_token_id,
                           self.tokenizer.pad_token_id)
        decoded = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [{"step": step, "text": t, "response": r.text, "decoded": d}
                for t, r, d in zip(texts, responses, decoded)]

    def postfix(self, metrics: dict) -> dict:
        shown = {"align": f"{metrics['loss/align']:.4f}", "cos": f"{metrics['align/cosine']:.2f}"}
        if "loss/recon" in metrics:
            shown = {"recon": f"{metrics['loss/recon']:.3f}", **shown}
        return {**shown, "s": f"{metrics['time/step_s']:.1f}"}

    def describe_sample(self, sample: dict) -> str:
        return (f"[step {sample['step']}] {sample['text'][:60]!r} -> decoded "
                f"{sample['decoded'][:160]!r} (response {sample['response'][:80]!r})")
