"""The package as an Airflow provider: installed, Airflow knows the ``capillary`` connection
type, the UI gets its form, and the UI's Test button (a real api-server) reaches our hook.

The package is installed with pip from a copy of the checkout into a folder of its own
(put on PYTHONPATH), not into the shared virtualenv: Airflow loads every installed
provider's entry point, and this test must not change what other runs of the venv see.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dag_support import AIRFLOW, ROOT, TILL, airflow_env, migrate

pytestmark = pytest.mark.slow

PACKAGE = "airflow-provider-capillary-associate"
HOOK = "associate.hook.CapillaryHook"


@pytest.fixture(scope="module")
def provider_site(tmp_path_factory) -> Path:
    """``pip install --no-deps`` of the project (pyproject.toml) into a folder: the package and its entry point."""
    work = tmp_path_factory.mktemp("provider")
    source = work / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "plugins", source / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = work / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return site


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from associate.sandbox.launcher import SandboxProcess

    with SandboxProcess(tmp_path_factory.mktemp("sandbox") / "sandbox.db", credentials=[TILL]) as process:
        yield process


def provider_env(home: Path, site: Path, sandbox_url: str, **extra: str) -> dict[str, str]:
    """The Airflow CLI's environment with the installed provider visible (after plugins/, whose code wins)."""
    env = airflow_env(home, {"conn_type": "sqlite", "host": str(home / "unused.db")}, sandbox_url, **extra)
    env["PYTHONPATH"] = f"{ROOT / 'plugins'}:{site}"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, provider_site, sandbox):
    """A real ``airflow api-server`` (connection tests enabled, every user admin): its URL and a token."""
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = provider_env(home, provider_site, sandbox.url,
                       AIRFLOW__API__PORT=str(port), AIRFLOW__API__WORKERS="1",
                       AIRFLOW__CORE__TEST_CONNECTION="Enabled",
                       AIRFLOW__API_AUTH__JWT_SECRET="associate-test-secret",
                       AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
    migrate(env)
    base = f"http://127.0.0.1:{port}"
    with (home / "api-server.log").open("w") as out:
        proc = subprocess.Popen([AIRFLOW, "api-server"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        token = wait_for_token(base, proc, home / "api-server.log")
        yield base, {"Authorization": f"Bearer {token}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_token(base: str, proc: subprocess.Popen, log: Path, timeout: int = 180) -> str:
    started = time.time()
    while time.time() - started < timeout:
        assert proc.poll() is None, "api-server exited:\n" + log.read_text(errors="replace")[-5000:]
        try:
            answer = requests.get(f"{base}/auth/token", timeout=5)
            if answer.ok:  # 201 Created in Airflow 3.3
                return answer.json()["access_token"]
        except requests.ConnectionError:
            pass
        time.sleep(2)
    raise AssertionError(f"api-server not up after {timeout} s:\n" + log.read_text(errors="replace")[-5000:])


def cli_json(env: dict[str, str], *args: str) -> list[dict]:
    proc = subprocess.run([AIRFLOW, *args, "-o", "json"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("["):])


def test_airflow_lists_the_provider_and_its_capillary_connection_type(tmp_path, provider_site, sandbox):
    env = provider_env(tmp_path, provider_site, sandbox.url)
    providers = {p["package_name"]: p for p in cli_json(env, "providers", "list")}
    assert providers[PACKAGE]["version"] == "0.1.0"
    hooks = {h["connection_type"]: h for h in cli_json(env, "providers", "hooks")}
    assert hooks["capillary"]["class"] == HOOK and hooks["capillary"]["package_name"] == PACKAGE
    assert hooks["capillary"]["conn_id_attribute_name"] == "capillary_conn_id"
    # http stays the HTTP provider's: http connections of existing deployments keep working.
    assert hooks["http"]["class"] == "airflow.providers.http.hooks.http.HttpHook"


def test_the_ui_gets_the_capillary_form(api_server):
    base, auth = api_server
    answer = requests.get(f"{base}/ui/connections/hook_meta", headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    capillary = next(meta for meta in answer.json() if meta["connection_type"] == "capillary")
    assert capillary["hook_name"] == "Capillary" and capillary["hook_class_name"] == HOOK
    standard = capillary["standard_fields"]
    assert standard["host"]["title"] == "Cluster URL" and standard["host"]["placeholder"].startswith("https://")
    assert standard["login"]["title"] == "Till login" and standard["password"]["title"] == "Till password"
    assert standard["port"]["hidden"] and standard["url_schema"]["hidden"]
    extra = capillary["extra_fields"]
    assert {"oauth_key", "oauth_secret", "rate_limit_rpm", "concurrency", "batch_size", "connect_timeout",
            "read_timeout", "max_retries", "max_throttle_wait", "verify"} <= set(extra)
    assert extra["rate_limit_rpm"]["schema"]["title"] == "Rate limit (requests/min)"
    assert "Default 100" in extra["rate_limit_rpm"]["description"]
    assert extra["oauth_secret"]["schema"]["format"] == "password"


def test_the_test_button_calls_our_hook(api_server, sandbox):
    base, auth = api_server
    connection = {"connection_id": "capillary_form", "conn_type": "capillary", "host": sandbox.url,
                  "login": TILL[0], "password": TILL[1], "extra": json.dumps({"rate_limit_rpm": 600})}
    answer = requests.post(f"{base}/api/v2/connections/test", json=connection, headers=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] is True, answer.json()
    assert answer.json()["message"].startswith("Connected: ")

    wrong = requests.post(f"{base}/api/v2/connections/test", json={**connection, "password": "not-the-password"},
                          headers=auth, timeout=60)
    assert wrong.status_code == 200, wrong.text
    assert wrong.json()["status"] is False
    assert "Invalid till credentials" in wrong.json()["message"]
    assert "not-the-password" not in wrong.json()["message"]


@pytest.mark.parametrize("conn_type", ["capillary", "http"])
def test_the_hook_works_with_a_capillary_or_an_http_connection(sandbox, monkeypatch, conn_type):
    from associate.hook import CapillaryHook

    monkeypatch.setenv("AIRFLOW_CONN_CAPILLARY_KIND", json.dumps({
        "conn_type": conn_type, "host": sandbox.url, "login": TILL[0], "password": TILL[1],
        "extra": {"rate_limit_rpm": "600", "concurrency": "2"}}))
    hook = CapillaryHook("capillary_kind")
    try:
        ok, message = hook.test_connection()
    finally:
        hook.close()
    assert ok, message
    assert hook.settings.rate_limit_rpm == 600 and hook.settings.concurrency == 2
