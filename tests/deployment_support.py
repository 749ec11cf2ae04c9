"""Helpers of the deployment tests: `make airflow`'s module in a temp directory, and killing its workers."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_local_airflow():
    """scripts/local_airflow.py, the module behind `make airflow` (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("local_airflow", ROOT / "scripts" / "local_airflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local_airflow = load_local_airflow()
LocalDeployment = local_airflow.LocalDeployment
DeploymentError = local_airflow.DeploymentError
free_port = local_airflow.free_port


def deployment_processes(deployment) -> set[int]:
    """Pids of every process of the deployment: the services and everything they started."""
    import psutil

    pids = set()
    for pid in deployment.running().values():
        with contextlib.suppress(psutil.NoSuchProcess):
            pids |= {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    return pids


def alive(pids: set[int]) -> set[int]:
    """The pids that still name a live (not zombie) process."""
    import psutil

    out = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
    return out


@contextlib.contextmanager
def running_deployment(state_dir: Path, **settings):
    """A started deployment on free ports; always stopped afterwards (its logs are in the failure)."""
    deployment = LocalDeployment(state_dir, api_port=free_port(), sandbox_port=free_port(), **settings)
    try:
        deployment.start(quiet=True)
    except DeploymentError as exc:
        deployment.stop(quiet=True)
        pytest.fail(f"the deployment did not start: {exc}")
    try:
        yield deployment
    finally:
        deployment.stop(quiet=True)


def require_redis(url: str) -> None:
    """A missing Redis fails the test, never skips it."""
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required at {url}: {exc}")


def worker_of(deployment, pid: int) -> str | None:
    """The service (e.g. ``worker1``) whose process tree holds ``pid``, or None."""
    import psutil

    for name, service_pid in deployment.running().items():
        with contextlib.suppress(psutil.NoSuchProcess):
            if pid == service_pid or pid in {c.pid for c in psutil.Process(service_pid).children(recursive=True)}:
                return name
    return None


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and all its descendants at once, as a crashed machine would; the pids killed."""
    import psutil

    root = psutil.Process(pid)
    family = [root, *root.children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=10)
    return [member.pid for member in family]
