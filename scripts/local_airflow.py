"""`make airflow`: a local Airflow deployment of the checkout, with the sandbox and a sample warehouse.

    python scripts/local_airflow.py start [--executor celery] [--api-port 8080] ...
    python scripts/local_airflow.py status
    python scripts/local_airflow.py stop

LocalExecutor (default): api-server, scheduler and dag-processor on a SQLite metadata DB.
CeleryExecutor (``--executor celery``): the same on a PostgreSQL metadata DB, plus two
``airflow celery worker`` processes on the machine's Redis (broker) and PostgreSQL (results).
Everything lives under ``.airflow-local/`` (AIRFLOW_HOME, logs, pid files, the env file).
Tests drive a deployment in a temp directory through :class:`LocalDeployment`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

DAG_ID = "associate_customers"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
STATE_DIR = ROOT / ".airflow-local"
TILL = ("local.till", "local-till-password")
ADMIN = "admin"
# README's pools: concurrent API calls, and one warehouse writer at a time.
POOLS = {"capillary_api": (2, "Concurrent Capillary API calls"), "warehouse_writer": (1, "One warehouse writer")}
SAMPLE_CUSTOMERS, SAMPLE_SEED = 400, 11
PG_ADMIN_URL = os.environ.get("ASSOCIATE_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ASSOCIATE_REDIS_URL", "redis://127.0.0.1:6379/5")
START_TIMEOUT = 180
# Seconds a service's start time may differ from the one recorded at its start (see process()):
# the boot time it is derived from moved by 1 s within a minute here, and by more over a
# CI run's quarter of an hour (a test's stop then found its own sandbox not running).
PROCESS_START_TOLERANCE = 10.0
STOP_TIMEOUT = 30


def redis_connection(url: str) -> str:
    """The Airflow connection URI of a Redis URL: the redis provider reads the db from the ``db`` extra, not the path."""
    parts = urllib.parse.urlsplit(url)
    db = parts.path.strip("/") or "0"
    return f"redis://{parts.netloc}?db={db}"


class DeploymentError(RuntimeError):
    """The deployment could not be started, reached or stopped (the message says what to do)."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def masked_password(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for printing."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class LocalDeployment:
    """Airflow's services, the sandbox and a sample warehouse, run from one state directory."""

    def __init__(self, state_dir: Path = STATE_DIR, *, executor: str = "local", api_port: int = 8080,
                 sandbox_port: int = 8090, warehouse: Path | None = None, sample_customers: int = SAMPLE_CUSTOMERS,
                 sandbox_args: tuple[str, ...] = (), sandbox_credentials: tuple[tuple[str, str], ...] = (),
                 metadata_url: str | None = None, metadata_db: str = "associate_airflow",
                 pg_admin_url: str = PG_ADMIN_URL, redis_url: str = REDIS_URL, workers: int = 2,
                 worker_concurrency: int = 2, capillary_extra: dict | None = None,
                 extra_env: dict[str, str] | None = None):
        if executor not in ("local", "celery"):
            raise DeploymentError(f"unknown executor {executor!r}: local or celery")
        self.state_dir = Path(state_dir).resolve()
        self.executor = executor
        self.api_port = api_port
        self.sandbox_port = sandbox_port
        self.warehouse = Path(warehouse) if warehouse else self.state_dir / "warehouse.db"
        self.sample_customers = sample_customers
        self.sandbox_args = tuple(sandbox_args)
        self.sandbox_credentials = (TILL, *sandbox_credentials)
        self.metadata_url = metadata_url
        self.metadata_db = metadata_db
        self.pg_admin_url = pg_admin_url
        self.redis_url = redis_url
        self.workers = workers
        self.worker_concurrency = worker_concurrency
        self.capillary_extra = capillary_extra or {"rate_limit_rpm": 6000}
        self.extra_env = extra_env or {}
        self.children: dict[str, subprocess.Popen] = {}  # started by this process: reaped on stop

    # --- where things are -------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids(self) -> Path:
        return self.state_dir / "pids"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def services(self) -> list[str]:
        """The Airflow processes of this executor, in start order."""
        names = ["api-server", "scheduler", "dag-processor"]
        if self.executor == "celery":
            names += [f"worker{i}" for i in range(1, self.workers + 1)]
        return names

    # --- the environment every process shares --------------------------------------------------

    def _metadata_url(self) -> str:
        if self.executor == "local":
            return "sqlite:///" + str(self.home / "airflow.db")
        if self.metadata_url:
            return self.metadata_url
        return self.pg_admin_url.rsplit("/", 1)[0] + "/" + self.metadata_db

    def settings(self, jwt_secret: str) -> dict[str, str]:
        """The AIRFLOW__*, AIRFLOW_CONN_* and ASSOCIATE_* settings of every process (the env file)."""
        metadata = self._metadata_url()
        env = {
            "AIRFLOW_HOME": str(self.home),
            "PYTHONPATH": str(ROOT / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.executor == "celery" else "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.api_url,
            # Every process signs and checks the task tokens with the same secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            # A busy laptop answers slower than the 5 s default; a task must not fail for that.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "ASSOCIATE_STAGING_BASE": "file://" + str(self.state_dir / "staging"),
            "ASSOCIATE_REPORTS_DIR": str(self.state_dir / "reports"),
            "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(self.warehouse)}),
            "AIRFLOW_CONN_CAPILLARY_DEFAULT": json.dumps({
                "conn_type": "capillary", "host": self.sandbox_url, "login": TILL[0], "password": TILL[1],
                "extra": self.capillary_extra,
            }),
        }
        if self.executor == "celery":
            env.update({
                "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata.replace("postgresql+psycopg2://", "postgresql://", 1),
                # Tasks on several processes share one rate budget through Redis (docs/capillary-client.md).
                "AIRFLOW__ASSOCIATE__RATE_LIMIT_REDIS_CONN_ID": "redis_default",
                "AIRFLOW_CONN_REDIS_DEFAULT": redis_connection(self.redis_url),
            })
        env.update(self.extra_env)
        return env

    def env(self) -> dict[str, str]:
        """The environment of an Airflow process of this deployment (the saved env file's settings)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))}
        base.update(self.read_env_file())
        return base

    def read_env_file(self) -> dict[str, str]:
        if not self.env_file.exists():
            raise DeploymentError(f"no deployment in {self.state_dir} (start it first)")
        out = {}
        for line in self.env_file.read_text().splitlines():
            if line.startswith("export "):
                key, value = shlex.split(line[len("export "):])[0].split("=", 1)
                out[key] = value
        return out

    def write_env_file(self) -> None:
        """Write the env file (a shell script users can `source`); the JWT secret survives restarts."""
        jwt_secret = secrets.token_urlsafe(64)  # PyJWT warns below 64 bytes for the HS512 task tokens
        if self.env_file.exists():
            jwt_secret = self.read_env_file().get("AIRFLOW__API_AUTH__JWT_SECRET") or jwt_secret
        lines = [f"# Settings of the local Airflow deployment ({self.executor} executor).",
                 "# `source` this file to run the airflow CLI against it."]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.settings(jwt_secret).items()]
        lines.append(f'PATH={shlex.quote(str(Path(AIRFLOW).parent))}:"$PATH"; export PATH  # this venv\'s airflow')
        self.env_file.write_text("\n".join(lines) + "\n")
        self.env_file.chmod(0o600)  # it holds the till password and the JWT secret

    # --- processes -------------------------------------------------------------------------------

    def _pid_path(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        import psutil

        log = (self.logs / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self.children[name] = proc
        # The start time tells a later `stop` whether the pid still names our process.
        self._pid_path(name).write_text(f"{proc.pid} {psutil.Process(proc.pid).create_time()}\n")

    def process(self, name: str):
        """The live psutil process of a service, or None."""
        import psutil

        child = self.children.get(name)
        if child is not None:  # started by this object: its pid is ours until it is reaped
            if child.poll() is not None:
                return None
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(child.pid)
                return None if proc.status() == psutil.STATUS_ZOMBIE else proc
            return None
        path = self._pid_path(name)
        if not path.exists():
            return None
        pid, created = path.read_text().split()
        try:
            proc = psutil.Process(int(pid))
            # A start time, not a pid alone (pids are reused), but not to the hundredth: Linux
            # derives it from the boot time in whole seconds, which moves by one as the clock
            # is adjusted (seen within a minute here), and stop then found nothing running.
            if abs(proc.create_time() - float(created)) > PROCESS_START_TOLERANCE or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def running(self) -> dict[str, int]:
        """{service: pid} of the processes of this deployment that are alive."""
        names = sorted(p.stem for p in self.pids.glob("*.pid")) if self.pids.exists() else []
        return {name: proc.pid for name in names if (proc := self.process(name)) is not None}

    def _check_alive(self) -> None:
        """Fail when a service died; Celery runs survive a dead worker as long as one is left."""
        dead = [name for name in ["sandbox", *self.services()] if self.process(name) is None]
        workers = [name for name in self.services() if name.startswith("worker")]
        if set(workers) - set(dead):
            dead = [name for name in dead if name not in workers]
        if dead:
            raise DeploymentError(f"{', '.join(dead)} exited; see {self.logs}/<name>.log\n" + self.log_tails(dead))

    def log_tails(self, names=None, chars: int = 3000) -> str:
        """The end of the services' logs, for error messages."""
        out = []
        for name in names or ["sandbox", *self.services()]:
            path = self.logs / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}.log\n" + path.read_text(errors="replace")[-chars:])
        return "\n".join(out)

    # --- start ----------------------------------------------------------------------------------

    def start(self, *, quiet: bool = False) -> None:
        """Start everything and return once the API answers; refuse when already running."""
        say = (lambda *a: None) if quiet else print
        alive = self.running()
        if alive:
            raise DeploymentError(f"already running in {self.state_dir} ({', '.join(alive)}); "
                                  "stop it first: make airflow-stop")
        for path in (self.home, self.logs, self.pids):
            path.mkdir(parents=True, exist_ok=True)
        for stale in self.pids.glob("*.pid"):
            stale.unlink()
        self._check_ports()
        if self.executor == "celery":
            self._check_services()
        self._build_warehouse(say)
        self.write_env_file()
        env = self.env()
        try:
            self.start_sandbox()
            say(f"Sandbox (fake Capillary): {self.sandbox_url}  (state in {self.state_dir / 'sandbox.db'})")
            self._airflow(env, "db", "migrate", log="db-migrate")
            if self.executor == "local":
                self._sqlite_wal()
            for pool, (slots, description) in POOLS.items():
                self._airflow(env, "pools", "set", pool, str(slots), description, log="pools")
            self._start_services(env)
            self.wait_ready()
        except BaseException:
            self.stop(quiet=True)
            raise
        say(self.banner())

    def _sqlite_wal(self) -> None:
        """Put the SQLite metadata DB in WAL mode (kept in the file): readers no longer block the writer."""
        import sqlite3

        db = sqlite3.connect(self.home / "airflow.db", timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()

    def _check_ports(self) -> None:
        for what, port, option in (("API server", self.api_port, "API_PORT / --api-port"),
                                   ("sandbox", self.sandbox_port, "SANDBOX_PORT / --sandbox-port")):
            with socket.socket() as sock:
                # As the servers do: a port held only by closed connections (TIME_WAIT) is free.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise DeploymentError(f"port {port} of the {what} is in use: choose another ({option})") from None

    def _check_services(self) -> None:
        """Redis and PostgreSQL answer; the metadata database exists (created when missing)."""
        import psycopg2
        import redis

        try:
            redis.Redis.from_url(self.redis_url, socket_timeout=5).ping()
        except redis.RedisError as exc:
            raise DeploymentError(f"the Celery executor needs Redis at {self.redis_url}: {exc}") from None
        if self.metadata_url:
            return
        try:
            admin = psycopg2.connect(self.pg_admin_url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            raise DeploymentError(f"the Celery executor needs PostgreSQL at {self.pg_admin_url}: {exc}") from None
        admin.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.metadata_db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.metadata_db}"')
        finally:
            admin.close()

    def _build_warehouse(self, say) -> None:
        """The sample warehouse (bench.generate, as `make demo`), built once and then kept."""
        if self.warehouse.exists():
            say(f"Warehouse: {self.warehouse} (kept from an earlier start)")
            return
        from bench.generate import generate_warehouse, load_sqlite

        self.warehouse.parent.mkdir(parents=True, exist_ok=True)
        load_sqlite(self.warehouse, *generate_warehouse(self.sample_customers, seed=SAMPLE_SEED, bad_ratio=0.05))
        say(f"Warehouse: {self.warehouse} (sample of {self.sample_customers} customers)")

    def start_sandbox(self, args: tuple[str, ...] | None = None) -> None:
        """Start the sandbox detached on its port; ``args`` (when given) replace the deployment's sandbox flags."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        env.update({"PYTHONPATH": str(ROOT / "plugins"), "PYTHONUNBUFFERED": "1"})
        cmd = [sys.executable, "-m", "associate.sandbox", "--host", "127.0.0.1", "--port", str(self.sandbox_port),
               "--db", str(self.state_dir / "sandbox.db")]
        for user, password in self.sandbox_credentials:
            cmd += ["--credentials", f"{user}:{password}"]
        self._spawn("sandbox", cmd + list(self.sandbox_args if args is None else args), env)
        self._wait(lambda: requests.get(f"{self.sandbox_url}/__sandbox/stats", timeout=5).ok, "the sandbox", ["sandbox"])

    def restart_sandbox(self, *args: str) -> None:
        """Stop the sandbox and start it again on the same port and state, with ``args`` as its only flags."""
        self._stop_service("sandbox")
        self.start_sandbox(args)

    def sandbox_stats(self) -> dict:
        return requests.get(f"{self.sandbox_url}/__sandbox/stats", timeout=10).json()

    def _airflow(self, env: dict[str, str], *args: str, log: str) -> None:
        with (self.logs / f"{log}.log").open("ab") as out:
            rc = subprocess.run([AIRFLOW, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                timeout=600).returncode
        if rc != 0:
            raise DeploymentError(f"airflow {' '.join(args)} failed (exit {rc})\n" + self.log_tails([log]))

    def _start_services(self, env: dict[str, str]) -> None:
        # No log server: every process writes task logs under this AIRFLOW_HOME, where the
        # api-server reads them; a log server would also need a free port per worker.
        self._spawn("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)], env)
        self._spawn("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"], env)
        self._spawn("dag-processor", [AIRFLOW, "dag-processor"], env)
        node = socket.gethostname()
        for i in range(1, self.workers + 1) if self.executor == "celery" else ():
            self._spawn(f"worker{i}", [AIRFLOW, "celery", "worker", "--celery-hostname", f"worker{i}@{node}",
                                       "--concurrency", str(self.worker_concurrency), "--skip-serve-logs",
                                       "--pid", str(self.home / f"worker{i}.pid")], env)

    def _wait(self, ready, what: str, names: list[str], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (requests.RequestException, OSError, ValueError, KeyError):
                pass
            dead = [name for name in names if self.process(name) is None]
            if dead:
                raise DeploymentError(f"{', '.join(dead)} exited while waiting for {what}\n" + self.log_tails(dead))
            time.sleep(1)
        raise DeploymentError(f"{what} not ready after {timeout:.0f} s\n" + self.log_tails(names))

    def wait_ready(self) -> None:
        """Wait until the API server reports itself healthy (and the Celery workers answer)."""
        def healthy() -> bool:
            body = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
            return body["metadatabase"]["status"] == "healthy" and self.passwords_file.exists()

        self._wait(healthy, "the API server", self.services())

    def wait_for_dag(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the dag-processor has parsed the DAG (the API knows it)."""
        self._wait(lambda: self.api("GET", f"/api/v2/dags/{DAG_ID}").status_code == 200,
                   f"the DAG {DAG_ID}", self.services(), timeout)

    def banner(self) -> str:
        """What a user needs: where the UI is, the login, how to use the CLI and how to stop."""
        workers = f", {self.workers} Celery workers (Redis {self.redis_url})" if self.executor == "celery" else ""
        return "\n".join([
            "",
            f"Airflow is ready ({self.executor} executor{workers}).",
            f"  UI / API:   {self.api_url}",
            f"  Login:      {ADMIN} / {self.password()}   (from {self.passwords_file})",
            f"  Metadata:   {masked_password(self._metadata_url())}",
            f"  Logs:       {self.logs}/<service>.log, task logs in {self.home / 'logs'}",
            f"  Airflow CLI against it:  source {self.env_file}  (then e.g. airflow dags list)",
            f"  The DAG {DAG_ID} starts paused and its runs wait until you unpause it (which also starts",
            "  the latest day's scheduled run); then trigger a dry run: conf {\"dry_run\": true}.",
            "  Stop:       make airflow-stop",
        ])

    # --- the REST API -----------------------------------------------------------------------------

    def password(self) -> str:
        """The admin password the api-server generated."""
        return json.loads(self.passwords_file.read_text())[ADMIN]

    def token(self) -> str:
        """A bearer token of the admin user (simple auth manager)."""
        resp = requests.post(f"{self.api_url}/auth/token", json={"username": ADMIN, "password": self.password()},
                             timeout=30)
        if resp.status_code not in (200, 201):
            raise DeploymentError(f"login as {ADMIN} failed: {resp.status_code} {resp.text[:300]}")
        return resp.json()["access_token"]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """One call of the REST API as the admin user."""
        if not getattr(self, "_token", None):
            self._token = self.token()
        headers = {"Authorization": f"Bearer {self._token}"}
        return requests.request(method, self.api_url + path, headers=headers, timeout=60, **kwargs)

    def unpause(self) -> None:
        resp = self.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        if resp.status_code != 200:
            raise DeploymentError(f"unpausing {DAG_ID}: {resp.status_code} {resp.text[:300]}")

    def trigger(self, conf: dict | None = None, logical_date: str | None = None) -> str:
        """Trigger a run through the REST API; its run id."""
        resp = self.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": logical_date, "conf": conf or {}})
        if resp.status_code != 200:
            raise DeploymentError(f"triggering {DAG_ID}: {resp.status_code} {resp.text[:300]}")
        return resp.json()["dag_run_id"]

    def run_state(self, run_id: str) -> str:
        resp = self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
        resp.raise_for_status()
        return resp.json()["state"]

    def task_instances(self, run_id: str) -> list[dict]:
        """The run's task instances as the REST API gives them (state, try_number, hostname, pid...)."""
        resp = self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances",
                        params={"limit": 1000})
        resp.raise_for_status()
        return resp.json()["task_instances"]

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        """Wait until the run finished; its final state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            self._check_alive()
            time.sleep(2)
        raise DeploymentError(f"run {run_id} still {state} after {timeout:.0f} s\n" + self.log_tails())

    # --- stop -------------------------------------------------------------------------------------

    def _stop_service(self, name: str) -> None:
        self._stop_services([name])

    def _stop_services(self, names: list[str]) -> None:
        """SIGTERM the services and everything they started, SIGKILL what is left after a grace period."""
        import psutil

        family = []
        for name in names:
            proc = self.process(name)
            if proc is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    family += [proc, *proc.children(recursive=True)]
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGTERM)
        # One grace period for all: a Celery worker finishing its task must not delay the others' stop.
        _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=10)
        for name in names:
            child = self.children.pop(name, None)
            if child is not None:
                if child.poll() is None:  # not found by its pid file: it must not outlive the stop
                    child.kill()
                child.wait(timeout=10)  # reap our own child: no zombie left behind
            self._pid_path(name).unlink(missing_ok=True)

    def stop(self, *, quiet: bool = False) -> list[str]:
        """Stop every process of the deployment; the names of those that were running."""
        names = ["sandbox", *self.services()]
        if self.pids.exists():
            names += sorted({p.stem for p in self.pids.glob("*.pid")} - set(names))
        alive = [name for name in names if self.process(name) is not None]
        self._stop_services(names)
        if not quiet:
            print(f"Stopped: {', '.join(alive)}" if alive else f"Nothing was running in {self.state_dir}")
        return alive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--executor", choices=["local", "celery"], default="local")
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--sandbox-port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (celery executor)")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--redis-url", default=REDIS_URL, help="Celery broker and shared rate budget")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--metadata-db", default="associate_airflow", help="PostgreSQL database (celery executor)")
    args = parser.parse_args(argv)
    deployment = LocalDeployment(
        args.state_dir, executor=args.executor, api_port=args.api_port, sandbox_port=args.sandbox_port,
        workers=args.workers, worker_concurrency=args.worker_concurrency, redis_url=args.redis_url,
        pg_admin_url=args.pg_admin_url, metadata_db=args.metadata_db,
    )
    try:
        if args.command == "start":
            deployment.start()
        elif args.command == "stop":
            deployment.stop()
        else:
            alive = deployment.running()
            print("\n".join(f"{name}: running (pid {pid})" for name, pid in alive.items())
                  or f"Nothing is running in {args.state_dir}")
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
