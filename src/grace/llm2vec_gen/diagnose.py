"""The LLM2Vec-Gen diagnostics (grace.llm2vec_gen.diagnostics) for a run: a checkpoint, or the
untrained model its config starts from, on N of its training texts.

    .venv/bin/python benchmarks/llm2vec_gen_diagnostics.py --config llm2vec-gen            # untrained
    .venv/bin/python benchmarks/llm2vec_gen_diagnostics.py --checkpoint runs/l2v/checkpoint-120
"""

from __future__ import annotations

from grace.llm2vec_gen.diagnostics import diagnose


def training_texts(config, n: int) -> list[str]:
    """The first ``n`` distinct encoder inputs of the first epoch of ``config``'s run, in its
    data order (fewer if the epoch holds fewer)."""
    from grace.data.readers import DataFields, load_records
    from grace.llm2vec_gen.inputs import input_text
    from grace.training.loop import DataOrder

    d = config.data
    records = load_records(d.path, "unsupervised", DataFields(text=d.text_field), split=d.split)
    order = DataOrder(records, config.batch_size, config.seed, d.shuffle, 0, 1)
    texts: dict[str, None] = {}  # ordered set: repeated records count once
    for step in range(1, order.steps_per_epoch + 1):
        if len(texts) >= n:
            break
        for record in order.batch(step):
            texts[input_text(config.llm2vec_gen.train_instruction, record)] = None
    return list(texts)[:n]


def diagnose_run(config, checkpoint=None, n: int = 256, seed: int = 0) -> dict:
    """The figures for ``checkpoint`` (an LLM2Vec-Gen checkpoint folder) or, without one, for
    the untrained model ``config`` starts from, on ``n`` of its training texts. The backbone's
    responses come from the run's response cache; missing ones are generated (and cached)."""
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
    from grace.llm2vec_gen.responses import (
        ResponseCache,
        default_responses_file,
        ensure_responses,
        responder,
        response_settings,
    )
    from grace.llm2vec_gen.teacher import load_teacher
    from grace.llm2vec_gen.trainer import new_model
    from grace.models.backbones import load_backbone

    g = config.llm2vec_gen
    teacher = load_teacher(g.teacher, g.teacher_rationale)
    if checkpoint is not None:
        encoder = LLM2VecGenEncoder.from_pretrained(str(checkpoint))
        model, tokenizer = encoder.model, encoder.tokenizer
    else:
        backbone, tokenizer = load_backbone(config.model.name, config.model.dtype)
        model = new_model(backbone, config, teacher)
    settings = response_settings(model.spec.backbone, model.spec.backbone_fingerprint, g)
    path = g.responses_file or default_responses_file(settings)
    cache = ResponseCache(path, settings)
    texts = training_texts(config, n)
    backbone = responder(model.backbone, g.response_dtype, any(t not in cache for t in texts))
    ensure_responses(backbone, tokenizer, texts, cache, max_new_tokens=g.response_max_new_tokens,
                     temperature=g.response_temperature, batch_size=g.response_batch_size, seed=seed)
    figures = diagnose(model, tokenizer, teacher, texts, [cache[t].text for t in texts], seed=seed)
    return {"checkpoint": None if checkpoint is None else str(checkpoint),
            "model": config.model.name, "teacher": g.teacher, **figures}
