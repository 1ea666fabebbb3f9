"""vLLM engine lifecycle: launch, readiness, ownership, stop.

A managed engine is a vLLM OpenAI-compatible server started from the engine
virtualenv as its own process group, with a record file in the state
directory (`engines/NAME.json`: pid and that process's start time, port,
base_url, model dir, log file, and the model identity and max_model_len it
was launched with) so a later task, a retry, or `llmops engines stop` can
find it again. A running engine is reused only for the same identity (the
content fingerprint of serving.models) and max_model_len: weights replaced
in place or another max_model_len get a new engine. Nothing is signalled on
a record's word alone: the process must still have the recorded start time
(/proc/PID/stat field 22) and the vLLM entrypoint and served name on its
command line; a recycled pid is left alone and its stale record dropped.

One lock per engine name (`engines/NAME.lock`, fcntl.flock) is held across
check, launch and readiness wait, so tasks running in parallel never launch
the same engine twice: the second one waits, then finds it ready.

Readiness is bound by a deadline and sends a real request: /health must
answer 200 *and* a one-token completion must succeed; no probe outlives the
deadline. A server that exits during startup raises EndpointNotReady
(transient: the task may be retried); a deadline that passes raises
EndpointDeadlineExceeded, "endpoint X not ready after N s" with the tail of
the server log (permanent: the deadline spans the task's retries, see
serving.ownership, so a retry cannot give it more time).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx

from evaluation.errors import EndpointNotReady, PermanentError
from evaluation.runstore import safe_name
from serving.models import model_fingerprint

log = logging.getLogger(__name__)

ENTRYPOINT = "vllm.entrypoints.openai.api_server"


class EndpointDeadlineExceeded(PermanentError):
    """An endpoint was not ready by its readiness deadline (`ready_timeout_s`,
    which spans the task's retries): retrying the task cannot help."""


@dataclass
class EngineRecord:
    name: str
    pid: int
    port: int
    base_url: str  # ends with /v1
    model_dir: str
    log_file: str
    started_at: float
    pid_start: int | None = None  # /proc/PID/stat field 22 of the server process; None in old records
    # The model name requests use, when it differs from the record's name (an
    # engine key such as NAME@identity for a champion's own copy of a model).
    served_name: str | None = None
    # What it was launched to serve: serving.models.model_fingerprint of the
    # model dir and --max-model-len. None in old records (never reused).
    identity: str | None = None
    max_model_len: int | None = None

    @property
    def model(self) -> str:
        return self.served_name or self.name

    @classmethod
    def from_json(cls, d: dict) -> "EngineRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class StopResult:
    name: str
    pid: int
    signalled: bool  # the recorded engine was running and was stopped
    note: str  # what happened, for logs and `llmops engines stop`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks after boot (/proc/PID/stat field
    22): with the pid, it names one process, even after the pid is reused."""
    f = _stat(pid)
    return int(f[19]) if f else None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    f = _stat(pid)  # a zombie (exited, not yet reaped) counts as dead
    return f is None or f[0] != "Z"


def _same_process(pid: int, start: int) -> bool:
    return _alive(pid) and process_start_time(pid) == start


def _group(pgid: int) -> list[tuple[int, int]]:
    """(pid, start time) of the live processes of process group `pgid`."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and (f := _stat(int(p.name))) and int(f[2]) == pgid and f[0] != "Z":
            out.append((int(p.name), int(f[19])))
    return out


def not_the_engine(rec: EngineRecord) -> str | None:
    """Why the process at `rec.pid` is not the engine `rec` recorded, or None
    when it is: alive, same start time, and a vLLM server for `rec.name`."""
    if not _alive(rec.pid):
        return f"process {rec.pid} has exited"
    if rec.pid_start is not None and process_start_time(rec.pid) != rec.pid_start:
        return f"pid {rec.pid} now belongs to another process (started later than the engine recorded)"
    cmd = _cmdline(rec.pid)
    named = "--served-model-name" in cmd[:-1] and cmd[cmd.index("--served-model-name") + 1] == rec.model
    if ENTRYPOINT not in cmd or not named:
        return f"process {rec.pid} is not a vLLM server for {rec.name} ({' '.join(cmd).strip()[:100]!r})"
    return None


