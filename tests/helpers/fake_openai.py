"""A small OpenAI-compatible server for fault injection.

The real vLLM engine cannot be made to return 503s, stall, drop a connection
mid-stream, echo credentials in its errors or die after exactly N requests on
demand, so the generation client's failure handling is tested against this
fake. Everything else is tested against the real engine (tests/e2e).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


@dataclass
class Behaviour:
    answer: str = "Paris is the capital of France."
    fail_first: int = 0  # per prompt: answer 503 this many times first
    status: int | None = None  # always answer this HTTP status
    stall_s: float = 0.0  # sleep before answering
    serial_s: float = 0.0  # serve one request at a time, each taking this long (requests in flight queue)
    die_after: int | None = None  # stop the server after this many successful answers
    answer_for: object = None  # optional callable(request body) -> answer text, instead of `answer`
    drop_for: object = None  # optional callable(request body) -> bool: close the connection mid-stream
    api_key: str | None = None  # require `Authorization: Bearer <api_key>`, else 401
    leak_auth: bool = False  # error bodies echo the Authorization header back (a leaky server)
    # What GET /v1/models lists (model identity for remote endpoints); `root`
    # stands for the weights behind the name: change it to "swap the model".
    models: tuple = ("fake", "fake-judge")
    root: str = "fake-weights"
    requests: int = 0
    successes: int = 0
    seen: dict = field(default_factory=dict)
    bodies: list = field(default_factory=list)
    auth: list = field(default_factory=list)  # the Authorization header of each request ("" when absent)


class _Dropped(Exception):
    """Raised inside a streaming response: uvicorn then closes the connection
    without finishing the body (the client sees a dropped connection)."""


class FakeOpenAI:
    def __init__(self, behaviour: Behaviour | None = None):
        self.b = behaviour or Behaviour()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.complete, methods=["POST"]),
                Route("/v1/completions", self.complete, methods=["POST"]),
            ]
        )
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def health(self, request: Request):
        return JSONResponse({})

    async def models(self, request: Request):
        data = [{"id": m, "object": "model", "created": int(time.time()), "owned_by": "fake", "root": self.b.root,
                 "parent": None, "max_model_len": 2048} for m in self.b.models]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    async def complete(self, request: Request):
        b = self.b
        body = await request.json()
        b.requests += 1
        b.bodies.append(body)
        auth = request.headers.get("authorization", "")
        b.auth.append(auth)
        leak = f" (you sent {auth!r})" if b.leak_auth else ""
        key = json.dumps(body.get("messages") or body.get("prompt"))
        b.seen[key] = b.seen.get(key, 0) + 1
        if b.stall_s:
            await asyncio.sleep(b.stall_s)
        if b.serial_s:
            self._serial = getattr(self, "_serial", None) or asyncio.Lock()
            async with self._serial:
                await asyncio.sleep(b.serial_s)
        if b.api_key is not None and auth != f"Bearer {b.api_key}":
            return JSONResponse({"error": f"invalid API key{leak}"}, status_code=401)
        if b.status:
            return JSONResponse({"error": f"injected{leak}"}, status_code=b.status)
        if b.seen[key] <= b.fail_first:
            return JSONResponse({"error": f"injected 503{leak}"}, status_code=503)
        if b.die_after is not None and b.successes >= b.die_after:
            self.server.should_exit = True
            return JSONResponse({"error": "dying"}, status_code=503)
        b.successes += 1
        chat = "messages" in body
        answer = b.answer_for(body) if callable(b.answer_for) else b.answer
        drop = callable(b.drop_for) and b.drop_for(body)
        if not body.get("stream"):  # a plain JSON reply (judges' structured-output calls)
            words = len(answer.split(" "))
            choice = ({"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": answer, "finish_reason": "stop"})
            return JSONResponse({
                "id": f"fake-{b.requests}", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": body.get("model", "fake"), "choices": [choice],
                "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words},
            })

        async def stream():
            words = answer.split(" ")
            for i, w in enumerate(words):
                piece = w if i == 0 else " " + w
                choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
                await asyncio.sleep(0.001)
                if drop:
                    raise _Dropped("injected: connection dropped mid-stream")
            last = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else {"index": 0, "text": "", "finish_reason": "stop"}
            yield f"data: {json.dumps({'choices': [last]})}\n\n"
            usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
