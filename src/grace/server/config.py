"""``ServerConfig``: every ``grace serve`` setting, each documented once where it is defined,
checked when it is made (a bad value is a one-line GraceInputError before anything starts). It
knows nothing of HTTP; the app (grace.server.app), the request checks (grace.server.protocol) and
the start-up (grace.server.startup) read it."""

from __future__ import annotations

from dataclasses import dataclass

from grace.errors import GraceInputError


@dataclass
class ServerConfig:
    """``grace serve`` settings."""

    model: str = "tiny-random"  # what GraceEncoder.from_pretrained loads
    host: str = "127.0.0.1"
    port: int = 8000
    rationale: str = "greedy"  # none | greedy (sampled is refused: explanations need one rationale)
    max_new_tokens: int | None = None  # rationale length cap; None: the model's own (a training
    # checkpoint's rollout.max_new_tokens, else 64)
    dtype: str = "float32"  # float32 | bfloat16
    cache: bool = True  # the on-disk rationale cache (a text seen before costs no generation)
    max_texts: int = 64  # inputs per request (/v1/embeddings, /embed, /tokenize); more -> 413
    max_chars: int = 8192  # characters per text; more -> 413 (/embed truncate=true: cut)
    max_input_tokens: int = 512  # tokens per text (the tokenizer's count, no special tokens); more
    # -> 413 (/embed truncate=true: cut). GRACE's encoder takes prompts of up to max_prompt_tokens
    # (1024, the template ~46 of them with SmolLM2) and cuts the tail of longer ones (a warning)
    max_body_bytes: int = 4_000_000  # request body; more -> 413
    max_batch: int = 32  # texts encoded together across concurrent requests (per model call)
    max_batch_tokens: int = 16384  # input tokens per model call (TEI's --max-batch-tokens; its
    # default); >= max_input_tokens, so that every accepted text fits a call
    batch_wait_ms: float = 5.0  # how long a gathering waits for more requests
    max_pending_texts: int = 256  # texts accepted and not yet answered; more -> 429 (>= max_texts)
    body_timeout_s: float = 10.0  # to receive a whole body (4 MB at ~3.2 Mbit/s); longer -> 408

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_input_tokens", "max_body_bytes", "max_batch",
                     "max_batch_tokens", "max_pending_texts", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise GraceInputError(f"grace serve: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise GraceInputError(f"grace serve: port {self.port} is out of range (0-65535; 0 "
                                  "picks a free one)")
        if not self.body_timeout_s > 0:
            raise GraceInputError(f"grace serve: body_timeout_s must be > 0, got {self.body_timeout_s}")
        if self.max_pending_texts < self.max_texts:
            raise GraceInputError(
                f"grace serve: max_pending_texts ({self.max_pending_texts}) must be at least "
                f"max_texts ({self.max_texts}), or a full request could never be accepted")
        if self.max_batch_tokens < self.max_input_tokens:
            raise GraceInputError(
                f"grace serve: max_batch_tokens ({self.max_batch_tokens}) must be at least "
                f"max_input_tokens ({self.max_input_tokens}): a model call must hold the longest text "
                "accepted")
