"""Async generation client for OpenAI-compatible endpoints (vLLM's server).

Modelled on vLLM's benchmark clients: every request yields a RequestResult
(success, error, ttft, latency, tokens) instead of raising. Requests stream,
so time-to-first-token is measured; concurrency is bounded and adaptive.
Connection errors, dropped streams, 429 and 5xx are retried with exponential
backoff and jitter, all inside *one* deadline per request (`timeout_s`
bounds the request and its retries; a backoff never ends past it, and no
concurrency slot is held while sleeping). A request that still fails is a
*failed item*: counted in failed_rate, never scored as an empty answer.

Only a dead engine aborts the batch: when new connections have been refused
for `engine_dead_after_s` with no response in between (EngineWatch), the
remaining requests are cancelled and EngineUnavailable is raised, so the
caller's task fails clearly; results already delivered to `on_result` (run in
a writer thread, off the event loop, and finished before this returns or
raises) are not lost. An API key goes out as a bearer token and is redacted
from every error text and log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import httpx

from evaluation.candidates import Config, render_context
from evaluation.dataset import Example
from evaluation.errors import EngineUnavailable
from evaluation.secrets import redact

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class RequestResult:
    example_id: str
    success: bool
    text: str = ""
    error: str | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    attempts: int = 0

    def to_json(self) -> dict:
        return asdict(self)


class _EngineDead(Exception):
    pass


CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)  # no connection at all: the engine may be gone


class EngineWatch:
    """Tells a dead engine from a failed request. Any HTTP response (even an
    error status) shows the engine is alive; it is dead when new connections
    have been refused for `dead_after_s` with no response in between, and a
    fresh connection attempt (a probe that sends no credentials) is refused
    too."""

    def __init__(self, base_url: str, dead_after_s: float):
        self.base_url = base_url.rstrip("/")
        self.dead_after_s = dead_after_s
        self.down_since: float | None = None
        self.dead = False
        self._lock = asyncio.Lock()

    def answered(self) -> None:
        self.down_since = None

    def refused(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()

    async def confirm_dead(self) -> bool:
        """Called when a request ran out of tries on refused connections:
        waits until connections have been refused for `dead_after_s`, then
        probes once. One probe at a time; the verdict is shared."""
        async with self._lock:
            while not self.dead and self.down_since is not None:
                wait = self.down_since + self.dead_after_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                try:
                    async with httpx.AsyncClient(timeout=min(5.0, max(self.dead_after_s, 0.5))) as probe:
                        await probe.get(f"{self.base_url}/models")
                except CONNECT_ERRORS:
                    self.dead = True
                    break
                except httpx.HTTPError:  # connected, then slow or dropped: alive
                    pass
                self.answered()
            return self.dead


class AdaptiveLimiter:
    """Requests in flight, additive-increase / multiplicative-decrease: the
    limit halves when the engine signals overload (429 or 503) and grows by
    one after `limit` consecutive successes, never above `cap`."""

    def __init__(self, cap: int, start: int | None = None):
        self.cap = cap
        self.limit = min(cap, start or cap)
        self.in_flight = 0
        self.successes = 0
        self.min_seen = self.limit
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> "AdaptiveLimiter":
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        return self

    async def __aexit__(self, *exc) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def overloaded(self) -> None:
        self.limit = max(1, self.limit // 2)
        self.min_seen = min(self.min_seen, self.limit)
        self.successes = 0

    async def succeeded(self) -> None:
        self.successes += 1
        if self.successes >= self.limit and self.limit < self.cap:
            self.limit += 1
            self.successes = 0
            async with self._cond:
                self._cond.notify_all()


# Bump when build_request renders prompts differently: part of every
# generation cache key (evaluation.keys).
RENDER_VERSION = "1"


def build_request(config: Config, example: Example) -> tuple[str, dict]:
    """(path, JSON body) for one example under one configuration."""
    user = config.template.format(question=example.question.strip(), context=render_context(example.contexts))
    s = config.sampling
    body: dict = {
        "model": config.model,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if s.top_k != -1:
        body["top_k"] = s.top_k  # vLLM extension to the OpenAI schema
    if s.temperature > 0:
        # Greedy decoding ignores the seed; sending it anyway only exposes the
        # CPU engine's seeded-request fault (see docs/engine-notes.md).
        body["seed"] = s.seed
    if config.api == "chat":
        messages = [{"role": "system", "content": config.system}] if config.system else []
        messages.append({"role": "user", "content": user})
        body["messages"] = messages
        return "/chat/completions", body
    body["prompt"] = f"{config.system}\n\n{user}" if config.system else user
    return "/completions", body


async def _stream_once(client: httpx.AsyncClient, path: str, body: dict, result: RequestResult) -> None:
    start = time.perf_counter()
    parts: list[str] = []
    async with client.stream("POST", path, json=body) as resp:
        if resp.status_code != 200:
            detail = (await resp.aread()).decode(errors="replace")[:300]
            raise httpx.HTTPStatusError(f"HTTP {resp.status_code}: {detail}", request=resp.request, response=resp)
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                raise RuntimeError(f"engine error in stream: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
                if piece:
                    if result.ttft_s is None:
                        result.ttft_s = time.perf_counter() - start
                    parts.append(piece)
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
            usage = chunk.get("usage")
            if usage:
                result.prompt_tokens = usage.get("prompt_tokens")
                result.completion_tokens = usage.get("completion_tokens")
    result.latency_s = time.perf_counter() - start
    result.text = "".join(parts)
    if result.ttft_s is None:  # empty answer: first token time is the end
        result.ttft_s = result.latency_s
    result.success = True


async def request_with_retries(
    client: httpx.AsyncClient,
    config: Config,
    example: Example,
    *,
    timeout_s: float,
    max_retries: int,
    backoff_base_s: float = 0.5,
    backoff_max_s: float = 8.0,
    limiter: AdaptiveLimiter | None = None,
    watch: EngineWatch | None = None,
    secret: str | None = None,
) -> RequestResult:
    """One request and its retries, all inside one deadline of `timeout_s`
    that starts when the first attempt gets a concurrency slot. A slot is
    held only while an attempt runs, never during the backoff sleep; a
    backoff that would end past the deadline is not taken. Raises
    _EngineDead only when the request could not connect and `watch`
    confirms the engine is gone; any other failure is a failed item."""
    path, body = build_request(config, example)
    loop = asyncio.get_running_loop()
    slot = limiter if limiter is not None else contextlib.nullcontext()
    deadline: float | None = None
    for attempt in range(max_retries + 1):
        result = RequestResult(example_id=example.id, success=False, attempts=attempt + 1)
        cannot_connect = False
        try:
            async with asyncio.timeout_at(deadline) as cm:
                async with slot:
                    if deadline is None:
                        deadline = loop.time() + timeout_s
                        cm.reschedule(deadline)
                    await _stream_once(client, path, body, result)
            if watch is not None:
                watch.answered()
            if limiter is not None:
                await limiter.succeeded()
            return result
        except TimeoutError:
            result.error = f"timeout: no complete answer within request_timeout_s={timeout_s:g} s"
            retryable = False  # the request's deadline is spent
        except httpx.HTTPStatusError as e:
            if watch is not None:
                watch.answered()
            result.error = str(e)
            retryable = e.response.status_code in RETRY_STATUS
            if limiter is not None and e.response.status_code in (429, 503):
                limiter.overloaded()
        except CONNECT_ERRORS as e:
            if watch is not None:
                watch.refused()
            result.error = f"{type(e).__name__}: {e}"
            retryable = cannot_connect = True
        except (json.JSONDecodeError, RuntimeError, httpx.HTTPError) as e:  # a dropped connection included
            result.error = f"{type(e).__name__}: {e}"
            retryable = True
        result.error = redact(result.error, secret)  # a 401 body may echo the key
        result.text, result.ttft_s, result.latency_s = "", None, None
        delay = min(backoff_max_s, backoff_base_s * 2**attempt) * (0.5 + random.random())
        if retryable and attempt < max_retries and deadline is not None and loop.time() + delay < deadline:
            log.debug("%s: attempt %d failed (%s), retrying in %.2f s", example.id, attempt + 1, result.error, delay)
            await asyncio.sleep(delay)
            continue
        if retryable and attempt < max_retries:
            result.error += f" (no retry: request_timeout_s={timeout_s:g} s would pass during the backoff)"
        if cannot_connect and watch is not None and await watch.confirm_dead():
            raise _EngineDead(result.error)
        return result
    raise AssertionError("unreachable")


async def generate_jobs_async(
    base_url: str,
    jobs: list[tuple[Config, Example]],
    *,
    concurrency: int = 16,
    timeout_s: float = 120.0,
    max_retries: int = 3,
    backoff_base_s: float = 0.5,
    backoff_max_s: float = 8.0,
    engine_dead_after_s: float = 5.0,
    api_key: str | None = None,
    on_result: Callable[[Config, RequestResult], None] | None = None,
    progress_every_s: float = 10.0,
    label: str = "",
) -> list[RequestResult]:
    """Send every (configuration, example) job to one endpoint as a single
    stream: requests with different sampling parameters interleave, so the
    engine batches across configurations. Results come back aligned with
    `jobs`. Concurrency adapts to the engine (AdaptiveLimiter, capped).

    `timeout_s` bounds each request including its retries. `api_key` is sent
    as a bearer token and never logged or put in an error. `on_result` (the
    caller's cache write) runs in one writer thread, off the event loop;
    every call has finished when this returns or raises. Raises
    EngineUnavailable when the endpoint has refused connections for
    `engine_dead_after_s`."""
    limiter = AdaptiveLimiter(concurrency)
    watch = EngineWatch(base_url, engine_dead_after_s)
    results: list[RequestResult | None] = [None] * len(jobs)
    done = [0, 0, 0]  # finished, failed, completion tokens
    t0 = time.perf_counter()
    last_report = [t0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    loop = asyncio.get_running_loop()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation-on-result")

    def report(force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - last_report[0] >= progress_every_s:
            last_report[0] = now
            el = max(now - t0, 1e-9)
            log.info("[%s] %d/%d done, %d failed, %.1f req/s, %.0f tok/s, %d in flight (limit %d), %.0f s elapsed",
                     label, done[0], len(jobs), done[1], done[0] / el, done[2] / el, limiter.in_flight,
                     limiter.limit, el)  # fmt: skip

    async def one(client: httpx.AsyncClient, i: int) -> None:
        config, ex = jobs[i]
        r = await request_with_retries(client, config, ex, timeout_s=timeout_s, max_retries=max_retries,
                                       backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                                       limiter=limiter, watch=watch, secret=api_key)  # fmt: skip
        results[i] = r
        done[0] += 1
        done[1] += not r.success
        done[2] += r.completion_tokens or 0
        if not r.success:
            log.warning("[%s] %s failed after %d attempt(s): %s", label, ex.id, r.attempts, r.error)
        report()
        if on_result:  # shielded: a batch abort must not drop a write already queued
            await asyncio.shield(loop.run_in_executor(writer, on_result, config, r))

    try:
        async with httpx.AsyncClient(base_url=base_url.rstrip("/"), limits=limits, timeout=timeout,
                                     headers=headers) as client:  # fmt: skip
            try:
                async with asyncio.TaskGroup() as tg:
                    for i in range(len(jobs)):
                        tg.create_task(one(client, i))
            except* _EngineDead as eg:
                report(force=True)
                raise EngineUnavailable(
                    f"endpoint {base_url} stopped accepting connections (refused for {engine_dead_after_s:g} s) "
                    f"after {done[0]}/{len(jobs)} requests ({eg.exceptions[0]}); finished results were kept"
                ) from None
    finally:
        await asyncio.to_thread(writer.shutdown)  # every queued on_result call finishes first
    report(force=True)
    return results  # type: ignore[return-value]


def interleave(configs: list[Config], examples: list[Example]) -> list[tuple[Config, Example]]:
    """Round-robin over configurations, example by example."""
    return [(c, ex) for ex in examples for c in configs]


async def generate_async(base_url: str, config: Config, examples: Iterable[Example], *,
                         on_result: Callable[[RequestResult], None] | None = None, **kw) -> list[RequestResult]:
    """One configuration over `examples` (results in example order)."""
    cb = (lambda _c, r: on_result(r)) if on_result else None
    return await generate_jobs_async(base_url, [(config, ex) for ex in examples], on_result=cb,
                                     label=config.config_id, **kw)  # fmt: skip


def generate(base_url: str, config: Config, examples: Iterable[Example], **kw) -> list[RequestResult]:
    """Synchronous wrapper for task code."""
    return asyncio.run(generate_async(base_url, config, examples, **kw))


def generate_jobs(base_url: str, jobs: list[tuple[Config, Example]], **kw) -> list[RequestResult]:
    """Synchronous wrapper of generate_jobs_async for task code."""
    return asyncio.run(generate_jobs_async(base_url, jobs, **kw))