def _log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def health_ok(base_url: str, timeout: float = 5.0, api_key: str | None = None) -> bool:
    from evaluation.secrets import auth_headers

    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        return httpx.get(f"{root}/health", headers=auth_headers(api_key), timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def probe(base_url: str, model: str, timeout: float = 60.0, api_key: str | None = None) -> None:
    """One real request: a 1-token completion. Raises on failure (the reply
    quoted with `api_key` redacted)."""
    from evaluation.secrets import auth_headers, redact

    r = httpx.post(
        f"{base_url.rstrip('/')}/completions",
        json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0},
        headers=auth_headers(api_key), timeout=timeout,
    )  # fmt: skip
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {redact(r.text, api_key)[:200]}")


def wait_ready(
    base_url: str,
    model: str,
    *,
    timeout_s: float = 300.0,
    deadline: float | None = None,
    pid: int | None = None,
    log_file: str | None = None,
    poll_s: float = 2.0,
    api_key: str | None = None,
) -> float:
    """Block until the endpoint serves `model`; returns the seconds it took.
    `deadline` (a time.time() value, default now + timeout_s) bounds the
    whole wait, each probe's own timeout included; `timeout_s` is the whole
    budget, named in the error. Raises EndpointDeadlineExceeded when the
    deadline passes, EndpointNotReady at once if the server process exits."""
    t0 = time.time()
    deadline = t0 + timeout_s if deadline is None else deadline
    last_error = "no answer" if deadline > t0 else "the deadline passed in an earlier try"
    next_note = t0 + 15
    while (left := deadline - time.time()) > 0:
        if pid is not None and not _alive(pid):
            raise EndpointNotReady(
                f"endpoint {base_url} ({model}): server process {pid} exited during startup; log tail:\n"
                + _log_tail(log_file or "")
            )
        if health_ok(base_url, timeout=min(5.0, left), api_key=api_key):
            left = deadline - time.time()
            if left <= 0:
                break
            try:
                probe(base_url, model, timeout=min(60.0, left), api_key=api_key)
                return time.time() - t0
            except Exception as e:  # noqa: BLE001 - recorded and retried until the deadline
                last_error = f"probe request failed: {e}"
        else:
            last_error = "/health not OK"
        if time.time() >= next_note:
            log.info("waiting for %s (%s) to become ready: %.0f s so far", base_url, model, time.time() - t0)
            next_note += 15
        time.sleep(max(0.0, min(poll_s, deadline - time.time())))
    tail = f"; log tail:\n{_log_tail(log_file)}" if log_file else ""
    raise EndpointDeadlineExceeded(
        f"endpoint {base_url} ({model}) not ready after {timeout_s:.0f} s ({last_error}){tail}"
    )


