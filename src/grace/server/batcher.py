"""Concurrent requests encoded together: an asyncio micro-batcher in front of one model thread.

Each request puts its texts (and their token counts) on a queue and awaits a future. One worker
takes the first waiting request, then keeps taking requests while the gathering stays within
``max_batch`` texts and ``max_batch_tokens`` input tokens (``fits``) and a new one comes within
``wait_s``, encodes the distinct texts of the whole gathering in ONE call (in a single worker
thread: the model is used by one call at a time, and the event loop stays free to accept
requests), and hands every request its rows. A request larger than either limit is encoded
alone, in consecutive calls that keep both (``plan_calls``): no model call holds more than
``max_batch`` texts, nor more than ``max_batch_tokens`` tokens unless one text alone has more.

The token budget is text-embeddings-inference's ``--max-batch-tokens``: the sum of the input
token counts of a call. (TEI counts ``longest x texts`` for models that pad; GRACE pads too,
but ``encode`` sorts a call's texts by length into sub-batches, so the sum is the closer
measure of its work. Rationale tokens are not counted: every text gets ``max_new_tokens``.)

Admission (backpressure, as text-embeddings-inference does it): at most ``max_pending`` texts
are accepted and not yet answered (waiting or being encoded). A request that would go past it
is refused at once with ``Overloaded`` (the server answers 429), so a burst never builds a queue
that no client waits for; ``retry_after_s`` turns the pending texts and the measured seconds per
text (``seconds_per_text``, a running mean over recent calls) into the ``Retry-After`` it sends.
A request whose client has gone (its future cancelled, see ``submit(..., gone=...)``) is dropped
before it reaches the model, and between two calls of a request encoded in several: the work
stops at the next call boundary (a call already running is not interrupted).

Isolation: if the call for a gathering of several requests fails, each request is retried alone,
so only the request that causes the failure gets the exception; the worker goes on with the
next gathering.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np


class Overloaded(Exception):
    """The pending-text budget is full: try again later (HTTP 429)."""


class ClientGone(Exception):
    """The client left before its request was answered; nothing was encoded for it."""


def retry_after_s(pending_texts: int, seconds_per_text: float | None) -> int:
    """Whole seconds until the ``pending_texts`` already accepted are likely encoded, at
    ``seconds_per_text`` each (None: nothing measured yet); at least 1."""
    if not seconds_per_text:
        return 1
    return max(1, math.ceil(pending_texts * seconds_per_text))


def fits(texts: int, tokens: int, more_texts: int, more_tokens: int, max_batch: int,
         max_batch_tokens: int | None) -> bool:
    """Whether a call of ``texts`` texts and ``tokens`` input tokens has room for ``more_texts``
    texts of ``more_tokens`` tokens (``max_batch_tokens`` None: no token budget)."""
    return texts + more_texts <= max_batch and (
        max_batch_tokens is None or tokens + more_tokens <= max_batch_tokens)


def plan_calls(tokens: list[int], max_batch: int, max_batch_tokens: int | None = None
               ) -> list[range]:
    """Texts (their token counts, in order) split into consecutive model calls, each as long as
    ``fits`` allows; a text alone over the token budget is a call of its own.

    ``plan_calls([5, 3, 4, 10, 2], 3, 10)`` -> ``[range(0, 2), range(2, 3), range(3, 4),
    range(4, 5)]`` (5+3 fit, +4 would be 12 tokens)."""
    calls, start, used = [], 0, 0
    for i, n in enumerate(tokens):
        if i > start and not fits(i - start, used, 1, n, max_batch, max_batch_tokens):
            calls.append(range(start, i))
            start, used = i, 0
        used += n
    if tokens:
        calls.append(range(start, len(tokens)))
    return calls


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    tokens: list[int]  # input tokens of each text (the token budget's unit)


class MicroBatcher:
    """``await batcher.submit(texts)`` -> ``(embeddings (N, D), rationales)`` of those texts.

    ``encode(texts) -> (np.ndarray (N, D), list[str])`` is called from the model thread, the one
    worker of ``executor`` (which may be set later, before ``start``).
    ``max_pending``: texts accepted and not yet answered; more -> ``Overloaded`` (None: no bound).
    ``max_batch_tokens``: input tokens per model call (None: no token budget). ``observe(texts,
    tokens, seconds)`` is called after each successful model call (the server's metrics).
    """

    SMOOTHING = 0.3  # weight of the newest call in the running mean of seconds per text

    def __init__(self, encode: Callable[[list[str]], tuple[np.ndarray, list[str]]],
                 executor: ThreadPoolExecutor | None, max_batch: int = 32, wait_s: float = 0.005,
                 max_pending: int | None = None, max_batch_tokens: int | None = None,
                 observe: Callable[[int, int, float], None] | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.encode = encode
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_pending = max_pending
        self.max_batch_tokens = max_batch_tokens
        self.observe = observe
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.pending = 0  # texts accepted and not yet answered
        self.calls = 0  # model calls made (a call serves one gathering of requests)
        self.requests = 0  # requests answered
        self.failed = 0  # requests answered with an exception
        self.rejected = 0  # requests refused by admission (Overloaded)
        self.dropped = 0  # requests whose client left before the model reached them
        self.cut = 0  # requests whose client left while they were encoded (later calls skipped)
        self.seconds_per_text: float | None = None  # running mean over successful calls
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker on the running loop (a server restarted on a new loop gets a new
        queue: asyncio queues belong to one loop)."""
        if self._worker is None:
            self.queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    # -- admission --------------------------------------------------------------------------
    def check_room(self, cost: int) -> None:
        """Raise ``Overloaded`` if ``cost`` more texts would not fit the budget now (nothing is
        reserved: a request checks before it spends time on validation, then ``submit``)."""
        if self.max_pending is not None and self.pending + cost > self.max_pending:
            self.rejected += 1
            raise Overloaded(f"{self.pending} texts are waiting or being encoded; at most "
                             f"{self.max_pending} (this request has {cost})")

    def admit(self, cost: int) -> None:
        """Count ``cost`` texts as pending, or raise ``Overloaded`` if the budget is full."""
        self.check_room(cost)
        self.pending += cost

    def release(self, cost: int) -> None:
        self.pending -= cost

    async def call(self, fn: Callable, *args, cost: int = 1):
        """Run ``fn(*args)`` in the model thread under admission (for work that is not
        batched, such as explanations)."""
        self.admit(cost)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.release(cost)

    async def submit(self, texts: list[str], gone: Callable[[], Awaitable] | None = None,
                     tokens: list[int] | None = None) -> tuple[np.ndarray, list[str]]:
        """Encode ``texts`` with whatever else is waiting. ``gone``: makes an awaitable that
        finishes when the client has left; the request is then dropped (``ClientGone``).
        ``tokens``: each text's input tokens, for the token budget (None: 0 each)."""
        tokens = [0] * len(texts) if tokens is None else list(tokens)
        if len(tokens) != len(texts):
            raise ValueError(f"{len(tokens)} token counts for {len(texts)} texts")
        self.start()
        self.admit(len(texts))
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self.release(len(texts)))
        self.queue.put_nowait(_Pending(list(texts), future, tokens))
        if gone is None:
            return await future
        watcher = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            left = not future.done()
            if left:  # the client left first (or this task was cancelled): drop the request
                future.cancel()
        if left:
            raise ClientGone("the client closed the connection")
        return future.result()

    # -- the worker ---------------------------------------------------------------------------
    async def _next_live(self, timeout: float | None) -> _Pending | None:
        """The next request whose client is still waiting (requests of clients that left are
        dropped on the way); None if none comes within ``timeout`` s (None: wait for one)."""
        while True:
            if self.queue.empty():
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout=timeout)
                except asyncio.TimeoutError:
                    return None
            else:
                item = self.queue.get_nowait()
            if not item.future.cancelled():
                return item
            self.dropped += 1

    async def _gather(self) -> list[_Pending]:
        first = await self._next_live(None)
        batch, size, used = [first], len(first.texts), sum(first.tokens)
        while fits(size, used, 1, 0, self.max_batch, self.max_batch_tokens):
            item = await self._next_live(self.wait_s)
            if item is None:
                break
            if not fits(size, used, len(item.texts), sum(item.tokens), self.max_batch,
                        self.max_batch_tokens):  # keep it for the next gathering
                self._put_front(item)
                break
            batch.append(item)
            size, used = size + len(item.texts), used + sum(item.tokens)
        return batch

    def _put_front(self, item: _Pending) -> None:
        rest = [item]
        while not self.queue.empty():
            rest.append(self.queue.get_nowait())
        for pending in rest:
            self.queue.put_nowait(pending)

    def _measure(self, texts: int, seconds: float) -> None:
        per_text = seconds / texts
        old = self.seconds_per_text
        self.seconds_per_text = per_text if old is None else (
            (1 - self.SMOOTHING) * old + self.SMOOTHING * per_text)

    async def _encode(self, live: list[_Pending]) -> None:
        """The distinct texts of ``live`` in the calls of ``plan_calls`` (one call unless a single
        request is larger than a call), stopping before a call if every client has left; on
        failure, each request alone (if there are several)."""
        loop = asyncio.get_running_loop()
        counts = {t: n for p in live for t, n in zip(p.texts, p.tokens)}
        unique = list(counts)  # distinct texts, in order
        tokens = [counts[t] for t in unique]
        parts = []
        try:
            for call in plan_calls(tokens, self.max_batch, self.max_batch_tokens):
                if call.start and all(p.future.cancelled() for p in live):  # nobody waits any more
                    self.cut += len(live)
                    return
                chunk = unique[call.start:call.stop]
                began = time.perf_counter()
                parts.append(await loop.run_in_executor(self.executor, self.encode, chunk))
                seconds = time.perf_counter() - began
                self._measure(len(chunk), seconds)
                self.calls += 1
                if self.observe is not None:
                    self.observe(len(chunk), sum(tokens[call.start:call.stop]), seconds)
        except Exception as exc:
            if len(live) > 1:  # find the request that fails; the others get their answer
                for p in live:
                    if not p.future.cancelled():
                        await self._encode([p])
                return
            if not live[0].future.done():
                live[0].future.set_exception(exc)
                self.failed += 1
            return
        emb = np.concatenate([e for e, _ in parts])  # (len(unique), D)
        rationales = [r for _, rs in parts for r in rs]
        row = {t: i for i, t in enumerate(unique)}
        for p in live:
            if not p.future.done():
                index = [row[t] for t in p.texts]
                p.future.set_result((emb[index], [rationales[i] for i in index]))
                self.requests += 1

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            live = [p for p in batch if not p.future.cancelled()]  # a client that left
            self.dropped += len(batch) - len(live)
            if live:
                await self._encode(live)
