"""``GET /metrics``: the server's counters and histograms in Prometheus's text exposition format
(version 0.0.4), written here by hand: prometheus_client is not a dependency, and the format is a
few lines per family (``# HELP``, ``# TYPE``, one ``name{label="value"} number`` line per sample;
a histogram's ``_bucket`` lines are cumulative and end at ``le="+Inf"`` == ``_count``).

What is measured (names after text-embeddings-inference's ``te_*``, with a ``grace_`` prefix):

    grace_http_requests_total{method, route, status}   every answer, errors included (RequestMetrics)
    grace_http_request_duration_seconds{route}         time to answer, histogram
    grace_queue_texts / grace_queue_requests           accepted and not yet answered / waiting for
                                                       the model (TEI's te_queue_size), read at scrape
    grace_batch_texts, grace_batch_tokens              texts and input tokens per model call
    grace_model_call_duration_seconds                  time of each model call
    grace_model_calls_total, grace_batcher_requests_total{outcome}   the batcher's own counts
    grace_rationale_cache_{hits,misses}_total          the rationale cache (absent when it is off)

Knows nothing of the model or the routes beyond the route templates it is given."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

from starlette.routing import compile_path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def powers_of_two(limit: int) -> tuple[float, ...]:
    """1, 2, 4 ... up to the first power of two >= ``limit`` (buckets for counts)."""
    return tuple(float(2 ** k) for k in range(max(limit, 1).bit_length() + 1)
                 if k == 0 or 2 ** (k - 1) < limit)


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


def family(name: str, kind: str, help_text: str, lines: Iterable[str]) -> str:
    """One metric family: its HELP and TYPE lines, then its sample lines."""
    return "\n".join([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines])


def reading(name: str, kind: str, help_text: str, values: dict[tuple, float],
            labels: tuple[str, ...] = ()) -> str:
    """A counter or gauge whose values are read now (``{label values: value}``)."""
    return family(name, kind, help_text,
                  (f"{name}{_labels(labels, key)} {_number(v)}" for key, v in values.items()))


class Counter:
    """Counts by label values (``inc(*label_values)``)."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self.values: dict[tuple, float] = {}

    def inc(self, *key, amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> str:
        return reading(self.name, "counter", self.help, self.values, self.labels)


class Histogram:
    """Observations in cumulative buckets by label values (``observe(value, *label_values)``)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...],
                 labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.series: dict[tuple, list] = {}  # key -> [count per bucket (not cumulative), sum]

    def observe(self, value: float, *key) -> None:
        counts, total = self.series.setdefault(key, [[0] * len(self.buckets), 0.0])
        counts[next(i for i, le in enumerate(self.buckets) if value <= le)] += 1
        self.series[key][1] = total + value

    def render(self) -> str:
        lines = []
        for key, (counts, total) in self.series.items():
            running = 0
            for le, n in zip(self.buckets, counts):
                running += n
                lines.append(f"{self.name}_bucket"
                             f"{_labels(self.labels + ('le',), key + (_number(le),))} {running}")
            lines.append(f"{self.name}_sum{_labels(self.labels, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return family(self.name, "histogram", self.help, lines)


class ServerMetrics:
    """The server's metrics: fed by ``RequestMetrics`` (every answer) and the batcher's
    ``observe`` (every model call); the batcher's and the cache's own counts are read when
    ``render`` is called."""

    def __init__(self, max_batch: int, max_batch_tokens: int):
        self.requests = Counter("grace_http_requests_total", "HTTP answers by route and status",
                                ("method", "route", "status"))
        self.latency = Histogram("grace_http_request_duration_seconds",
                                 "Seconds from request to answer", DURATION_BUCKETS, ("route",))
        self.batch_texts = Histogram("grace_batch_texts", "Texts per model call",
                                     powers_of_two(max_batch))
        self.batch_tokens = Histogram("grace_batch_tokens", "Input tokens per model call",
                                      powers_of_two(max_batch_tokens))
        self.call_seconds = Histogram("grace_model_call_duration_seconds",
                                      "Seconds per model call", DURATION_BUCKETS)

    def observe_call(self, texts: int, tokens: int, seconds: float) -> None:
        """One model call (the batcher's ``observe``)."""
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.call_seconds.observe(seconds)

    def render(self, batcher, cache=None) -> str:
        """The exposition text: the recorded metrics, then ``batcher``'s counts and queue, and
        ``cache``'s hits and misses (None: no rationale cache)."""
        parts = [m.render() for m in (self.requests, self.latency, self.batch_texts,
                                      self.batch_tokens, self.call_seconds)]
        parts += [
            reading("grace_queue_texts", "gauge", "Texts accepted and not yet answered",
                    {(): batcher.pending}),
            reading("grace_queue_requests", "gauge", "Requests waiting for the model",
                    {(): batcher.queue.qsize()}),
            reading("grace_model_calls_total", "counter", "Model calls made", {(): batcher.calls}),
            reading("grace_batcher_requests_total", "counter",
                    "Embedding requests by outcome (answered, failed in the model call, rejected "
                    "by admission, dropped or cut because the client left)",
                    {("answered",): batcher.requests, ("failed",): batcher.failed,
                     ("rejected",): batcher.rejected, ("dropped",): batcher.dropped,
                     ("cut",): batcher.cut}, ("outcome",)),
        ]
        if cache is not None:
            parts.append(reading("grace_rationale_cache_hits_total", "counter",
                                 "Rationales found in the cache", {(): cache.hits}))
            parts.append(reading("grace_rationale_cache_misses_total", "counter",
                                 "Rationales generated (not in the cache)", {(): cache.misses}))
        return "\n".join(parts) + "\n"


class RequestMetrics:
    """ASGI middleware (the outermost): counts every answer by method, route template and status
    and times it, including the 413/408 that BodyLimit sends before routing and the JSON 500 of
    InternalErrors. The route is the first of ``paths()`` (the app's path templates, read at the
    first request) that the path matches, or ``other`` (no label per stray URL)."""

    def __init__(self, app, metrics: ServerMetrics, paths: Callable[[], Iterable[str]]):
        self.app, self.metrics, self.paths = app, metrics, paths
        self._templates: list | None = None

    def _route(self, path: str) -> str:
        if self._templates is None:
            self._templates = [(template, compile_path(template)[0]) for template in self.paths()]
        return next((t for t, regex in self._templates if regex.match(path)), "other")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), [500]

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = self._route(scope["path"])
            self.metrics.requests.inc(scope["method"], route, str(status[0]))
            self.metrics.latency.observe(time.perf_counter() - began, route)
