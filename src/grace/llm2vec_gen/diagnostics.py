"""Is LLM2Vec-Gen learning per-text embeddings, or only the teacher's mean direction?

Cheap figures on N training texts, for a checkpoint or an untrained model (and, the first two,
on every training batch: grace.llm2vec_gen.trainer logs them):

- ``cosine_to_teacher``: mean cos(e_i, t_i) between the model's embedding of a text and the
  teacher's embedding of the backbone's response to it (what the alignment loss pulls up);
- ``constant_baseline``: mean cos(c, t_i) for the best constant predictor, c = the mean of the
  normalised targets. A model at or below this has learned the average direction only;
- ``pairwise_model`` / ``pairwise_teacher``: mean cos(x_i, x_j) over pairs i != j of the
  model's embeddings and of the teacher's (near 1: every text gets the same vector);
- ``ridge_heldout``: a ridge regression from the mean of the K soft-token states (what the heads
  read) to the targets, fitted on 80% of the texts (penalty by leave-one-out on those) and
  scored as mean cosine on the other 20%: about the ceiling a linear head reaches on these
  features with that many texts;
- ``ridge_train``: the same fit scored on its own 80% (over-fitting shows as a gap).

And for decodings: ``unigram_f1`` of a decoding against the backbone's answer to the same text,
beside the same figure against another text's answer (``decoding_overlap``).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from grace.data.length_sorted import length_sorted_batches
from grace.llm2vec_gen.inputs import build_encoder_inputs


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine over all pairs i != j of the rows of ``x`` (N, D), N >= 2."""
    n = x.shape[0]
    if n < 2:
        raise ValueError("mean_pairwise_cosine needs at least 2 rows")
    unit = F.normalize(x.float(), dim=-1)  # (N, D)
    sims = unit @ unit.T  # (N, N), diagonal 1
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def constant_baseline_cosine(targets: torch.Tensor) -> float:
    """Mean cos(c, t_i) of the best constant predictor c = normalised mean of the normalised
    targets (N, D) (it maximises the mean cosine among constants)."""
    unit = F.normalize(targets.float(), dim=-1)  # (N, D)
    c = F.normalize(unit.mean(dim=0), dim=0)  # (D,)
    return float((unit @ c).mean())


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cos(a_i, b_i) over rows. (N, D), (N, D) -> float."""
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean())


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))  # chosen by CV on the fit rows


def ridge_cosines(features: torch.Tensor, targets: torch.Tensor, alphas=RIDGE_ALPHAS,
                  holdout: float = 0.2, seed: int = 0) -> tuple[float, float]:
    """(held-out, training) mean cosine of a ridge regression features (N, d) -> targets (N, D)
    on a seeded split (``holdout`` of the rows held out; features standardised on the fit rows;
    the penalty chosen among ``alphas`` by leave-one-out on the fit rows only)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = features.shape[0]
    n_test = max(1, int(round(n * holdout)))
    if n - n_test < 2:
        raise ValueError(f"ridge_cosines needs more rows than {n}")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    x, y = features.float().numpy(), targets.float().numpy()
    fit = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(x[train], y[train])
    held = mean_cosine(torch.from_numpy(fit.predict(x[test])), torch.from_numpy(y[test]))
    seen = mean_cosine(torch.from_numpy(fit.predict(x[train])), torch.from_numpy(y[train]))
    return held, seen


@torch.no_grad()
def model_outputs(model, tokenizer, texts: list[str], instruction: str, batch_size: int = 16
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, d_t), mean soft-token states (N, d)), float32 on the CPU, input order."""
    device = next(model.parameters()).device
    emb = torch.zeros(len(texts), model.spec.teacher_dim)
    states = torch.zeros(len(texts), model.spec.hidden_size)
    model.eval()
    for batch in length_sorted_batches([len(t) for t in texts], batch_size):
        enc = build_encoder_inputs(tokenizer, [texts[i] for i in batch], instruction,
                                   model.spec.max_input_tokens, model.spec.num_tokens)
        ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
        h = model.soft_token_states(ids, mask)  # (b, K, d)
        states[batch] = h.mean(dim=1).float().cpu()
        emb[batch] = model(ids, mask)["embedding"].float().cpu()  # (b, d_t)
    return emb, states


def alignment_figures(embeddings: torch.Tensor, targets: torch.Tensor,
                      states: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Every figure of the module docstring (the ridge ones only with ``states``)."""
    out = {
        "texts": int(embeddings.shape[0]),
        "cosine_to_teacher": mean_cosine(embeddings, targets),
        "constant_baseline": constant_baseline_cosine(targets),
        "pairwise_model": mean_pairwise_cosine(embeddings),
        "pairwise_teacher": mean_pairwise_cosine(targets),
    }
    if states is not None:
        out["ridge_heldout"], out["ridge_train"] = ridge_cosines(states, targets, seed=seed)
    return out


def diagnose(model, tokenizer, teacher, texts: list[str], responses: list[str],
             instruction: str = "", batch_size: int = 16, seed: int = 0) -> dict:
    """The figures for ``model`` on ``texts`` (encoder inputs as trained: ``instruction`` before
    each) against ``teacher``'s embeddings of ``responses`` (the backbone's answers)."""
    if len(texts) != len(responses) or len(texts) < 5:
        raise ValueError("diagnose needs as many responses as texts, and at least 5 texts")
    targets = teacher.encode(responses).float().cpu()  # (N, d_t)
    emb, states = model_outputs(model, tokenizer, texts, instruction, batch_size)
    return alignment_figures(emb, targets, states, seed=seed)


# -- does the embedding decode to what the backbone would have said? -------------------------
WORD = re.compile(r"\w+", re.UNICODE)


def unigram_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: lower-cased word tokens (``\\w+``), counted with multiplicity;
    0 when either side has no words."""
    pred, ref = WORD.findall(prediction.lower()), WORD.findall(reference.lower())
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def decoding_overlap(decoded: list[str], answers: list[str], seed: int = 0) -> dict:
    """Mean unigram F1 of each decoding against its own text's answer, and against the answer
    of another text (a seeded derangement: every decoding gets someone else's answer), the
    chance level of the same vocabulary."""
    n = len(decoded)
    if n != len(answers) or n < 2:
        raise ValueError("decoding_overlap needs as many answers as decodings, at least 2")
    shift = 1 + int(np.random.default_rng(seed).integers(n - 1))  # 1..n-1: no fixed point
    order = np.random.default_rng(seed + 1).permutation(n)
    other = {int(order[i]): int(order[(i + shift) % n]) for i in range(n)}
    return {"decoded": n,
            "f1_paired": float(np.mean([unigram_f1(d, a) for d, a in zip(decoded, answers)])),
            "f1_shuffled": float(np.mean([unigram_f1(decoded[i], answers[other[i]]) for i in range(n)]))}
