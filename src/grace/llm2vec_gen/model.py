"""The LLM2Vec-Gen model (LLM2Vec-Gen paper, arXiv 2603.10913): a frozen LLM, K trainable soft tokens and two linear heads.

    input  = tokens(instruction + " " + text) ⊕ [s_1 .. s_K]        (no chat template, left pad)
    h_k    = last-layer hidden state (after the final norm) at soft token k      (B, K, d)
    p_k    = W_r h_k + b_r        reconstruction head, d -> d: the soft prompt   (B, K, d)
    z_k    = W_a (p_k - mu)/sigma + b_a   alignment head, d -> d_teacher         (B, K, d_t)
    e      = mean_k z_k           the embedding (unnormalised; cosine at use)    (B, d_t)

Reconstruction: the frozen LM reads ONLY the K soft prompts p as ``inputs_embeds`` and then the
response tokens (teacher forcing); logits at position K-1+t predict response token t.
Decoding: the same, greedily, from p alone: the text the embedding holds.

Trainable: the K soft-token rows and the two heads; the backbone is frozen (``requires_grad``
off, kept in eval mode) and never written to. The soft tokens are a (K, d) parameter
concatenated after the text's token embeddings: the equivalent of peft ``TrainableTokens`` on
K new special tokens ``<question1>..<questionK>`` (TrainableTokens also keeps the base
embedding matrix frozen and swaps in the K trainable rows at forward time), without its two
side effects on the backbone: adding K tokens would resize the embedding matrix and, SmolLM2
tying its embeddings, the LM head, so the frozen LM could then emit ``<questionK>`` while
decoding, and the model would no longer be the backbone a checkpoint refers to. Here the
backbone stays bit-for-bit the loaded one, its vocabulary unchanged, and a checkpoint holds
K*d + the heads. The rows start as the mean of the backbone's input embeddings (what
transformers' ``resize_token_embeddings`` gives new tokens, less its 1e-9-scaled noise).

Head initialisation (``init_heads``, config ``llm2vec_gen.head_init``; the LLM2Vec-Gen paper does not say):
- ``scaled`` (default): the reconstruction head starts as ``p = alpha * h`` with ``alpha`` = mean
  token-embedding norm / norm of the final-norm weight (the norm of h after the final RMSNorm),
  so the soft prompts start at the scale of real input embeddings; the alignment head starts at
  zero. Why: with PyTorch's default init on SmolLM2-135M, |h| ~ 46, so |p| ~ 31 (10x a token
  embedding, 3.2) and the initial embedding has norm ~5 against unit-norm teacher targets; at
  lr 5e-4 the first hundred steps went into shrinking that output and the training alignment
  cosine stayed at 0.01-0.03 over 30 steps of batch 32.
- ``default``: PyTorch's ``nn.Linear`` initialisation for both heads.

Alignment input standardisation: ``mu`` and ``sigma`` (d,) are fixed buffers
(``alignment_input.mean`` / ``.scale``, saved with the weights, never trained by the optimizer).
They start as 0 and 1 (the plain head); grace.llm2vec_gen.head_fit sets them from the soft
prompts (mean_k p_k) of a few hundred training texts before training, so that the alignment
head reads inputs of unit scale per dimension instead of ones dominated by the direction every
text shares. With ``llm2vec_gen.standardize_momentum`` > 0 they then follow each training
micro-batch's statistics (moving averages): the reconstruction loss moves the soft prompts fast
(SmolLM2: its loss 10 -> 4 in 5 steps), and with fixed statistics the shift of the shared
component reached every standardised dimension and collapsed the embeddings (pairwise cosine
0.27 -> 0.99 in 20 steps). A checkpoint saved before they existed loads with 0 and 1, which is
exactly the model it was.

Dtypes: the soft tokens and heads are float32 (AdamW state); the soft tokens and p are cast to
the backbone's dtype on the way in, hidden states to float32 on the way out.
"""

from __future__ import annotations

import torch
from torch import nn

from grace.errors import GraceInputError
from grace.llm2vec_gen.checkpoint import LLM2VecGenSpec, load_trainable, save_trainable
from grace.llm2vec_gen.losses import mean_embedding
from grace.models.backbones import decoder_and_head
from grace.models.pooling import position_ids_from_mask

TRAINABLE_PREFIXES = ("soft_tokens", "reconstruction_head.", "alignment_head.")
SAVED_PREFIXES = TRAINABLE_PREFIXES + ("alignment_input.",)  # + the fixed standardisation


