"""Running tiling jobs: in this process (one worker) or over a process pool.

Per-slide fixed costs are paid once per run or hidden behind the cutting of another slide:

- one worker: the next slide is planned in a background thread (opening, fingerprinting, tissue, grid,
  store skeleton) while this thread cuts the current one; its slide stays open for cutting.
- a pool: it is started once per run (while this process plans the first slide), its workers stay warm
  across slides, and plans of the next slides run in workers while other workers cut shards.

Each :class:`TileResult` records its steps' seconds in ``timings`` (``plan``, ``create``, ``wait`` for
the plan, ``cut``, ``finish``; a pool's ``pool_start``, the same for every slide of the run).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .._atomic import exit_with_owner, owner_args
from ..progress import log_line, progress_bar
from ..store.tile_result import TileResult, failed_result
from .cut import discard, finish_tiling, tile_shards
from .plan import TileJob, TilePlan, plan_tiling
from .readers import close_cached

Advance = Callable[..., None]


def run_inline(jobs: list[TileJob], progress: bool) -> list[TileResult]:
    """Tile ``jobs`` one after the other in this process, planning each next slide while the current
    one is cut (one plan ahead at most, so at most two slides are open and two temporary stores exist)."""
    results: list[TileResult] = []
    with progress_bar(0, "tiling", progress) as advance, ThreadPoolExecutor(1, "pathweak-plan") as planner:
        pending: deque[Future[TilePlan]] = deque()
        try:
            if jobs:
                pending.append(planner.submit(plan_tiling, jobs[0]))
            for i, job in enumerate(jobs):
                started = time.perf_counter()
                try:
                    plan: TilePlan | BaseException = pending[0].result()
                except Exception as exc:
                    plan = exc
                pending.popleft()
                if i + 1 < len(jobs):
                    pending.append(planner.submit(plan_tiling, jobs[i + 1]))
                results.append(_inline_slide(job, plan, started, advance))
                log_line(results[-1].line("tile"))
        finally:
            for fut in pending:  # interrupted: drop plans made ahead
                if not fut.cancel() and fut.exception() is None:
                    discard(fut.result())
            close_cached()
    return results


def _inline_slide(job: TileJob, plan: TilePlan | BaseException, started: float, advance: Advance) -> TileResult:
    """Cut and finish one planned slide in this process (``plan`` is the exception when planning failed)."""
    if isinstance(plan, BaseException):
        return failed_result(job.slide, job.slide_id, plan, started)
    waited = time.perf_counter() - started
    try:
        if plan.skipped:
            result = TileResult(job.slide, job.slide_id, "skipped", str(job.final_path), plan.n_tiles)
        else:
            advance(0, description=job.slide_id, total=plan.n_tiles)
            t0 = time.perf_counter()
            tile_shards(plan, 0, plan.n_shards, on_shard=lambda n: advance(n))
            t1 = time.perf_counter()
            final = finish_tiling(plan)
            t2 = time.perf_counter()
            result = TileResult(job.slide, job.slide_id, "tiled", str(final), plan.n_tiles, t2 - started)
            result.timings.update(wait=waited, cut=t1 - t0, finish=t2 - t1)
        result.timings.update(plan.timings)
        return result
    except KeyboardInterrupt:
        discard(plan)
        raise
    except Exception as exc:
        discard(plan)
        return failed_result(job.slide, job.slide_id, exc, started)
    finally:
        close_cached(job)


def run_pool(jobs: list[TileJob], workers: int, progress: bool) -> list[TileResult]:
    """Plans and shard ranges of all slides share one process pool; at most ``workers + 1`` slides
    are in flight so temporary stores do not pile up. The first slide is planned here while the
    workers start, so a single large slide does not wait for the pool before its planning begins."""
    from concurrent.futures import ProcessPoolExecutor

    with (
        ProcessPoolExecutor(
            max_workers=workers, mp_context=pool_context(), initializer=exit_with_owner, initargs=owner_args()
        ) as pool,
        progress_bar(0, "tiling", progress) as advance,
    ):
        run = _PoolRun(pool, jobs, workers, advance)
        try:
            run.go()
        except BaseException:
            run.abort()
            raise
    return [run.results[j.slide] for j in jobs]


def _tile_task(plan: TilePlan, first: int, stop: int) -> tuple[int, float]:
    """A pool task: shards ``first..stop-1`` of a slide; the tiles written and the seconds it took."""
    t0 = time.perf_counter()
    return tile_shards(plan, first, stop), time.perf_counter() - t0


class _PoolRun:
    """Book-keeping of one pooled tiling run: which futures belong to which slide and step."""

    def __init__(self, pool: Any, jobs: list[TileJob], workers: int, advance: Advance):
        self.pool, self.workers, self.advance = pool, workers, advance
        self.jobs = {j.slide: j for j in jobs}
        self.queue = deque(jobs)
        self.results: dict[str, TileResult] = {}
        self.started: dict[str, float] = {}
        self.plans: dict[str, TilePlan] = {}
        self.remaining: dict[str, int] = {}
        self.cut_seconds: dict[str, float] = {}
        self.futures: dict[Future[Any], tuple[str, str]] = {}
        self.pool_start = 0.0

    def go(self) -> None:
        # start the workers (the forkserver's start blocks for a moment) while this thread plans slide 1
        starter = threading.Thread(target=self._start_workers)
        starter.start()
        first = self.queue.popleft()
        self.started[first.slide] = time.perf_counter()
        self._submit_plans()
        plan: TilePlan | None
        try:
            plan = plan_tiling(first, keep_open=False)  # the workers cut it: they open it themselves
        except Exception as exc:
            plan = None
            self._failed(first.slide, exc)
        starter.join()
        if plan is not None:
            self._planned(first.slide, plan)
        self._submit_plans()
        while self.futures:
            done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
            for fut in done:
                self._completed(fut)
            self._submit_plans()

    def _start_workers(self) -> None:
        t0 = time.perf_counter()
        for warm in [self.pool.submit(_warm_up) for _ in range(self.workers)]:
            warm.result()
        self.pool_start = time.perf_counter() - t0

    def _completed(self, fut: Future[Any]) -> None:
        slide, step = self.futures.pop(fut)
        try:
            value = fut.result()
        except Exception as exc:
            if step == "tile":
                self.remaining[slide] -= 1
            self._failed(slide, exc)
            return
        if step == "plan":
            self._planned(slide, value)
            return
        written, seconds = value
        self.remaining[slide] -= 1
        self.cut_seconds[slide] = self.cut_seconds.get(slide, 0.0) + seconds
        if slide not in self.results:
            self.advance(int(written), description=self.jobs[slide].slide_id)
        self._maybe_finish(slide)

    def _submit_plans(self) -> None:
        while self.queue and len(self.started) - len(self.results) < self.workers + 1:
            job = self.queue.popleft()
            self.started[job.slide] = time.perf_counter()
            self.futures[self.pool.submit(plan_tiling, job)] = (job.slide, "plan")

    def _planned(self, slide: str, plan: TilePlan) -> None:
        job = self.jobs[slide]
        if plan.skipped:
            self._record(slide, TileResult(slide, job.slide_id, "skipped", str(job.final_path), plan.n_tiles))
            return
        self.plans[slide] = plan
        self.advance(0, total=plan.n_tiles)
        ranges = split(plan.n_shards, self.workers)
        self.remaining[slide] = len(ranges)
        for a, b in ranges:
            self.futures[self.pool.submit(_tile_task, plan, a, b)] = (slide, "tile")
        self._maybe_finish(slide)

    def _failed(self, slide: str, exc: BaseException) -> None:
        if slide not in self.results:
            self._record(slide, failed_result(slide, self.jobs[slide].slide_id, exc, self.started[slide]))
        self._maybe_finish(slide)

    def _maybe_finish(self, slide: str) -> None:
        """Once no task of the slide is running: move its store into place, or drop it after a failure."""
        if self.remaining.get(slide, 0) > 0:
            return
        plan = self.plans.pop(slide, None)
        if plan is None:
            return
        if slide in self.results:  # failed
            discard(plan)
            return
        job = self.jobs[slide]
        try:
            t0 = time.perf_counter()
            final = finish_tiling(plan)
            elapsed = time.perf_counter() - self.started[slide]
            result = TileResult(slide, job.slide_id, "tiled", str(final), plan.n_tiles, elapsed)
            result.timings.update(plan.timings)
            finish = time.perf_counter() - t0
            result.timings.update(cut=self.cut_seconds.get(slide, 0.0), finish=finish, pool_start=self.pool_start)
            self._record(slide, result)
        except Exception as exc:
            discard(plan)
            self._record(slide, failed_result(slide, job.slide_id, exc, self.started[slide]))

    def _record(self, slide: str, result: TileResult) -> None:
        self.results[slide] = result
        log_line(result.line("tile"))

    def abort(self) -> None:
        for fut in self.futures:
            fut.cancel()
        for plan in self.plans.values():
            discard(plan)


def _warm_up() -> None:
    """A no-op task: submitting one per worker makes the pool start its processes right away."""


def pool_context() -> Any:
    """Worker processes fork from a forkserver that has the tiler imported: safe whatever threads this
    process runs (unlike fork) and without re-importing everything per worker (unlike spawn)."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pathweak.tiling.pool", "openslide", "tifffile", "simplejpeg", "cv2"])
    return ctx


def split(n_shards: int, workers: int) -> list[tuple[int, int]]:
    """Shard ranges: about four per worker, at least four shards each (fewer for small slides)."""
    if n_shards == 0:
        return []
    per = max(4, -(-n_shards // (workers * 4)))
    if n_shards < 4 * workers:
        per = max(1, -(-n_shards // workers))
    return [(a, min(n_shards, a + per)) for a in range(0, n_shards, per)]
