"""Concurrent requests encoded together: an asyncio micro-batcher in front of one model thread.

Each request puts its texts on a queue and awaits a future. One worker takes the first waiting
request, then keeps taking requests until ``max_batch`` texts are gathered or ``wait_s`` has
passed with nothing new, encodes the distinct texts of the whole gathering in ONE call (in a
single worker thread: the model is used by one call at a time, and the event loop stays free
to accept requests), and hands every request its rows. A request larger than ``max_batch``
is encoded alone, in one call (the encoder batches it further itself).

If the call fails, every request of that gathering gets the exception (the server answers each
with a JSON error); the worker goes on with the next gathering.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """``await batcher.submit(texts)`` -> ``(embeddings (N, D), rationales)`` of those texts.

    ``encode(texts) -> (np.ndarray (N, D), list[str])`` is called from the model thread.
    """

    def __init__(self, encode: Callable[[list[str]], tuple[np.ndarray, list[str]]],
                 executor: ThreadPoolExecutor, max_batch: int = 32, wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.encode = encode
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.calls = 0  # model calls made (a call serves one gathering of requests)
        self.requests = 0  # requests answered
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def submit(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(list(texts), future))
        return await future

    async def _gather(self) -> list[_Pending]:
        batch = [await self.queue.get()]
        size = len(batch[0].texts)
        while size < self.max_batch:
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout=self.wait_s)
            except asyncio.TimeoutError:
                break
            if size + len(item.texts) > self.max_batch:  # keep it for the next gathering
                await self._put_front(item)
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _put_front(self, item: _Pending) -> None:
        rest = [item]
        while not self.queue.empty():
            rest.append(self.queue.get_nowait())
        for pending in rest:
            self.queue.put_nowait(pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [p for p in batch if not p.future.cancelled()]  # a client that left
            if not live:
                continue
            unique = list(dict.fromkeys(t for p in live for t in p.texts))
            try:
                emb, rationales = await loop.run_in_executor(self.executor, self.encode, unique)
            except Exception as exc:  # every request of the gathering learns why
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.calls += 1
            row = {t: i for i, t in enumerate(unique)}
            for p in live:
                if not p.future.done():
                    index = [row[t] for t in p.texts]
                    p.future.set_result((emb[index], [rationales[i] for i in index]))
                    self.requests += 1