class Standardize(nn.Module):
    """(x - mean) / scale with per-dimension buffers (identity until set), never trained by the
    optimizer. With ``momentum`` > 0, ``track`` moves them towards each training batch's
    statistics (an exponential moving average, as BatchNorm's running statistics, but the
    forward always uses the running values, so an embedding never depends on its batch)."""

    def __init__(self, dim: int, momentum: float = 0.0):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    @torch.no_grad()
    def set(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.scale.copy_(scale)

    @torch.no_grad()
    def track(self, features: torch.Tensor) -> None:
        """mean <- (1-m) mean + m batch mean; scale^2 <- (1-m) scale^2 + m batch variance, over
        the rows of ``features`` (N, d); nothing with momentum 0 or fewer than 2 rows."""
        if self.momentum <= 0 or features.shape[0] < 2:
            return
        x = features.detach().float()
        m = self.momentum
        self.mean.mul_(1 - m).add_(x.mean(dim=0), alpha=m)
        var = self.scale.pow(2).mul_(1 - m).add_(x.var(dim=0, unbiased=False), alpha=m)
        self.scale.copy_(var.sqrt().clamp_(min=1e-6))


class LLM2VecGenModel(nn.Module):
    """Frozen backbone + soft tokens + reconstruction and alignment heads. See the module
    docstring. ``forward`` is dict-in/dict-out; ``decode`` turns soft prompts into text ids."""

    def __init__(self, backbone, spec: LLM2VecGenSpec):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.spec = spec
        d = backbone.config.hidden_size
        if spec.hidden_size != d:
            raise GraceInputError(f"the checkpoint was trained on a backbone with hidden size "
                                  f"{spec.hidden_size}, this one has {d}")
        rows = backbone.get_input_embeddings().weight.detach().float()  # (V, d)
        self.soft_tokens = nn.Parameter(rows.mean(dim=0).repeat(spec.num_tokens, 1))  # (K, d)
        self.reconstruction_head = nn.Linear(d, d)
        self.alignment_input = Standardize(d)
        self.alignment_head = nn.Linear(d, spec.teacher_dim)

    @torch.no_grad()
    def init_heads(self, scheme: str = "scaled") -> None:
        """Initialise the two heads (module docstring): ``scaled`` or ``default``."""
        if scheme == "default":
            self.reconstruction_head.reset_parameters()
            self.alignment_head.reset_parameters()
            return
        if scheme != "scaled":
            raise GraceInputError(f"llm2vec_gen.head_init '{scheme}' (choose scaled, default)")
        embed_norm = self.get_input_embeddings().weight.detach().float().norm(dim=-1).mean()
        final_norm = getattr(decoder_and_head(self.backbone)[0], "norm", None)
        weight = getattr(final_norm, "weight", None)
        state_norm = weight.detach().float().norm() if weight is not None else torch.tensor(1.0)
        d = self.reconstruction_head.in_features
        self.reconstruction_head.weight.copy_(torch.eye(d) * (embed_norm / state_norm))
        self.reconstruction_head.bias.zero_()
        self.alignment_head.weight.zero_()
        self.alignment_head.bias.zero_()

    # -- pieces the rest of grace asks a model for -------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: never dropout, whatever the trainer asks
        return self

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def gradient_checkpointing_enable(self, **kwargs):
        self.backbone.gradient_checkpointing_enable(**kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    def trainable_state_dict(self, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: the soft tokens, the heads and the alignment input's fixed
        standardisation (taken from ``state_dict`` if given); never the backbone."""
        source = self.state_dict() if state_dict is None else state_dict
        return {k: v for k, v in source.items() if k.startswith(SAVED_PREFIXES)}

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part, their total, and the frozen backbone's."""
        counts = {
            "soft_tokens": self.soft_tokens.numel(),
            "reconstruction_head": sum(p.numel() for p in self.reconstruction_head.parameters()),
            "alignment_head": sum(p.numel() for p in self.alignment_head.parameters()),
        }
        counts["trainable"] = sum(counts.values())
        counts["backbone_frozen"] = sum(p.numel() for p in self.backbone.parameters())
        return counts

    # -- save / load (the trainable parts and the backbone reference) -----------------------
    def save_pretrained(self, folder, state_dict: dict | None = None, **_) -> None:
        """Write the trainable parts and the spec. ``state_dict`` (as the shared checkpoint code
        passes it) is filtered to the trainable parts; the backbone is never written."""
        save_trainable(folder, self.trainable_state_dict(state_dict), self.spec)

    def load_trainable(self, folder) -> None:
        self.load_tensors(load_trainable(folder), folder)

    def load_tensors(self, tensors: dict[str, torch.Tensor], source) -> None:
        """Load the parts a checkpoint holds (``SAVED_PREFIXES``; the standardisation may be
        missing: identity), checking names and shapes; ``source`` names them in errors."""
        expected = set(self.trainable_state_dict())
        standardize = {k for k in expected if k.startswith("alignment_input.")}
        if not standardize & set(tensors):  # saved before the standardisation existed: identity
            expected -= standardize
        if set(tensors) != expected:
            raise GraceInputError(f"{source}: expected tensors {sorted(expected)}, "
                                  f"found {sorted(tensors)}")
        own = self.state_dict()
        for name, tensor in tensors.items():
            if tensor.shape != own[name].shape:
                raise GraceInputError(f"{source}: {name} has shape {tuple(tensor.shape)}, the "
                                      f"model expects {tuple(own[name].shape)}")
        self.load_state_dict(tensors, strict=False)

    # -- the model ------------------------------------------------------------------------
    def soft_token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states (after the final norm) at the K soft tokens -> (B, K, d) float32."""
        embed = self.backbone.get_input_embeddings()
        text = embed(input_ids)  # (B, L, d)
        B, K = text.shape[0], self.spec.num_tokens
        soft = self.soft_tokens.to(text.dtype).unsqueeze(0).expand(B, K, -1)  # (B, K, d)
        x = torch.cat([text, soft], dim=1)  # (B, L+K, d)
        mask = torch.cat([attention_mask, attention_mask.new_ones(B, K)], dim=1)  # (B, L+K)
        decoder, _ = decoder_and_head(self.backbone)
        out = decoder(inputs_embeds=x, attention_mask=mask,
                      position_ids=position_ids_from_mask(mask), use_cache=False)
        return out.last_hidden_state[:, -K:].float()  # (B, K, d)

    def reconstruction_logits(self, soft_prompts: torch.Tensor, response_ids: torch.Tensor,
                              response_mask: torch.Tensor) -> torch.Tensor:
        """Frozen-LM logits over the response given ONLY the soft prompts: (B, T, V), where
        ``[:, t]`` predicts ``response_ids[:, t]`` (right-padded (B, T) ids and mask)."""
        B, K = soft_prompts.shape[:2]
        T = response_ids.shape[1]
        embed = self.backbone.get_input_embeddings()
        x = torch.cat([soft_prompts.to(self.dtype), embed(response_ids[:, :-1])], dim=1)  # (B, K+T-1, d)
        mask = torch.cat([response_mask.new_ones(B, K), response_mask[:, :-1]], dim=1)  # (B, K+T-1)
        out = self.backbone(inputs_embeds=x, attention_mask=mask, use_cache=False, logits_to_keep=T)
        return out.logits  # (B, T, V): positions K-1 .. K+T-2

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                response_ids: torch.Tensor | None = None,
                response_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``soft_prompts`` p (B, K, d), ``aligned`` z (B, K, d_t), ``embedding`` e (B, d_t), and
        with a response, ``recon_logits`` (B, T, V)."""
        h = self.soft_token_states(input_ids, attention_mask)  # (B, K, d)
        p = self.reconstruction_head(h)  # (B, K, d)
        if self.training:  # follow the soft prompts as training moves them (momentum 0: fixed)
            self.alignment_input.track(p.mean(dim=1))
        z = self.alignment_head(self.alignment_input(p))  # (B, K, d_t)
        out = {"soft_prompts": p, "aligned": z, "embedding": mean_embedding(z)}
        if response_ids is not None:
            out["recon_logits"] = self.reconstruction_logits(p, response_ids, response_mask)
        return out

    @torch.no_grad()
    def decode(self, soft_prompts: torch.Tensor, max_new_tokens: int, eos_token_id: int | list[int],
               pad_token_id: int) -> list[list[int]]:
        """Greedy decoding by the frozen LM from the soft prompts alone -> token ids per row,
        up to (not including) the first end token (``eos_token_id``: one id or several)."""
        from transformers import GenerationConfig

        ends = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        B, K = soft_prompts.shape[:2]
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=ends, pad_token_id=pad_token_id)
        ids = self.backbone.generate(
            inputs_embeds=soft_prompts.to(self.dtype),
            attention_mask=torch.ones(B, K, dtype=torch.long, device=soft_prompts.device),
            generation_config=config,
        )  # (B, <= max_new_tokens): only the new tokens
        rows = []
        for row in ids.tolist():
            stop = next((i for i, t in enumerate(row) if t in ends), len(row))
            rows.append(row[:stop])
        return rows
