"""One rate budget per Capillary key across OS processes and workers: through Redis, and on one host by file.

Four task processes send with one credential to a sandbox that answers 429 past the budget
(a sliding 60 s window). Alone, each would send the whole budget: together four times it,
and the sandbox would start answering 429 after 15 s. Shared, they never get a 429 and the
slots they are given stay within the budget in every window.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from associate.capillary.budget import limiter_for, reset_registry
from associate.capillary.shared_budget import REDIS_KEY_PREFIX, budget_key
from associate.sandbox.launcher import SandboxProcess
from bench.bench_ratelimit import ROOT, mode_environment, most_in_window, run_tasks
from tests.sandbox_support import TILL

RPM = 600
# Four unshared tasks would send 800 requests in this time: 429s from the 15th second on.
SECONDS = 20
REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB = 12
CREDENTIAL = f"basic:{TILL[0]}"


@pytest.fixture
def redis_keys():
    """Redis db 12; deletes the budget keys the test names (and only those) afterwards."""
    client = redis.Redis.from_url(REDIS_URL, db=REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment failure
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    keys: list[str] = []
    yield keys
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("mode, workers, shared_by", [
    ("redis", 2, "shared through Redis"),
    ("host", 1, "shared by the processes of this host"),
])
def test_four_task_processes_together_stay_within_one_budget(mode, workers, shared_by, tmp_path, redis_keys):
    homes = [str(tmp_path / f"worker{w}") for w in range(workers)]
    with SandboxProcess(tmp_path / "sandbox.db", rate_limit_rpm=RPM, credentials=(TILL,)) as sandbox:
        redis_keys.append(REDIS_KEY_PREFIX + budget_key(sandbox.url, CREDENTIAL))
        reports = run_tasks(sandbox.url, RPM, mode, 4, workers, seconds=SECONDS, homes=homes,
                            redis_url=REDIS_URL, redis_db=REDIS_DB)
        stats = sandbox.stats()
    assert all(shared_by in report["mode"] and f"{RPM} requests/min for {CREDENTIAL}" in report["mode"]
               for report in reports)
    assert stats["rateLimited"] == 0
    assert all(report["statuses"] == {"404": len(report["sent"])} for report in reports)
    # The slots the four were given: never more than the budget's share of any 10 s.
    slots = [t for report in reports for t in report["slots"]]
    assert most_in_window(slots, 10.0) <= RPM / 6
    # Each had its turns: one queue, not one process starving the others.
    assert min(len(report["sent"]) for report in reports) >= len(slots) / 4 * 0.5


RESERVE = """
from associate.capillary.budget import limiter_for
print(limiter_for({url!r}, {credential!r}, {rpm}).reserve())
"""


@pytest.mark.parametrize("mode, workers", [("redis", 2), ("host", 1)])
def test_a_retry_after_pause_in_one_process_holds_the_others(mode, workers, tmp_path, redis_keys, monkeypatch):
    # No server is called: the limiter's state is keyed by the URL, unique to this test.
    url = f"http://127.0.0.1:9/{tmp_path.name}"
    redis_keys.append(REDIS_KEY_PREFIX + budget_key(url, CREDENTIAL))
    homes = [str(tmp_path / f"worker{w}") for w in range(workers)]
    # This process is the one a 429 reached, configured as a task of the first worker is ...
    for name, value in mode_environment(mode, homes[0], REDIS_URL, REDIS_DB).items():
        monkeypatch.setenv(name, value)
    reset_registry()
    throttled = limiter_for(url, CREDENTIAL, RPM)
    assert throttled.mode == mode
    throttled.pause(120)  # what the transport does with a 429's Retry-After
    # ... and another process (on the other worker, for Redis) waits out what is left of the pause.
    env = mode_environment(mode, homes[-1], REDIS_URL, REDIS_DB)
    code = RESERVE.format(url=url, credential=CREDENTIAL, rpm=RPM)
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert other.returncode == 0, other.stderr.decode()[-2000:]
    assert float(other.stdout.decode().strip().splitlines()[-1]) > 60
    reset_registry()
