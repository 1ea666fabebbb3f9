"""vLLM engine lifecycle: launch, readiness, stop.

A managed engine is a vLLM OpenAI-compatible server started from the engine
virtualenv as its own process group, with a record file in the state
directory (`engines/NAME.json`: pid, port, base_url, model dir, log file) so a
later task, a retry, or `llmops engines stop` can find it again.

Readiness is deadline-bound and sends a real request: /health must answer
200 *and* a one-token completion must succeed; otherwise EndpointNotReady
says "endpoint X not ready after N s" with the tail of the server log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from evaluation.errors import EndpointNotReady, PermanentError

log = logging.getLogger(__name__)


@dataclass
class EngineRecord:
    name: str
    pid: int
    port: int
    base_url: str  # ends with /v1
    model_dir: str
    log_file: str
    started_at: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def _log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def health_ok(base_url: str, timeout: float = 5.0) -> bool:
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        return httpx.get(f"{root}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def probe(base_url: str, model: str, timeout: float = 60.0) -> None:
    """One real request: a 1-token completion. Raises on failure."""
    r = httpx.post(
        f"{base_url.rstrip('/')}/completions",
        json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0},
        timeout=timeout,
    )
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")


def wait_ready(
    base_url: str,
    model: str,
    *,
    timeout_s: float = 300.0,
    pid: int | None = None,
    log_file: str | None = None,
    poll_s: float = 2.0,
) -> float:
    """Block until the endpoint serves `model`, or raise EndpointNotReady.
    Returns the seconds it took. Fails at once if the server process exits."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last_error = "no answer"
    next_note = t0 + 15
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise EndpointNotReady(
                f"endpoint {base_url} ({model}): server process {pid} exited during startup; log tail:\n"
                + _log_tail(log_file or "")
            )
        if health_ok(base_url):
            try:
                probe(base_url, model, timeout=max(5.0, min(60.0, deadline - time.monotonic())))
                return time.monotonic() - t0
            except Exception as e:  # noqa: BLE001 - recorded and retried until the deadline
                last_error = f"probe request failed: {e}"
        else:
            last_error = "/health not OK"
        if time.monotonic() >= next_note:
            log.info("waiting for %s (%s) to become ready: %.0f s so far", base_url, model, time.monotonic() - t0)
            next_note += 15
        time.sleep(poll_s)
    tail = f"; log tail:\n{_log_tail(log_file)}" if log_file else ""
    raise EndpointNotReady(f"endpoint {base_url} ({model}) not ready after {timeout_s:.0f} s ({last_error}){tail}")


class EngineManager:
    """Launches and tracks vLLM servers for local model directories."""

    def __init__(self, state_dir: str | Path, engine_python: str | Path):
        self.state_dir = Path(state_dir)
        self.engine_python = Path(engine_python)
        self.records_dir = self.state_dir / "engines"
        self.records_dir.mkdir(parents=True, exist_ok=True)

    def _record_path(self, name: str) -> Path:
        return self.records_dir / f"{name}.json"

    def get(self, name: str) -> EngineRecord | None:
        p = self._record_path(name)
        if not p.is_file():
            return None
        return EngineRecord(**json.loads(p.read_text()))

    def list(self) -> list[EngineRecord]:
        return [EngineRecord(**json.loads(p.read_text())) for p in sorted(self.records_dir.glob("*.json"))]

    def is_running(self, rec: EngineRecord) -> bool:
        return _alive(rec.pid) and health_ok(rec.base_url)

    def launch(
        self,
        name: str,
        model_dir: str | Path,
        *,
        max_model_len: int = 2048,
        port: int | None = None,
        kv_cache_gib: int = 2,
        extra_args: list[str] | None = None,
    ) -> EngineRecord:
        if not self.engine_python.exists():
            raise PermanentError(
                f"engine python {self.engine_python} not found: create the engine env with `make engine-env`"
            )
        model_dir = Path(model_dir).resolve()
        if not (model_dir / "config.json").is_file():
            raise PermanentError(f"model directory {model_dir} has no config.json")
        port = port or free_port()
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / f"engine-{name}.log"
        cmd = [
            str(self.engine_python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", name,
            "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(max_model_len), "--enforce-eager", "--dtype", "bfloat16",
            # Chunked prefill splits a prompt across scheduler steps; for a
            # seeded request vLLM then rewinds its torch.Generator offset,
            # which CPU generators do not support ("CPU Generator does not use
            # offset") and the engine dies. Whole-prompt prefill avoids it.
            # See docs/engine-notes.md.
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(4096, max_model_len)),
            *(extra_args or []),
        ]  # fmt: skip
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        # The pipeline env's variables must not leak into the engine env.
        for k in ("PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(k, None)
        with open(log_file, "ab") as lf:
            lf.write(f"\n=== {time.ctime()} launching: {' '.join(cmd)}\n".encode())
            proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        rec = EngineRecord(
            name=name, pid=proc.pid, port=port, base_url=f"http://127.0.0.1:{port}/v1",
            model_dir=str(model_dir), log_file=str(log_file), started_at=time.time(),
        )  # fmt: skip
        self._record_path(name).write_text(json.dumps(asdict(rec), indent=2))
        log.info("launched vLLM for %s (pid %d, port %d, log %s)", name, proc.pid, port, log_file)
        return rec

    def wait(self, rec: EngineRecord, timeout_s: float) -> float:
        return wait_ready(rec.base_url, rec.name, timeout_s=timeout_s, pid=rec.pid, log_file=rec.log_file)

    def ensure(self, name: str, model_dir: str | Path, *, timeout_s: float = 300.0, **launch_kw) -> tuple[EngineRecord, bool]:
        """A ready engine serving `model_dir` as `name`: reuse a healthy one,
        otherwise (never started, died, other model) start a new one.
        Returns (record, launched_now)."""
        rec = self.get(name)
        same_model = rec is not None and rec.model_dir == str(Path(model_dir).resolve())
        if same_model and self.is_running(rec):
            return rec, False
        if same_model and _alive(rec.pid):  # still starting up (launched by start_all)
            try:
                took = self.wait(rec, timeout_s)
                log.info("engine %s ready in %.0f s at %s", name, took, rec.base_url)
                return rec, True
            except EndpointNotReady as e:
                log.warning("engine %s did not become ready (%s); restarting it", name, str(e).splitlines()[0])
        if rec:
            log.warning("engine %s (pid %d) is not healthy; restarting it", name, rec.pid)
            self.stop(name)
        rec = self.launch(name, model_dir, **launch_kw)
        took = self.wait(rec, timeout_s)
        log.info("engine %s ready in %.0f s at %s", name, took, rec.base_url)
        return rec, True

    def stop(self, name: str, grace_s: float = 20.0) -> bool:
        rec = self.get(name)
        if rec is None:
            return False
        if _alive(rec.pid):
            try:
                os.killpg(rec.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace_s
            while _alive(rec.pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _alive(rec.pid):
                try:
                    os.killpg(rec.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Reap it if it is our child.
        try:
            os.waitpid(rec.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        self._record_path(name).unlink(missing_ok=True)
        log.info("stopped engine %s (pid %d)", name, rec.pid)
        return True
