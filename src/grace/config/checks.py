"""The checks every config section runs on its fields (``checks()`` in grace.config.schema): each
returns ``(holds, message)``, the message naming the key, the rule and the value given."""

from __future__ import annotations

import math

Check = tuple[bool, str]  # (holds, "key ..." message if it does not)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def rule(ok: bool, key: str, rule: str, value) -> Check:
    return ok, f"{key} must be {rule} (got {value!r})"


def choice(key: str, value, choices) -> Check:
    return value in choices, f"{key} '{value}' (choose {', '.join(choices)})"


def positive(key: str, value, why: str = "") -> Check:
    return rule(finite(value) and value > 0, key, f"> 0 and finite{why}", value)


def non_negative(key: str, value) -> Check:
    return rule(finite(value) and value >= 0, key, ">= 0 and finite", value)


def at_least(key: str, value: int, low: int, why: str = "") -> Check:
    return rule(value >= low, key, f">= {low}{why}", value)


def fraction(key: str, value) -> Check:  # a probability such as dropout
    return rule(finite(value) and 0 <= value < 1, key, "in [0, 1)", value)