class EngineManager:
    """Launches, tracks and stops vLLM servers for local model directories."""

    def __init__(self, state_dir: str | Path, engine_python: str | Path):
        self.state_dir = Path(state_dir)
        self.engine_python = Path(engine_python)
        self.records_dir = self.state_dir / "engines"
        self.records_dir.mkdir(parents=True, exist_ok=True)

    def _record_path(self, name: str) -> Path:
        return self.records_dir / f"{safe_name(name)}.json"

    @contextlib.contextmanager
    def lock(self, name: str):
        """The engine's lock (flock on engines/NAME.lock): whoever holds it
        may check, launch, wait for or stop that engine. Held by a process,
        released when it exits, however it exits. Engines never inherit it
        (Popen closes other file descriptors)."""
        with open(self.records_dir / f"{safe_name(name)}.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("engine %s: another task is starting or stopping it; waiting for it", name)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get(self, name: str) -> EngineRecord | None:
        p = self._record_path(name)
        if not p.is_file():
            return None
        return EngineRecord.from_json(json.loads(p.read_text()))

    def list(self) -> list[EngineRecord]:
        return [EngineRecord.from_json(json.loads(p.read_text())) for p in sorted(self.records_dir.glob("*.json"))]

    def is_running(self, rec: EngineRecord) -> bool:
        return not_the_engine(rec) is None and health_ok(rec.base_url)

    def launch(
        self,
        name: str,
        model_dir: str | Path,
        *,
        max_model_len: int = 2048,
        port: int | None = None,
        kv_cache_gib: int = 2,
        extra_args: list[str] | None = None,
        served_name: str | None = None,
        identity: str | None = None,
    ) -> EngineRecord:
        """Start a server and record it as `name`, serving the model as
        `served_name` (default `name`); does not wait (see ensure).
        `identity`: the model fingerprint to record (see ensure_many)."""
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
        log_file = log_dir / f"engine-{safe_name(name)}.log"
        cmd = [
            str(self.engine_python), "-m", ENTRYPOINT,
            "--model", str(model_dir), "--served-model-name", served_name or name,
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
            pid_start=process_start_time(proc.pid), served_name=served_name if served_name != name else None,
            identity=identity, max_model_len=max_model_len,
        )  # fmt: skip
        tmp = self._record_path(name).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(rec), indent=2))
        os.replace(tmp, self._record_path(name))
        log.info("launched vLLM for %s (pid %d, port %d, log %s)", name, proc.pid, port, log_file)
        return rec

    def wait(self, rec: EngineRecord, timeout_s: float, *, deadline: float | None = None) -> float:
        return wait_ready(rec.base_url, rec.model, timeout_s=timeout_s, deadline=deadline, pid=rec.pid,
                          log_file=rec.log_file)  # fmt: skip

    def ensure(self, name: str, model_dir: str | Path, *, timeout_s: float = 300.0, deadline: float | None = None,
               on_launch: Callable[[EngineRecord], None] | None = None, **launch_kw) -> tuple[EngineRecord, bool]:
        """A ready engine serving `model_dir` as `name` (see ensure_many).
        Returns (record, launched by this call)."""
        spec = {"model_dir": model_dir, **launch_kw}
        return self.ensure_many({name: spec}, timeout_s=timeout_s, deadlines={name: deadline} if deadline else None,
                                on_launch=on_launch)[name]  # fmt: skip

    def ensure_many(
        self,
        specs: dict[str, dict],
        *,
        timeout_s: float = 300.0,
        deadlines: dict[str, float] | None = None,
        on_launch: Callable[[EngineRecord], None] | None = None,
    ) -> dict[str, tuple[EngineRecord, bool]]:
        """Ready engines: name -> (record, launched by this call). `specs`:
        name -> {"model_dir": ..., "identity": fingerprint, launch keywords}.
        A healthy engine serving the same directory with the same identity
        (serving.models.model_fingerprint; computed when not given) and
        max_model_len is reused; one that is still starting is waited for;
        otherwise (none, dead, another model, weights changed in place,
        another max_model_len, a recycled pid) it is stopped and a new one
        is launched (`on_launch(record)` right after) -- all launches before
        the first wait, so cold starts overlap. Each name's lock is held
        throughout. `deadlines`: name -> time.time() by which it must be
        ready (default now + timeout_s); a deadline already passed fails at
        once, launching nothing. If anything fails, the engines this call
        launched or waited for are stopped before the locks are released
        (nobody else can be waiting for them: we hold their locks)."""
        now = time.time()
        deadlines = {n: (deadlines or {}).get(n) or now + timeout_s for n in specs}
        out: dict[str, tuple[EngineRecord, bool]] = {}
        pending: list[str] = []
        with contextlib.ExitStack() as locks:
            for name in sorted(specs):
                locks.enter_context(self.lock(name))
            try:
                for name, spec in specs.items():
                    launch_kw = {k: v for k, v in spec.items() if k != "model_dir"}
                    model_dir = Path(spec["model_dir"]).resolve()
                    launch_kw.setdefault("max_model_len", 2048)
                    if not launch_kw.get("identity"):
                        launch_kw["identity"] = model_fingerprint(model_dir, max_model_len=launch_kw["max_model_len"])
                    rec = self.get(name)
                    want = (str(model_dir), launch_kw["identity"], launch_kw["max_model_len"])
                    same = rec is not None and (rec.model_dir, rec.identity, rec.max_model_len) == want
                    if rec is not None and not same and rec.model_dir == str(model_dir):
                        note = "was launched for another identity or max_model_len: replacing it"
                        log.info("engine %s (pid %d) %s", name, rec.pid, note)
                    ours = same and not_the_engine(rec) is None
                    if ours and health_ok(rec.base_url):
                        out[name] = (rec, False)
                        continue
                    if deadlines[name] <= time.time():
                        raise EndpointDeadlineExceeded(
                            f"engine {name} not ready after {timeout_s:.0f} s: its readiness deadline passed in "
                            "an earlier try of this run; nothing launched"
                        )  # fmt: skip
                    if ours:
                        log.info("engine %s (pid %d) is starting: waiting for it", name, rec.pid)
                        out[name] = (rec, False)
                        pending.append(name)
                        continue
                    if rec is not None:
                        self._stop_locked(rec)
                    rec = self.launch(name, model_dir, **launch_kw)
                    out[name] = (rec, True)
                    pending.append(name)
                    if on_launch:
                        on_launch(rec)
                for name in pending:
                    took = self.wait(out[name][0], timeout_s, deadline=deadlines[name])
                    log.info("engine %s ready in %.0f s at %s", name, took, out[name][0].base_url)
            except BaseException:
                for name in pending:
                    self._stop_locked(out[name][0], grace_s=10)
                raise
        return out

    def stop(self, name: str, grace_s: float = 20.0) -> StopResult | None:
        """Stop the engine recorded as `name` (None: no record)."""
        with self.lock(name):
            rec = self.get(name)
            return None if rec is None else self._stop_locked(rec, grace_s)

    def stop_record(self, rec: EngineRecord, grace_s: float = 20.0) -> StopResult:
        """Stop the engine `rec` describes (e.g. from a run's launch records),
        even if `engines/NAME.json` now describes a newer engine, which is
        then left alone."""
        with self.lock(rec.name):
            return self._stop_locked(rec, grace_s)

    def _stop_locked(self, rec: EngineRecord, grace_s: float = 20.0) -> StopResult:
        problem = not_the_engine(rec)
        if problem is None:
            _terminate(rec.pid, grace_s)
            note = f"stopped {rec.name} (pid {rec.pid})"
        elif _alive(rec.pid):
            note = f"{rec.name}: {problem}: left alone"
        else:
            note = f"{rec.name}: {problem}"
        current = self.get(rec.name)
        if current is not None and (current.pid, current.pid_start) == (rec.pid, rec.pid_start):
            self._record_path(rec.name).unlink(missing_ok=True)
            note += "; its record is removed" if problem else ""
        (log.info if problem is None else log.warning)("%s", note)
        return StopResult(rec.name, rec.pid, problem is None, note)


def _terminate(pgid: int, grace_s: float) -> None:
    """SIGTERM an engine's process group (the server and its EngineCore),
    SIGKILL what is left after `grace_s`; only processes seen in the group
    (same pid and start time) are killed. Reaps the server if it is our child."""
    members = _group(pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(_same_process(p, s) for p, s in members):
        time.sleep(0.2)
    left = [(p, s) for p, s in {*members, *_group(pgid)} if _same_process(p, s)]
    for p, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and any(_same_process(p, s) for p, s in left):
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
