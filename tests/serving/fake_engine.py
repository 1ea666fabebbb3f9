"""A stand-in for the vLLM server program, for engine-lifecycle tests.

Starting vLLM takes 40 to 65 s on this machine, far too slow to start it
several times per test (parallel tasks racing to launch the same judge, a
crash on the first launch, an engine that never becomes ready). The tests
point LLMOPS_ENGINE_PYTHON at a wrapper that runs this script with the
arguments serving.engine gives vLLM (`-m vllm.entrypoints.openai.api_server
--model DIR --served-model-name NAME --port P ...`), so the process looks
like a vLLM server to the ownership checks and everything else (launch,
records, locks, readiness, stop) is the real code. Standard library only.

Behaviour comes from DIR/fake_engine.json (all optional):
  startup_s        seconds before it listens (default 0.5)
  crash_launches   the first N launches of this model dir exit with status 1
                   after crash_after_s (default 0) instead of serving
  never_ready      listen, but /health answers 503 for ever
  child            start a child process in the server's process group (as
                   vLLM starts its EngineCore): "plain", or "ignore_term"
                   for one that ignores SIGTERM
Every launch appends "PID NAME" to DIR/launches.log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def child(ignore_term: bool) -> None:
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)


def main() -> None:
    if sys.argv[1] == "--child":  # --child MODEL_DIR MODE
        return child(sys.argv[3] == "ignore_term")
    p = argparse.ArgumentParser()
    p.add_argument("-m", dest="module")
    p.add_argument("--model", required=True)
    p.add_argument("--served-model-name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args()
    model_dir = Path(args.model)
    conf_path = model_dir / "fake_engine.json"
    conf = json.loads(conf_path.read_text()) if conf_path.is_file() else {}
    with open(model_dir / "launches.log", "a") as f:
        f.write(f"{os.getpid()} {args.served_model_name}\n")
    launch_no = len((model_dir / "launches.log").read_text().splitlines())
    if launch_no <= conf.get("crash_launches", 0):
        time.sleep(conf.get("crash_after_s", 0))
        print(f"fake engine: injected crash on launch {launch_no}", flush=True)
        sys.exit(1)
    if conf.get("child"):
        subprocess.Popen([sys.executable, __file__, "--child", str(model_dir), conf["child"]])
    time.sleep(conf.get("startup_s", 0.5))
    name = args.served_model_name

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:  # quiet
            pass

        def _json(self, code: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(503 if conf.get("never_ready") else 200, {})
            elif self.path == "/version":
                self._json(200, {"version": "fake"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": name, "object": "model", "root": str(model_dir),
                                                             "parent": None, "max_model_len": 2048}]})
            else:
                self._json(404, {})

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            chat = self.path.endswith("/chat/completions")
            answer = "Paris is the capital of France."
            if not req.get("stream"):
                choice = ({"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                          if chat else {"index": 0, "text": answer, "finish_reason": "stop"})  # fmt: skip
                return self._json(200, {"id": "x", "model": name, "choices": [choice],
                                        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            for i, w in enumerate(answer.split(" ")):
                piece = w if i == 0 else " " + w
                choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            last = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else {"index": 0, "text": "",
                                                                                     "finish_reason": "stop"}
            usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
            self.wfile.write(f"data: {json.dumps({'choices': [last]})}\n\n".encode())
            self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
