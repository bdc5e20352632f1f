"""Start the LLM2Vec-Gen alignment head where a linear head on the untrained features can be.

The embedding is e = W_a (mean_k p_k - mu) / sigma + b_a (grace.llm2vec_gen.model). Before
training, on N training texts (their soft prompts p from the untrained model, their targets t =
the teacher's embeddings of the backbone's responses):

- ``standardization``: mu and sigma, the per-dimension mean and standard deviation of
  mean_k p_k over the N texts. Without them the head reads inputs dominated by one direction
  every text shares (the soft tokens are the same for all texts), and a head trained with Adam
  from zero learns that shared direction (the teacher's mean) first;
- ``ridge_head``: W_a, b_a by ridge regression from the standardised features to t, the penalty
  chosen by efficient leave-one-out (scikit-learn's ``RidgeCV``) over ``RIDGE_ALPHAS``. The head
  then starts at the closed-form optimum of a linear head on those features, instead of at zero
  (where the alignment loss sends the soft tokens no gradient at all).

Both are pure functions of tensors; ``fit_alignment_head`` runs the model and sets the head.
"""

from __future__ import annotations

import torch

from grace.data.length_sorted import length_sorted_batches
from grace.llm2vec_gen.diagnostics import RIDGE_ALPHAS
from grace.llm2vec_gen.inputs import build_encoder_inputs

MIN_SCALE = 1e-6  # a dimension that does not vary across the texts is divided by this, not by 0
FEW_TEXTS = 64  # fewer fit texts than this: a warning (statistics of a handful of texts mislead)


def standardization(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (population) standard deviation of ``features`` (N, d), N >= 2;
    a standard deviation below ``MIN_SCALE`` becomes 1 (the dimension is only centred)."""
    if features.shape[0] < 2:
        raise ValueError("standardization needs at least 2 rows")
    x = features.double()
    mean = x.mean(dim=0)  # (d,)
    std = x.std(dim=0, unbiased=False)  # (d,)
    scale = torch.where(std < MIN_SCALE, torch.ones_like(std), std)
    return mean.float(), scale.float()


def ridge_head(features: torch.Tensor, targets: torch.Tensor, alphas=RIDGE_ALPHAS
               ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(weight (D, d), bias (D,), the chosen penalty) of the ridge regression ``features`` (N, d)
    -> ``targets`` (N, D) with an unpenalised intercept, the penalty chosen by leave-one-out."""
    from sklearn.linear_model import RidgeCV

    fit = RidgeCV(alphas=list(alphas)).fit(features.double().numpy(), targets.double().numpy())
    weight = torch.from_numpy(fit.coef_).float().reshape(targets.shape[1], features.shape[1])
    bias = torch.as_tensor(fit.intercept_, dtype=torch.float32).reshape(targets.shape[1])
    return weight, bias, float(fit.alpha_)


@torch.no_grad()
def soft_prompt_means(model, tokenizer, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """mean_k p_k of each text (the encoder inputs as given, no instruction added) -> (N, d)
    float32 on the CPU, in input order."""
    device = next(model.parameters()).device
    out = torch.zeros(len(texts), model.spec.hidden_size)
    was_training = model.training
    model.eval()
    for batch in length_sorted_batches([len(t) for t in texts], batch_size):
        enc = build_encoder_inputs(tokenizer, [texts[i] for i in batch], "",
                                   model.spec.max_input_tokens, model.spec.num_tokens)
        h = model.soft_token_states(enc.input_ids.to(device), enc.attention_mask.to(device))
        out[batch] = model.reconstruction_head(h).mean(dim=1).float().cpu()  # (b, d)
    model.train(was_training)
    return out


@torch.no_grad()
def fit_alignment_head(model, tokenizer, texts: list[str], targets: torch.Tensor, *,
                       standardize: bool, ridge: bool, batch_size: int = 16) -> dict:
    """Set the alignment input's standardisation and/or the alignment head from ``texts`` and
    their teacher ``targets`` (N, D); return what was fitted (for the run's log)."""
    features = soft_prompt_means(model, tokenizer, texts, batch_size)  # (N, d)
    info = {"texts": len(texts)}
    if standardize:
        mean, scale = standardization(features)
        model.alignment_input.set(mean, scale)
        info["scale_median"] = float(scale.median())
    if ridge:
        weight, bias, alpha = ridge_head(model.alignment_input(features), targets.float().cpu())
        device = model.alignment_head.weight.device
        model.alignment_head.weight.copy_(weight.to(device))
        model.alignment_head.bias.copy_(bias.to(device))
        info["ridge_alpha"] = alpha
    return info


def start_alignment_head(model, tokenizer, teacher, texts: list[str], answers: list[str], g,
                         batch_size: int = 16) -> dict | None:
    """What a run does before step 1 (``g``: its ``LLM2VecGenConfig``): fit ``standardize`` and
    ``align_init`` on the first ``g.init_texts`` of ``texts`` and the teacher's embeddings of
    their ``answers``; None when both are off."""
    ridge = g.align_init == "ridge"
    if not (g.standardize or ridge):
        return None
    texts, answers = texts[: g.init_texts], answers[: g.init_texts]
    if len(texts) < FEW_TEXTS:
        import warnings

        warnings.warn(f"llm2vec-gen: standardisation / ridge start fitted on {len(texts)} texts "
                      f"only (fewer than {FEW_TEXTS}): texts unlike them can get out-of-scale "
                      "embeddings; consider standardize false / align_init none", stacklevel=2)
    targets = teacher.encode(answers)  # (N, d_t)
    return fit_alignment_head(model, tokenizer, texts, targets, standardize=g.standardize,
                              ridge=ridge, batch_size=batch_size)
