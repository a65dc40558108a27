"""Dynamic batching: jobs from concurrent requests run through the model together.

A `Batcher` owns a queue and a worker thread (or shares one with batchers of the same
model: `executor`). Requests `submit` their jobs (an item to
embed, a query to reason about) and await the results; the batcher takes the first waiting
job, then gathers more until it holds `max_batch` or `max_wait_ms` has passed, and runs them
in one call of `fn` on its thread, so the event loop keeps accepting requests meanwhile.
While a batch runs, the next one fills up. `max_batch=1` switches batching off (each job
runs alone, in arrival order), the baseline `embedrl bench serve` compares against.

A batch that fails is retried job by job, so one bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)


class Busy(Exception):
    """More jobs are waiting than the batcher accepts; the request should be retried later."""


class Batcher:
    """Runs `fn(jobs) -> results` (one result per job, in order) on batches of concurrently submitted jobs."""

    def __init__(self, name: str, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int = 32,
                 max_wait_ms: float = 5.0, max_queue: int = 4096, metrics=None,
                 executor: ThreadPoolExecutor | None = None):
        self.name, self.fn = name, fn
        self.max_batch, self.max_wait, self.max_queue = max(1, int(max_batch)), max(0.0, max_wait_ms) / 1e3, max_queue
        self.metrics = metrics
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"embedrl-{name}")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker on the running event loop (the app's startup)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, jobs: Sequence[Any]) -> list[Any]:
        """Queue `jobs` and wait for their results (an exception of `fn` is raised here)."""
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name} is not started")
        if self.depth + len(jobs) > self.max_queue:
            raise Busy(f"{self.depth} {self.name} jobs are waiting; retry shortly")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in jobs]
        for job, future in zip(jobs, futures):
            self._queue.put_nowait((job, future))
        self._observe_depth()
        return list(await asyncio.gather(*futures))

    def _observe_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(self.depth)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            self._observe_depth()
            await self._execute([(job, f) for job, f in batch if not f.done()])  # skip requests gone away

    async def _execute(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        jobs = [job for job, _ in batch]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._call, jobs)
        except Exception as error:  # noqa: BLE001 - handed to the requests, never lost
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            logger.info("%s batch of %d failed (%s); running its jobs one by one", self.name, len(batch), error)
            for one in batch:
                await self._execute([one])
            return
        if self.metrics is not None:
            self.metrics.batch_size.labels(self.name).observe(len(jobs))
            self.metrics.batch_seconds.labels(self.name).observe(time.perf_counter() - start)
        for (_, future), result in zip(batch, results):
            _settle(future, result=result)

    def _call(self, jobs: list[Any]) -> list[Any]:
        results = list(self.fn(jobs))
        if len(results) != len(jobs):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(jobs)} jobs")
        return results


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the request went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
