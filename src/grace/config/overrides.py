"""Config overrides from the command line: ``--section.field VALUE`` flags as dotted keys, which
grace.config.schema.load_config then type-checks (the one override path: file, then flags).
``grace train`` and the benchmarks that take a run's settings parse them here; ``dotted`` is the
other direction, a nested config as the same dotted keys (what a resume compares and what
trackers record)."""

from __future__ import annotations

from grace.errors import GraceInputError


def dotted_overrides(extra: list[str]) -> dict[str, str]:
    """Parse ``--section.field VALUE`` (or ``--section.field=VALUE``) pairs."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            raise GraceInputError(f"unexpected argument '{arg}'")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise GraceInputError(f"flag --{key} needs a value")
            value = extra[i + 1]
            i += 1
        overrides[key.replace("-", "_")] = value
        i += 1
    return overrides


def dotted(values: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys, values unchanged:
    ``{"optim": {"learning_rate": x}}`` -> ``{"optim.learning_rate": x}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
