"""The contrastive baselines of the paper (GRACE paper, arXiv 2510.04506) as training methods beside GRACE.

- ``method: infonce`` (mode supervised): InfoNCE on (query, positive, hard negative) triplets
  with in-batch negatives (grace.contrastive.losses.info_nce), temperature ``baseline.temperature``
  (0.05). Every query is scored against the positives and hard negatives of the whole global
  batch.
- ``method: simcse`` (mode unsupervised): unsupervised SimCSE (grace.contrastive.losses.simcse_unsup):
  each text is embedded twice in train mode, and dropout makes the two views differ.

Both reuse GRACE's loop (grace.training.loop.Trainer): data formats, data order, configs,
checkpoints, resume, metrics.jsonl and the progress bar; each supplies only ``step()``.

Embedding, with gradient: the GRACE prompt (grace.models.prompt.build_prompts: system prompt, chat
template), NO rationale, and the L2-normalised masked mean of the last-layer hidden states
(after the final norm) over every token after the system prefix (grace.models.pooling.pool). That is
exactly what encoding with ``rationale="none"`` computes at inference, so a trained baseline is
evaluated with ``--rationale none``. The forward pass calls the (possibly DDP-wrapped) model
itself, so distributed gradient hooks run, with ``output_hidden_states=True`` (transformers
puts the normed ``last_hidden_state`` at ``hidden_states[-1]``) and ``logits_to_keep=1``, so
the full-vocabulary logits are never computed. The one kept logit enters the loss times 0,
which keeps an untied LM head in every backward (DDP without ``find_unused_parameters``) and
changes nothing else.

One step = ONE optimizer step on ``batch_size`` examples (global). All texts of a step go
through ONE forward pass (queries, positives and negatives; or each SimCSE text twice) and the
loss needs every embedding of the batch at once, so there is no micro-batching or gradient
accumulation: memory grows with batch_size x text length (GradCache would lift that; not done).

Several processes: each embeds its share of the batch; the embeddings are gathered
(``accelerator.gather`` carries no gradient) and this process's slice is put back as its own
tensor that has one (``gather_with_grad``). Every process then computes the loss of the WHOLE
global batch, whose backward is exactly the global loss's gradient through this process's
embeddings; DDP averages gradients over the W processes, so the loss is multiplied by W before
backward and the update is the exact global-batch gradient. The logged loss is the global one.

SimCSE's dropout: SimCSE (BERT) uses dropout 0.1 on hidden states and attention. Llama-family
backbones (SmolLM2, Qwen) have no hidden dropout at all, only attention dropout, and it is 0 by
default; so ``baseline.dropout`` (0.1) is set at load on every attention module's
``attention_dropout`` and on any ``nn.Dropout`` outside LoRA (Llama has none): for SmolLM2 the
two views differ by attention dropout ONLY. A backbone with neither is refused. Only the
modules are changed, not ``model.config``: a checkpoint's ``config.json`` keeps the backbone's
own dropout, so an evaluation or a later GRACE run from it does not inherit it (the value used
is in the checkpoint's grace_config.yaml). InfoNCE keeps the backbone's own dropout.

Optimisation: AdamW at ``baseline.learning_rate`` (2e-5; ``optim.learning_rate`` is GRACE's
1e-6), with ``optim.weight_decay``, ``lr_scheduler``, ``warmup_steps`` and ``max_grad_norm``.
"""

from __future__ import annotations

import time
import warnings

import torch

from grace.contrastive.losses import info_nce, simcse_unsup
from grace.errors import GraceInputError
from grace.models.pooling import pool_split, pooling_mask, position_ids_from_mask
from grace.models.prompt import PromptBatch, build_prompts
from grace.training.loop import Trainer


def gather_with_grad(accelerator, x: torch.Tensor) -> torch.Tensor:
    """``x`` (n, ...) of every process, concatenated in rank order -> (world*n, ...); this
    process's rows are ``x`` itself, so the gradient flows into them (and only them)."""
    if accelerator.num_processes == 1:
        return x
    full = accelerator.gather(x.detach())  # (world*n, ...) no gradient
    n, rank = x.shape[0], accelerator.process_index
    return torch.cat([full[: rank * n], x, full[(rank + 1) * n :]])


