"""llmops: run the evaluation-and-promotion pipeline and inspect its results.

Everything lives in a project-local state directory (LLMOPS_HOME, default
./.llmops): the Airflow home and its SQLite DB, the MLflow SQLite DB and
artifacts, converted models, engine records and logs, the result cache.
MLFLOW_TRACKING_URI overrides where runs and the registry live;
LLMOPS_ARTIFACT_STORE where the promotion ledger lives (a directory or
gs://bucket/prefix; default .llmops/store).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from evaluation import settings

DAG_ID = "llm_eval_promote"


def _bin(name: str) -> str:
    """A console script of this virtualenv (works without an activated venv)."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def airflow_env(suite: str | None = None) -> dict[str, str]:
    home = settings.home()
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "LLMOPS_HOME": str(home),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Every local user is an admin: never listen beyond this host
            # (Airflow 3.3's api.host defaults to 0.0.0.0).
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "30",
            "MLFLOW_TRACKING_URI": settings.tracking_uri(),
            "GX_ANALYTICS_ENABLED": "False",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    # `airflow standalone` starts its components as `airflow ...` from PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if suite:
        env["LLMOPS_SUITE"] = suite
    return env


def ensure_airflow_db(env: dict[str, str]) -> None:
    """`airflow db migrate` once per Airflow version (about 4 s)."""
    import airflow

    marker = Path(env["AIRFLOW_HOME"]) / f".migrated-{airflow.__version__}"
    if marker.exists():
        return
    print(f"[llmops] initialising the Airflow DB in {env['AIRFLOW_HOME']}", flush=True)
    subprocess.run([_bin("airflow"), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    marker.touch()


def cmd_run(args: argparse.Namespace) -> int:
    from evaluation.report import format_report
    from evaluation.suite import load_suite

    suite_path = str(Path(args.suite).resolve())
    suite = load_suite(suite_path)  # fail fast, before any engine or Airflow work
    env = airflow_env(suite_path)
    if not settings.under_roots(suite_path):
        # The DAG reads suites only under the suite roots; the user owns this
        # host, so this run's own suite directory becomes one, for this run.
        extra = str(Path(suite_path).parent)
        env["LLMOPS_SUITES_PATH"] = os.pathsep.join(p for p in (env.get("LLMOPS_SUITES_PATH"), extra) if p)
        print(f"[llmops] {extra} added to LLMOPS_SUITES_PATH for this run", flush=True)
    ensure_airflow_db(env)
    last = settings.home() / "last_report.json"
    last.unlink(missing_ok=True)
    conf = {"suite": suite_path, "keep_engines": bool(args.keep_engines)}
    print(f"[llmops] running DAG {DAG_ID} on suite {suite.name} ({suite_path})", flush=True)
    print(f"[llmops] state: {settings.home()}  MLflow: {env['MLFLOW_TRACKING_URI']}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run([_bin("airflow"), "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=env)
    took = time.monotonic() - t0
    if not last.exists():
        print(f"\n[llmops] DAG run failed after {took:.0f} s (exit {proc.returncode}); see the task logs above "
              f"and engine logs in {settings.home() / 'logs'}", file=sys.stderr)  # fmt: skip
        return 1
    rep = json.loads(last.read_text())
    print(format_report(rep))
    print(f"[llmops] done in {took:.0f} s; report: {last}")
    return 0 if proc.returncode == 0 else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from evaluation.stages.validate import check_dataset, check_suite

    s = check_suite(str(Path(args.suite).resolve()))
    d = check_dataset(s["path"])
    print(f"suite {s['name']} OK: {s['configs']} configurations; dataset OK: {d['rows']} rows, digest {d['digest']}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """MLflow's UI and (--airflow) Airflow's, both on 127.0.0.1 only."""
    env = airflow_env()
    # litellm (installed next to MLflow) fetches a price map at import; offline,
    # that makes `mlflow server` hang at start-up.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    procs = []
    art = settings.home() / "mlartifacts"
    procs.append(subprocess.Popen(
        [_bin("mlflow"), "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
         "--default-artifact-root", art.as_uri(), "--host", "127.0.0.1", "--port", str(args.port)],
        env=env, start_new_session=True,
    ))  # fmt: skip
    print(f"[llmops] MLflow UI: http://127.0.0.1:{args.port}", flush=True)
    if args.airflow:
        ensure_airflow_db(env)
        env["AIRFLOW__API__PORT"] = str(args.airflow_port)
        # The task links of plugins/llmops_mlflow_links.py point at this MLflow UI.
        env.setdefault("LLMOPS_MLFLOW_UI_URL", f"http://127.0.0.1:{args.port}")
        procs.append(subprocess.Popen([_bin("airflow"), "standalone"], env=env, start_new_session=True))
        print(f"[llmops] Airflow UI: http://127.0.0.1:{args.airflow_port} (all users are admins locally)", flush=True)
    print("[llmops] Ctrl-C stops the servers", flush=True)

    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)  # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # Each server runs in its own process group (MLflow and Airflow start
        # workers of their own): stop the whole group.
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from evaluation.suite import BUNDLED_MODELS
    from serving.models import materialize

    for name in args.names or BUNDLED_MODELS:
        t0 = time.monotonic()
        path = materialize(name, settings.models_dir(), settings.engine_python())
        print(f"{name}: {path} ({time.monotonic() - t0:.0f} s)")
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from serving.endpoints import manager
    from serving.engine import not_the_engine

    m = manager()
    recs = m.list()
    if args.action == "stop":  # only processes that are still the recorded engine are signalled
        for r in recs:
            res = m.stop(r.name)
            print(res.note if res else f"{r.name}: no longer recorded")
        return 0
    for r in recs:
        problem = not_the_engine(r)
        state = f"stale record: {problem}" if problem else "ready" if m.is_running(r) else "not responding"
        print(f"{r.name}: {r.base_url} pid {r.pid} {state}  log {r.log_file}")
    if not recs:
        print("no managed engines")
    return 0


def cmd_scorers(_: argparse.Namespace) -> int:
    from evaluation.scorers import list_scorers

    rows = list_scorers()
    width = max(len(s["name"]) for s in rows)
    for s in rows:
        print(f"{s['name']:{width}s}  v{s['version']}  [{s['range'][0]:g}, {s['range'][1]:g}]  "
              f"{'higher' if s['higher_is_better'] else 'lower '} is better  "
              f"{'judge' if s['needs_judge'] else '     '}  {'per config ' if s['level'] == 'config' else 'per example'}"
              f"  metrics: {', '.join(s['metrics'])}")  # fmt: skip
    return 0


def cmd_report(_: argparse.Namespace) -> int:
    from evaluation.report import format_report

    last = settings.home() / "last_report.json"
    if not last.exists():
        print(f"no report yet in {settings.home()}: run `llmops run` first", file=sys.stderr)
        return 1
    print(format_report(json.loads(last.read_text())))
    return 0


def _registered_model(args: argparse.Namespace) -> str:
    if args.registered_model:
        return args.registered_model
    from evaluation.suite import load_suite

    return load_suite(args.suite).registered_model


def cmd_rollback(args: argparse.Namespace) -> int:
    from evaluation.stages.promote import rollback_champion

    res = rollback_champion(_registered_model(args), reason=args.reason)
    print(f"champion v{res['from']} -> v{res['to']} (ledger entry {res['entry']}); aliases now {res['aliases']}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from evaluation.ledger import Ledger

    name = _registered_model(args)
    entries = Ledger(settings.artifact_store_uri(), name).entries()
    if not entries:
        print(f"{name}: the promotion ledger in {settings.artifact_store_uri()} is empty")
    for e in entries:
        prev = f"v{e.previous_version}" if e.previous_version else "-"
        print(f"{e.seq:4d}  {e.timestamp}  {e.action:8s}  {prev} -> v{e.version}  run {e.dag_run_id or '-'}  "
              f"commit {e.git_commit[:10]}  {' | '.join(e.reasons)}")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the llm_eval_promote DAG in-process on a suite and print the leaderboard")
    r.add_argument("--suite", default=str(settings.BUNDLED_SUITE), help="suite YAML (default: the bundled suite)")
    r.add_argument("--keep-engines", action="store_true", help="leave the vLLM servers this run starts running")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="validate a suite and its dataset (no engine is started)")
    v.add_argument("--suite", default=str(settings.BUNDLED_SUITE))
    v.set_defaults(func=cmd_validate)

    u = sub.add_parser("ui", help="start the MLflow UI (and optionally Airflow) on localhost")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--airflow", action="store_true", help="also run `airflow standalone` with the project's DAGs")
    u.add_argument("--airflow-port", type=int, default=8080)
    u.set_defaults(func=cmd_ui)

    m = sub.add_parser("models", help="materialize bundled models (convert once to safetensors)")
    m.add_argument("names", nargs="*", help="bundled model names (default: all)")
    m.set_defaults(func=cmd_models)

    e = sub.add_parser("engines", help="list or stop the managed vLLM servers")
    e.add_argument("action", choices=["list", "stop"], nargs="?", default="list")
    e.set_defaults(func=cmd_engines)

    for name, func, text in (
        ("rollback", cmd_rollback, "move champion back to the promotion ledger's previous version"),
        ("ledger", cmd_ledger, "show the promotion ledger of a registered model"),
    ):
        c = sub.add_parser(name, help=text)
        g = c.add_mutually_exclusive_group()
        g.add_argument("--registered-model", help="registered model name")
        g.add_argument("--suite", default=str(settings.BUNDLED_SUITE), help="take the registered model from a suite")
        if name == "rollback":
            c.add_argument("--reason", default="manual rollback (llmops rollback)", help="recorded in the ledger")
        c.set_defaults(func=func)

    sub.add_parser("scorers", help="list registered scorers").set_defaults(func=cmd_scorers)
    sub.add_parser("report", help="print the last run's leaderboard and decision").set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from evaluation.errors import LLMOpsError

    try:
        return args.func(args)
    except LLMOpsError as e:  # bad input or registry state: a clear message, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
