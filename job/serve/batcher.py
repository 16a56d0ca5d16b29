"""The dynamic batcher: concurrent requests are run through ONNX Runtime together, because a batch of 64 costs
far less per image than 64 batches of one.

Requests wait in one bounded queue (counted in images: past `max_queue` a request gets 429 at once, so a burst
costs memory for `max_queue` images and no more). One worker thread runs the model, so inference never blocks
the event loop. A batch starts when it holds `max_batch` images, or when its oldest request has waited
`max_wait_s`, or at once when no other request is being read: a lone client never waits for company, and under
load the batch fills while the previous one runs.
"""

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from job.serve.http import HTTPError


class Batcher:
    def __init__(self, infer, *, max_batch: int, max_wait_s: float, max_queue: int, on_batch=None):
        self.infer, self.max_batch, self.max_wait_s, self.max_queue = infer, max_batch, max_wait_s, max_queue
        self.on_batch = on_batch or (lambda **_: None)
        self.arriving = 0  # requests whose bodies are being read: a batch may wait for them (arrive()/arrived())
        self.queued = 0  # images waiting in the queue
        self._items: deque = deque()  # (images, future, enqueued_at)
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """After the HTTP server drained: nothing is queued any more."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def arrive(self) -> None:
        """A request's body is being read: a filling batch may wait for it."""
        self.arriving += 1

    def arrived(self) -> None:
        """Its body is read (or refused): the last one lets a filling batch start at once."""
        self.arriving -= 1
        if self.arriving == 0 and self._items:
            self._wakeup.set()

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, C] for these images; HTTPError 429 when the queue has no room for them."""
        n = len(images)
        if self.queued + n > self.max_queue:
            raise HTTPError(429, f"the queue is full ({self.queued} images waiting, limit {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._items.append((images, future, time.monotonic()))
        self.queued += n
        # Wake the loop only when a batch can start (the first item, a full batch, nobody else arriving): under
        # load most requests join a filling batch without a wake-up, a task switch or a timer of their own.
        if len(self._items) == 1 or self.queued >= self.max_batch or self.arriving == 0:
            self._wakeup.set()
        return await future

    async def _fill(self) -> None:
        """Until a full batch, nobody arriving, or the oldest request's wait bound: one timer per batch."""
        deadline = self._items[0][2] + self.max_wait_s
        if self.queued >= self.max_batch or self.arriving == 0 or deadline <= time.monotonic():
            return
        expired = []  # a flag, not the clock: asyncio may run a timer up to its clock resolution early

        def expire() -> None:
            expired.append(True)
            self._wakeup.set()

        timer = asyncio.get_running_loop().call_at(deadline, expire)  # loop.time() is time.monotonic()
        try:
            while self.queued < self.max_batch and self.arriving > 0 and not expired:
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            timer.cancel()

    def _take(self) -> list:
        taken, n = [], 0
        while self._items and n + len(self._items[0][0]) <= self.max_batch:
            item = self._items.popleft()
            taken.append(item)
            n += len(item[0])
        self.queued -= n
        return taken

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill()
            taken = self._take()
            batch = taken[0][0] if len(taken) == 1 else np.concatenate([t[0] for t in taken])
            started = time.monotonic()
            try:
                probs = await loop.run_in_executor(self._executor, self.infer, batch)
            except Exception as exc:  # the model failed: every request of the batch gets the error
                for _, future, _ in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            done = time.monotonic()
            offset = 0
            for images, future, _ in taken:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(probs[offset : offset + len(images)])
                offset += len(images)
            self.on_batch(
                images=len(batch),
                requests=len(taken),
                wait_ms=round((started - taken[0][2]) * 1000, 3),
                infer_ms=round((done - started) * 1000, 3),
                queued=self.queued,
            )