def embed_rows_with_grad(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         pool_mask: torch.Tensor, split: int, pooling: str = "mean"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled, normalised embeddings of token rows, with gradient -> (N, D) (``pooling`` over
    the positions before ``split`` as the text and the rest as the rationale:
    grace.models.pooling.pool_split), and a zero scalar tied to the LM head (add it to the
    loss; see the module docstring)."""
    device = next(model.parameters()).device
    mask = attention_mask.to(device)  # (N, L)
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=1,
    )
    hidden = out.hidden_states[-1]  # (N, L, D) after the final norm
    embeddings = pool_split(hidden, pool_mask.to(device), split, pooling)  # (N, D)
    return embeddings, out.logits.float().sum() * 0.0


def embed_with_grad(model, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``embed_rows_with_grad`` of prompts without rationale (mean over their pooled tokens)."""
    mask = prompts.attention_mask
    return embed_rows_with_grad(model, prompts.input_ids, mask,
                                pooling_mask(mask, prompts.pool_start), mask.shape[1])


def set_dropout(model, p: float) -> int:
    """Set dropout ``p`` on every attention module's ``attention_dropout`` and every
    ``nn.Dropout`` outside LoRA; return how many modules were changed."""
    changed = 0
    for name, module in model.named_modules():
        if "lora_" in name:
            continue  # peft's lora_dropout follows model.lora_dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = p
            changed += 1
        elif type(getattr(module, "attention_dropout", None)) in (int, float):
            module.attention_dropout = p
            changed += 1
    return changed


class ContrastiveTrainer(Trainer):
    """A contrastive baseline: one forward over the step's texts, one loss, one optimizer step.
    Subclasses give the texts of a step and the loss of their local embeddings."""

    @property
    def learning_rate(self) -> float:
        return self.config.baseline.learning_rate

    def texts(self, records: list) -> list[str]:
        """The texts to embed for this process's records, in the layout ``loss`` expects."""
        raise NotImplementedError

    def loss(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Global-batch loss and stats from this process's embeddings (N, D) of ``texts``."""
        raise NotImplementedError

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return gather_with_grad(self.acc, x)

    def step(self, step: int) -> tuple[dict, list]:
        cfg = self.config
        self.seed_step(step)  # dropout masks repeat on resume
        t0 = time.perf_counter()
        prompts = build_prompts(
            self.tokenizer, self.texts(self.order.batch(step)),
            cfg.data.system_prompt, cfg.data.max_prompt_tokens,
        )
        self.model.train()
        embeddings, head_tie = embed_with_grad(self.model, prompts)  # (N, D)
        loss, stats = self.loss(embeddings)
        # x world: DDP averages the processes' gradients (module docstring)
        self.acc.backward(loss * self.acc.num_processes + head_tie)
        self.check_loss(loss)  # nan / inf stop the run (as a nan / inf gradient does)
        norm = self.optimizer_step()
        elapsed = time.perf_counter() - t0
        metrics = {
            "step": step,
            "contrastive/loss": float(loss.detach()),
            **{f"contrastive/{k}": v for k, v in stats.items()},
            "contrastive/grad_norm": norm,
            "lr": self.scheduler.get_last_lr()[0],
            "prompts/truncated": prompts.num_truncated,
            "time/step_s": elapsed,
            "throughput/tokens_per_s": float(prompts.attention_mask.sum()) / max(elapsed, 1e-9),
        }
        return metrics, []

    def postfix(self, metrics: dict) -> dict:
        return {"loss": f"{metrics['contrastive/loss']:.3f}",
                "acc": f"{metrics['contrastive/accuracy']:.2f}",
                "s": f"{metrics['time/step_s']:.1f}"}


class InfoNCETrainer(ContrastiveTrainer):
    """Supervised InfoNCE with in-batch and hard negatives (E5 / SimCSE-sup style)."""

    modes = ("supervised",)

    def texts(self, records: list) -> list[str]:
        # [queries; positives; negatives], each block in record order
        return ([r.query for r in records] + [r.positive for r in records]
                + [r.negative for r in records])

    def loss(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, dict]:
        q, p, n = (self.gather(block) for block in embeddings.chunk(3))  # 3 x (B, D), B global
        return info_nce(q, p, n.unsqueeze(1), self.config.baseline.temperature)  # n: (B, 1, D)


class SimCSETrainer(ContrastiveTrainer):
    """Unsupervised SimCSE: two dropout views of each text are the positives."""

    modes = ("unsupervised",)

    def __init__(self, config, accelerator=None):
        if config.batch_size < 2:
            raise GraceInputError("method 'simcse' needs batch_size >= 2: the other texts of "
                                  "the batch are the negatives")
        super().__init__(config, accelerator)

    def prepare_model(self, model):
        p = self.config.baseline.dropout
        if set_dropout(model, p) == 0:
            raise GraceInputError(
                f"model '{self.config.model.name}' has no attention or nn.Dropout module to set "
                "baseline.dropout on; SimCSE needs dropout to make its positives"
            )
        if p == 0:
            warnings.warn("baseline.dropout is 0: the two SimCSE views of a text are identical",
                          stacklevel=2)
        return super().prepare_model(model)

    def texts(self, records: list) -> list[str]:
        return list(records) + list(records)  # [view 1; view 2]: dropout differs per row

    def loss(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, dict]:
        view1, view2 = (self.gather(half) for half in embeddings.chunk(2))  # 2 x (B, D)
        return simcse_unsup(view1, view2, self.config.baseline.temperature)
