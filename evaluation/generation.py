"""Async generation client for OpenAI-compatible endpoints (vLLM's server).

Modelled on vLLM's benchmark clients: every request yields a RequestResult
(success, error, ttft, latency, tokens) instead of raising. Requests stream,
so time-to-first-token is measured; concurrency is bounded; connection errors,
429 and 5xx are retried with exponential backoff and jitter inside a
per-request deadline. A request that still fails is a *failed item*: it is
counted in failed_rate and never scored as an empty answer.

If the endpoint stops accepting connections altogether (the engine died),
the remaining requests are cancelled and EngineUnavailable is raised, so the
caller's task fails clearly; results already delivered to `on_result` (and
cached by the caller) are not lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import httpx

from evaluation.candidates import Config, render_context
from evaluation.dataset import Example
from evaluation.errors import EngineUnavailable

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


class _ConnectionLost(Exception):
    pass


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
) -> RequestResult:
    path, body = build_request(config, example)
    for attempt in range(max_retries + 1):
        result = RequestResult(example_id=example.id, success=False, attempts=attempt + 1)
        connection_lost = False
        try:
            await asyncio.wait_for(_stream_once(client, path, body, result), timeout=timeout_s)
            return result
        except asyncio.TimeoutError:
            result.error = f"timeout after {timeout_s:g} s"
            retryable = True
        except httpx.HTTPStatusError as e:
            result.error = str(e)
            retryable = e.response.status_code in RETRY_STATUS
            if limiter is not None and e.response.status_code in (429, 503):
                limiter.overloaded()
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            result.error = f"{type(e).__name__}: {e}"
            retryable = connection_lost = True
        except (json.JSONDecodeError, RuntimeError, httpx.HTTPError) as e:
            result.error = f"{type(e).__name__}: {e}"
            retryable = True
        if not retryable or attempt == max_retries:
            if connection_lost:  # the engine is gone, not just this request
                raise _ConnectionLost(result.error)
            result.text, result.ttft_s, result.latency_s = "", None, None
            return result
        delay = min(backoff_max_s, backoff_base_s * 2**attempt) * (0.5 + random.random())
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def generate_jobs_async(
    base_url: str,
    jobs: list[tuple[Config, Example]],
    *,
    concurrency: int = 16,
    timeout_s: float = 120.0,
    max_retries: int = 3,
    on_result: Callable[[Config, RequestResult], None] | None = None,
    progress_every_s: float = 10.0,
    label: str = "",
) -> list[RequestResult]:
    """Send every (configuration, example) job to one endpoint as a single
    stream: requests with different sampling parameters interleave, so the
    engine batches across configurations. Results come back aligned with
    `jobs`. Concurrency adapts to the engine (AdaptiveLimiter, capped)."""
    limiter = AdaptiveLimiter(concurrency)
    results: list[RequestResult | None] = [None] * len(jobs)
    done = [0, 0, 0]  # finished, failed, completion tokens
    t0 = time.perf_counter()
    last_report = [t0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))

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
        async with limiter:
            r = await request_with_retries(client, config, ex, timeout_s=timeout_s, max_retries=max_retries,
                                           limiter=limiter)  # fmt: skip
        if r.success:
            await limiter.succeeded()
        results[i] = r
        done[0] += 1
        done[1] += not r.success
        done[2] += r.completion_tokens or 0
        if on_result:
            on_result(config, r)
        report()

    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), limits=limits, timeout=timeout) as client:
        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(len(jobs)):
                    tg.create_task(one(client, i))
        except* _ConnectionLost as eg:
            report(force=True)
            raise EngineUnavailable(
                f"endpoint {base_url} stopped accepting connections after {done[0]}/{len(jobs)} "
                f"requests ({eg.exceptions[0]}); finished results were kept"
            ) from None
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
    return asyncio.run(generate_jobs_async(base_url, jobs, **kw))
