"""Sandbox run-time behaviour: token expiry, rate limit, batch limit flag, every fault kind,
persistence across restarts and crashes, and the command line."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from associate.models import Codes
from associate.sandbox.launcher import PLUGINS_DIR, SandboxProcess
from sandbox_support import OAUTH, SandboxClient, basic_header, element, new_mobile


@pytest.fixture
def sandbox(tmp_path):
    process = SandboxProcess(tmp_path / "sandbox.db")
    yield process
    process.stop()


def token_for(url: str) -> str:
    response = SandboxClient(url, {}).post("/v3/oauth/token/generate", {"key": OAUTH[0], "secret": OAUTH[1]})
    assert response.status_code == 200, response.text
    return response.json()["data"]["accessToken"]


def test_expired_token_is_401_and_a_new_token_works(tmp_path):
    # JWT times are whole seconds, so a token lives between ttl - 1 and ttl seconds: a ttl of 2
    # leaves a fresh token at least a second for its first use.
    with SandboxProcess(tmp_path / "s.db", token_ttl=2) as sandbox:
        old = SandboxClient(sandbox.url, {"X-CAP-API-OAUTH-TOKEN": token_for(sandbox.url)})
        assert old.get("/v2/fleetHierarchy/all").status_code == 200
        time.sleep(2.1)
        expired = old.get("/v2/fleetHierarchy/all")
        assert expired.status_code == 401 and "expired" in expired.json()["errors"][0]["message"].lower()
        fresh = SandboxClient(sandbox.url, {"X-CAP-API-OAUTH-TOKEN": token_for(sandbox.url)})
        assert fresh.get("/v2/fleetHierarchy/all").status_code == 200


def test_rate_limit_is_per_credential_with_retry_after(tmp_path):
    with SandboxProcess(tmp_path / "s.db", rate_limit_rpm=5,
                        credentials=(("store.server", "server123"), ("other.till", "pw2"))) as sandbox:
        client = SandboxClient(sandbox.url)
        statuses = [client.get("/v2/fleetHierarchy/all").status_code for _ in range(5)]
        assert statuses == [200] * 5
        limited = client.get("/v2/fleetHierarchy/all")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["errors"][0]["code"] == 429
        other = SandboxClient(sandbox.url, basic_header("other.till", "pw2"))
        assert other.get("/v2/fleetHierarchy/all").status_code == 200
        assert sandbox.stats()["rateLimited"] == 1


def test_batch_limit_flag(tmp_path):
    with SandboxProcess(tmp_path / "s.db", batch_limit=3) as sandbox:
        client = SandboxClient(sandbox.url)
        response = client.post("/v2/customers/bulk", [element() for _ in range(4)])
        assert response.status_code == 400 and response.json()["errors"][0]["code"] == Codes.BATCH_LIMIT_EXCEEDED
        assert len(client.bulk(*[element() for _ in range(3)])) == 3


@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_error_faults_store_nothing(sandbox, kind):
    sandbox.faults = f"{kind}=1.0"
    sandbox.start()
    client = SandboxClient(sandbox.url)
    response = client.post("/v2/customers/bulk", [element()])
    assert response.status_code == int(kind)
    assert "response" not in response.json()  # unlike "all requests failed"
    stats = sandbox.stats()
    assert stats["customers"] == 0 and stats["faults"] == {kind: 1}
    assert requests.get(sandbox.url + "/openapi.json", timeout=5).status_code == 200  # never faulted


def test_drop_closes_the_connection_without_an_answer(sandbox):
    sandbox.faults = "drop=1.0"
    sandbox.start()
    with pytest.raises(requests.ConnectionError):
        SandboxClient(sandbox.url).post("/v2/customers/bulk", [element()])
    stats = sandbox.stats()
    assert stats["customers"] == 0 and stats["faults"] == {"drop": 1}


def test_commit500_stores_the_work_and_a_resend_returns_the_same_id(sandbox):
    sandbox.faults = "commit500=1.0"
    sandbox.start()
    mobile = new_mobile()
    assert SandboxClient(sandbox.url).post("/v2/customers/bulk", [element(mobile)]).status_code == 500
    assert sandbox.stats()["customers"] == 1
    sandbox.restart(faults=None)
    client = SandboxClient(sandbox.url)
    stored_id = client.lookup("mobile", mobile)
    assert client.bulk(element(mobile))[0]["entity"]["id"] == stored_id
    assert sandbox.stats()["customers"] == 1


def test_slow_answer_commits_before_the_client_times_out(sandbox):
    sandbox.faults, sandbox.slow_ms = "slow=1.0", 1500
    sandbox.start()
    mobile = new_mobile()
    with pytest.raises(requests.Timeout):
        SandboxClient(sandbox.url).post("/v2/customers/bulk", [element(mobile)], timeout=0.5)
    assert sandbox.stats()["customers"] == 1
    sandbox.restart(faults=None)
    client = SandboxClient(sandbox.url)
    assert client.bulk(element(mobile))[0]["entity"]["id"] == client.lookup("mobile", mobile)
    assert sandbox.stats()["customers"] == 1


def test_fault_seed_makes_the_sequence_repeatable(sandbox):
    sandbox.faults, sandbox.fault_seed = "500=0.5", 42
    runs = []
    for _ in range(2):
        sandbox.restart() if sandbox.process else sandbox.start()
        client = SandboxClient(sandbox.url)
        runs.append([client.get("/v2/fleetHierarchy/all").status_code for _ in range(12)])
    assert runs[0] == runs[1] and set(runs[0]) == {200, 500}


def test_state_survives_restart_and_crash(sandbox):
    sandbox.start()
    client = SandboxClient(sandbox.url)
    mobile = new_mobile()
    customer_id = client.bulk(element(mobile))[0]["entity"]["id"]
    token = token_for(sandbox.url)
    url = sandbox.url
    sandbox.kill()
    sandbox.start()
    assert sandbox.url == url  # same port
    assert SandboxClient(sandbox.url).lookup("mobile", mobile) == customer_id
    sandbox.restart()
    assert SandboxClient(sandbox.url, {"X-CAP-API-OAUTH-TOKEN": token}).lookup("mobile", mobile) == customer_id
    assert SandboxClient(sandbox.url).bulk(element())[0]["entity"]["id"] == customer_id + 1


def test_command_line_prints_the_url_first_and_rejects_bad_faults(tmp_path):
    env = {"PYTHONPATH": str(PLUGINS_DIR)}
    bad = subprocess.run([sys.executable, "-m", "associate.sandbox", "--db", str(tmp_path / "s.db"),
                          "--faults", "418=0.5"], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "bad fault" in bad.stderr
    process = subprocess.Popen([sys.executable, "-m", "associate.sandbox", "--db", str(tmp_path / "s.db"),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        first = process.stdout.readline()
        assert first.startswith("associate.sandbox listening on http://127.0.0.1:")
        url = first.split()[-1]
        assert requests.get(url + "/__sandbox/stats", timeout=5).json()["hierarchies"] == 1
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_hierarchy_file_is_seeded_once_in_addition_to_the_default(tmp_path):
    definitions = [{"code": "dealer-network", "name": "Dealers", "skipRoleAllowed": True,
                    "roles": [{"code": "DEALER", "childRoleCode": "SHOP", "maxChild": 3}, {"code": "SHOP"}]}]
    hierarchy_file = tmp_path / "hierarchies.json"
    hierarchy_file.write_text(__import__("json").dumps(definitions))
    with SandboxProcess(tmp_path / "s.db", hierarchy_file=hierarchy_file) as sandbox:
        sandbox.restart()  # seeding again must not duplicate
        listed = SandboxClient(sandbox.url).get("/v2/fleetHierarchy/all").json()["entity"]
        assert sorted(h["code"] for h in listed) == ["code-association2", "dealer-network"]
        dealer = next(h for h in listed if h["code"] == "dealer-network")
        assert dealer["skipRoleAllowed"] is True and dealer["roles"][0]["maxChild"] == 3


def test_error_form_flag_is_checked_and_passed_by_the_launcher(tmp_path):
    env = {"PYTHONPATH": str(PLUGINS_DIR)}
    bad = subprocess.run([sys.executable, "-m", "associate.sandbox", "--db", str(tmp_path / "s.db"),
                          "--error-form", "418"], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "--error-form" in bad.stderr
    assert SandboxProcess(tmp_path / "s.db").command().count("--error-form") == 0  # documented by default
    with SandboxProcess(tmp_path / "s.db", error_form="404") as sandbox:
        assert sandbox.command()[-2:] == ["--error-form", "404"]
        missing = SandboxClient(sandbox.url).get("/v2/companies", params={"externalId": "nobody"})
        assert missing.status_code == 404 and missing.json()["errors"][0]["status"] is False
        sandbox.restart(error_form="200")
        missing = SandboxClient(sandbox.url).get("/v2/companies", params={"externalId": "nobody"})
        assert missing.status_code == 200 and missing.json()["errors"][0]["code"] != 200


def test_stats_measure_the_busiest_minute_and_each_endpoints_span():
    from associate.sandbox.stats import Stats

    stats = Stats()
    for offset in (0.0, 10.0, 59.0, 61.0, 62.0, 130.0):
        stats.times.append(1000.0 + offset)
    stats.request("POST /v3/oauth/token/generate", 200)  # outside the budget: no time kept
    stats.request("GET /__sandbox/stats", 200)
    stats.request("POST /v2/customers/bulk", 200)
    snapshot = stats.snapshot()
    # The requests at 10, 59, 61 and 62 s lie within one minute; 0 and 130 s do not.
    assert snapshot["busiestWindow"] == {"seconds": 60.0, "requests": 4, "start": 1010.0}
    assert set(snapshot["spans"]) == {"POST /v3/oauth/token/generate", "GET /__sandbox/stats", "POST /v2/customers/bulk"}
    span = snapshot["spans"]["POST /v2/customers/bulk"]
    assert span["first"] == span["last"] > 1000.0
