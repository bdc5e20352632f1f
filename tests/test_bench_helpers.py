"""Helpers of the speed benchmarks: the profile's op categories and the matmul limit."""

from benchmarks.speed import limits
from benchmarks.speed import profile_steps as prof


def test_profile_categories():
    assert prof.category("aten::addmm") == "matmul" and prof.category("aten::mm") == "matmul"
    assert prof.category("aten::_foreach_mul_") == "optimizer"
    assert prof.category("aten::_fused_adamw_") == "optimizer"
    assert prof.category("aten::mul") == "norms / activations / elementwise"
    assert prof.category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert prof.category("aten::searchsorted") == "sampling / log-softmax"
    assert prof.category("aten::index_select") == "cache / index copies"
    assert prof.category("aten::something_new") == "other ops"
    assert prof.category("aten::t") == "cache / index copies"
    assert prof.category("aten::tanh") == "other ops"  # not "aten::t"
    assert prof.category("aten::new_zeros") == "cache / index copies"  # not "aten::ne"


def test_decode_limit_counts_every_projection_and_the_head(tiny):
    import torch

    model, _ = tiny
    c = model.config
    layer, head, n = limits.linear_shapes(model)
    hd = c.hidden_size // c.num_attention_heads
    assert n == c.num_hidden_layers and head == (c.hidden_size, c.vocab_size)
    assert layer[1] == (c.hidden_size, c.num_key_value_heads * hd) and len(layer) == 7
    out = limits.decode_limit(model, torch.float32, rows=64, repeats=1)
    expected = 2 * (n * sum(i * o for i, o in layer) + head[0] * head[1])
    assert out["flops_per_token"] == expected and out["tokens_per_s"] > 0


def test_rows_floor_times_the_models_weights_and_bounds_a_rollout(tiny):
    model, _ = tiny
    floor = limits.rows_floor(model, rows=4, repeats=1)
    assert floor["rows"] == 4 and floor["tokens_per_s"] == 4 / floor["step_seconds"] > 0
    limit = {"layer_seconds_per_token": 0.5}
    # 10 prompt tokens at 0.5 s each, then 3 steps at the floor's step time
    assert limits.best_rollout_seconds(limit, {"step_seconds": 2.0}, 10, 3) == 5.0 + 6.0
