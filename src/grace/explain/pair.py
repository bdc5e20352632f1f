"""Why two texts are close: the cosine of their embeddings split exactly over their tokens.

    from grace import GraceEncoder
    from grace.explain.pair import explain_pair
    ex = explain_pair(GraceEncoder.from_pretrained("smollm2-135m"), "text A", "text B")
    ex.cosine, ex.a.rationale, ex.a.top(5), ex.b.top(5, sign=-1)

The shares come from grace.explain.attribution (exact: a side's shares sum to the cosine). What the
"tokens" of a side are depends on the encoder:

- GRACE (``GraceEncoder``, rationale ``greedy`` or ``none``, either pooling): every pooled position (GRACE paper, arXiv 2510.04506):
  the user text, the chat-template tokens around it, and the rationale (EOS included when the
  rationale ended by itself); the system prompt is not pooled and so has no share. The greedy
  rationale is the one ``encode`` uses (read from the rationale cache when it holds it); the
  hidden states come from one forward pass over prompt + rationale, so the cosine equals the
  encoder's up to float rounding. With the balanced pooling each token's share carries its
  weight (the text's tokens share one half, the rationale's the other;
  grace.models.pooling.token_weights). ``sampled`` encodings average several rationales and are
  refused (explain a greedy encoder instead).
- LLM2Vec-Gen: its K aligned vectors (``<soft1>`` ... ``<softK>``): the embedding is their
  mean; each side also gets ``decoded``, the frozen LM's greedy reading of its soft prompts.
- sentence-transformers models with mean pooling (all-MiniLM-L6-v2): their word pieces.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import torch

from grace.encoders import GraceEncoder, LLM2VecGenEncoder, SentenceTransformerEncoder
from grace.encoders.base import validate_texts
from grace.errors import GraceInputError
from grace.explain.attribution import pair_attributions
from grace.models.pooling import token_weights

SEGMENTS = ("text", "rationale", "soft")  # where a token sits: prompt side, rationale, soft slot


@dataclass
class TokenShare:
    token: str  # the token as text (decoded alone; template tokens kept)
    contribution: float  # its exact share of the cosine
    segment: str  # text | rationale | soft


@dataclass
class SideExplanation:
    text: str
    rationale: str  # GRACE's rationale ("" without one)
    tokens: list[TokenShare]
    decoded: str | None = None  # LLM2Vec-Gen: what the embedding decodes to

    def top(self, k: int = 5, sign: int = 1) -> list[TokenShare]:
        """The ``k`` tokens adding most (``sign=1``) or subtracting most (``sign=-1``)."""
        ranked = sorted((t for t in self.tokens if sign * t.contribution > 0),
                        key=lambda t: -sign * t.contribution)
        return ranked[:k]

    @property
    def total(self) -> float:
        return float(sum(t.contribution for t in self.tokens))


@dataclass
class Explanation:
    cosine: float
    a: SideExplanation
    b: SideExplanation
    model: str = ""
    kind: str = "grace"  # grace | llm2vec-gen | sentence-transformers

    def to_dict(self) -> dict:
        return asdict(self)


def _side(text: str, rationale: str, labels: list[str], segments: list[str], shares: torch.Tensor,
          decoded: str | None = None) -> SideExplanation:
    tokens = [TokenShare(t, float(c), s) for t, c, s in zip(labels, shares.tolist(), segments)]
    return SideExplanation(text, rationale, tokens, decoded)


@functools.singledispatch
def pooled_states(encoder, texts: list[str], decode_tokens: int):
    """What an encoder pools, per text: ``(kind, [(states (n, D) float32, token labels,
    segments, pooling weights (n,) or None for the plain mean) per text], rationales, decodings
    or None)``. One implementation per encoder class
    (``functools.singledispatch``): a new encoder class registers its own."""
    raise GraceInputError(f"explain does not know how {type(encoder).__name__} pools its tokens")


@pooled_states.register
@torch.no_grad()
def _grace_states(encoder: GraceEncoder, texts: list[str], decode_tokens: int):
    """GRACE: the pooled hidden states of text and rationale (greedy or none)."""
    from grace.encoders.encode import encode_batch
    from grace.models.prompt import build_prompts
    from grace.models.backbones import end_token_ids
    from grace.rollout.hf_path import forward_hidden, sequences_from_responses

    opts, tok, model = encoder.options, encoder.tokenizer, encoder.model
    if opts.rationale == "sampled":
        raise GraceInputError("explain needs a deterministic encoding: rationale 'greedy' or "
                              "'none', not 'sampled' (several averaged rationales)")
    cache = encoder.cache if opts.rationale != "none" else None
    _, rationales, ids = encode_batch(model, tok, texts, opts, cache,
                                      encoder.fingerprint if cache is not None else None)
    prompts = build_prompts(tok, texts, opts.system_prompt, opts.max_prompt_tokens)
    seqs = sequences_from_responses(prompts, ids, tok.pad_token_id, end_token_ids(model, tok))
    device = next(model.parameters()).device
    on_device = replace(seqs, input_ids=seqs.input_ids.to(device),
                        attention_mask=seqs.attention_mask.to(device))
    hidden = forward_hidden(model, on_device)  # (N, L, D) after the final norm
    out = []
    for row in range(len(texts)):
        keep = seqs.pool_mask[row].bool()  # (L,)
        positions = keep.nonzero().squeeze(1)
        token_ids = seqs.input_ids[row, positions].tolist()
        labels = [tok.decode([t]) for t in token_ids]
        is_rationale = positions >= seqs.prompt_len
        segments = ["rationale" if r else "text" for r in is_rationale.tolist()]
        out.append((hidden[row, keep.to(device)].float().cpu(), labels, segments,
                    token_weights(is_rationale, opts.pooling)))
    return "grace", out, rationales, [None] * len(texts)


@pooled_states.register
@torch.no_grad()
def _llm2vec_gen_states(encoder: LLM2VecGenEncoder, texts: list[str], decode_tokens: int):
    """LLM2Vec-Gen: the K aligned soft-token vectors, and what the embedding decodes to."""
    from grace.llm2vec_gen.inputs import build_encoder_inputs

    model, tok = encoder.model, encoder.tokenizer
    device = next(model.parameters()).device
    K = model.spec.num_tokens
    enc = build_encoder_inputs(tok, texts, encoder.query_instruction, encoder.options.max_prompt_tokens, K)
    out = model(enc.input_ids.to(device), enc.attention_mask.to(device))
    decoded = model.decode(out["soft_prompts"], decode_tokens, tok.eos_token_id, tok.pad_token_id)
    labels = [f"<soft{k + 1}>" for k in range(K)]
    states = [(out["aligned"][row].float().cpu(), labels, ["soft"] * K, None) for row in range(len(texts))]
    return ("llm2vec-gen", states, [""] * len(texts),
            [tok.decode(d, skip_special_tokens=True).strip() for d in decoded])


def _mean_pooling(pooling) -> bool:
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers >= 6: "mean" or a tuple
    if mode is not None:
        return mode == "mean" if isinstance(mode, str) else tuple(mode) == ("mean",)
    flags = [k for k, v in vars(pooling).items() if k.startswith("pooling_mode_") and v is True]
    return flags == ["pooling_mode_mean_tokens"]  # older releases: one flag per mode


@pooled_states.register
@torch.no_grad()
def _sentence_transformers_states(encoder: SentenceTransformerEncoder, texts: list[str],
                                  decode_tokens: int):
    """Mean-pooled sentence-transformers: the word-piece embeddings."""
    st = encoder.model
    modules = list(st.children())
    names = [type(m).__name__ for m in modules]
    if names[1:] not in (["Pooling"], ["Pooling", "Normalize"]) or not _mean_pooling(modules[1]):
        raise GraceInputError("explain splits the cosine of mean-pooled embeddings; this "
                              f"sentence-transformers model ({' -> '.join(names)}) pools otherwise")
    features = (getattr(st, "preprocess", None) or st.tokenize)(texts)  # preprocess: ST >= 6
    features = {k: v.to(st.device) if torch.is_tensor(v) else v for k, v in features.items()}
    token_embeddings = modules[0](features)["token_embeddings"]  # (N, L, D)
    out = []
    for row in range(len(texts)):
        keep = features["attention_mask"][row].bool()
        ids = features["input_ids"][row][keep].tolist()
        labels = [st.tokenizer.decode([t]) for t in ids]
        out.append((token_embeddings[row, keep].float().cpu(), labels, ["text"] * len(ids), None))
    return "sentence-transformers", out, [""] * len(texts), [None] * len(texts)


def explain_pair(encoder, text_a: str, text_b: str, decode_tokens: int = 32) -> Explanation:
    """The cosine of ``text_a`` and ``text_b`` under ``encoder`` and each token's exact share
    (module docstring). ``decode_tokens``: length of LLM2Vec-Gen's decodings."""
    texts = validate_texts([text_a, text_b])
    kind, states, rationales, decoded = pooled_states(encoder, texts, decode_tokens)
    (h_a, labels_a, seg_a, w_a), (h_b, labels_b, seg_b, w_b) = states
    cosine, shares_a, shares_b = pair_attributions(h_a, h_b, w_a, w_b)
    return Explanation(
        cosine=cosine,
        a=_side(texts[0], rationales[0], labels_a, seg_a, shares_a, decoded[0]),
        b=_side(texts[1], rationales[1], labels_b, seg_b, shares_b, decoded[1]),
        model=str(encoder.name), kind=kind)
