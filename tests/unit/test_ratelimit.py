"""The client-side limiter: even spacing under the budget, Retry-After pauses, one budget per credential."""

from __future__ import annotations

import logging
import threading

import pytest

from associate.capillary.budget import limiter_for, reset_registry
from associate.capillary.ratelimit import BudgetMode, RateLimiter, budget_mode
from associate.capillary.settings import ClientSettings
from associate.capillary.shared_budget import HostFileRateLimiter, RedisRateLimiter
from associate.capillary.transport import Transport
from associate.exceptions import ConfigurationError

HOST = BudgetMode("host", sharers=2, executor="LocalExecutor")
DIVIDED = BudgetMode("divided", sharers=2, executor="CeleryExecutor")


class FakeClock:
    """A clock that only moves when the limiter sleeps (no real waiting, no timing in tests)."""

    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_requests_are_spaced_so_no_minute_exceeds_the_budget():
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=lambda s: None)
    starts = []
    for _ in range(500):
        wait = limiter.reserve()
        starts.append(clock.now + wait)
    # In every sliding 60 s window the number of requests stays within the budget.
    worst = max(sum(1 for t in starts if s <= t < s + 60) for s in starts)
    assert worst <= 100
    # ... while the budget is still used: at least 95 of the 100 requests a minute.
    assert (len(starts) - 1) / ((starts[-1] - starts[0]) / 60) >= 95


def test_an_idle_spell_builds_no_burst():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock, sleep=lambda s: None)
    limiter.reserve()
    clock.now += 600  # ten idle minutes
    waits = [limiter.reserve() for _ in range(3)]
    assert waits[0] == 0
    assert waits[1] > 0.9 and waits[2] > waits[1]


def test_pause_holds_every_caller_back_until_retry_after():
    clock = FakeClock()
    limiter = RateLimiter(6000, clock=clock, sleep=lambda s: None)
    limiter.reserve()
    limiter.pause(7.5)
    assert limiter.reserve() >= 7.5
    assert limiter.reserve() > 7.5


def test_threads_never_get_the_same_slot():
    clock = FakeClock()
    limiter = RateLimiter(600, clock=clock, sleep=lambda s: None)
    slots: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(50):
            wait = limiter.reserve()
            with lock:
                slots.append(round(clock.now + wait, 9))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert len(slots) == 200 and min(gaps) >= limiter.interval - 1e-6


@pytest.mark.parametrize("mode", [HOST, DIVIDED], ids=["host", "divided"])
def test_one_limiter_per_host_and_credential(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    reset_registry()
    a = limiter_for("https://eu.api.capillarytech.com", "basic:till", 100, mode)
    assert limiter_for("https://eu.api.capillarytech.com", "basic:till", 100, mode) is a
    assert limiter_for("https://eu.api.capillarytech.com", "oauth:key", 100, mode) is not a
    assert limiter_for("https://us.api.capillarytech.com", "basic:till", 100, mode) is not a
    # An edited connection's budget replaces the old one.
    assert limiter_for("https://eu.api.capillarytech.com", "basic:till", 50, mode).budget_rpm == 50
    reset_registry()


@pytest.mark.parametrize("rpm", [0, -5])
def test_a_budget_must_be_positive(rpm):
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rpm)


# -- which mode a deployment gets ------------------------------------------------------------------


@pytest.fixture
def no_budget_settings(monkeypatch):
    """Neither [associate] rate-limit setting is configured."""
    for name in ("RATE_LIMIT_REDIS_CONN_ID", "RATE_LIMIT_SHARERS"):
        monkeypatch.delenv(f"AIRFLOW__ASSOCIATE__{name}", raising=False)
        monkeypatch.delenv(f"ASSOCIATE_{name}", raising=False)
    return monkeypatch


@pytest.mark.parametrize("executor, mode", [
    ("LocalExecutor", "host"),
    ("airflow.executors.local_executor.LocalExecutor", "host"),
    ("CeleryExecutor", "divided"),
    ("KubernetesExecutor", "divided"),
    ("LocalExecutor,CeleryExecutor", "divided"),
    ("my_company.executors.FancyExecutor", "divided"),
])
def test_without_redis_one_host_executors_share_a_file_and_others_divide(no_budget_settings, executor, mode):
    no_budget_settings.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    assert budget_mode().name == mode


def test_a_redis_connection_shares_the_budget_whatever_the_executor(no_budget_settings):
    no_budget_settings.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    no_budget_settings.setenv("AIRFLOW__ASSOCIATE__RATE_LIMIT_REDIS_CONN_ID", "redis_default")
    assert budget_mode() == BudgetMode("redis", redis_conn_id="redis_default", sharers=2, executor="CeleryExecutor")


@pytest.mark.parametrize("sharers, share", [(None, 30), ("3", 20), ("1", 60)])
def test_divided_mode_gives_each_process_its_share(no_budget_settings, sharers, share):
    no_budget_settings.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    if sharers:
        no_budget_settings.setenv("ASSOCIATE_RATE_LIMIT_SHARERS", sharers)
    limiter = limiter_for("https://eu.api.capillarytech.com", "basic:till", 60)
    assert limiter.rpm == share and limiter.budget_rpm == 60
    assert f"uses {share} of 60 requests/min for basic:till" in limiter.describe()
    assert "rate_limit_redis_conn_id" in limiter.describe()
    reset_registry()


@pytest.mark.parametrize("sharers", ["0", "two"])
def test_a_malformed_sharers_setting_names_itself(no_budget_settings, sharers):
    no_budget_settings.setenv("AIRFLOW__ASSOCIATE__RATE_LIMIT_SHARERS", sharers)
    with pytest.raises(ConfigurationError, match="rate_limit_sharers"):
        budget_mode()


# -- the host file: several processes, one queue -----------------------------------------------------


def host_limiters(path, clock, count=2, rpm=60):
    """``count`` limiters on one file, each with its own descriptor, as separate processes have."""
    return [HostFileRateLimiter(rpm, "basic:till", HOST, path, clock=clock, sleep=clock.sleep)
            for _ in range(count)]


def test_processes_sharing_the_host_file_get_evenly_spaced_slots(tmp_path):
    clock = FakeClock()
    limiters = host_limiters(tmp_path / "budget.gcra", clock, count=3, rpm=120)
    starts = [clock.now + limiters[i % 3].reserve() for i in range(360)]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) == pytest.approx(60 / (120 * 0.98))
    # The three together, not each of them, stay within 120 in every 60 s.
    assert max(sum(1 for t in starts if s <= t < s + 60) for s in starts) <= 120


def test_the_host_file_builds_no_burst_after_an_idle_spell(tmp_path):
    clock = FakeClock()
    first, second = host_limiters(tmp_path / "budget.gcra", clock)
    first.reserve()
    clock.now += 600
    assert second.reserve() == 0
    assert first.reserve() == pytest.approx(60 / (60 * 0.98))


def test_a_retry_after_pause_in_one_process_holds_the_other(tmp_path):
    clock = FakeClock()
    throttled, other = host_limiters(tmp_path / "budget.gcra", clock, rpm=6000)
    throttled.reserve()
    throttled.pause(7.5)
    assert other.reserve() >= 7.5


def test_a_wall_clock_stepped_back_does_not_stall_the_host(tmp_path):
    clock = FakeClock()
    first, second = host_limiters(tmp_path / "budget.gcra", clock)
    first.reserve()
    clock.now -= 7200  # NTP stepped the clock back two hours
    assert second.reserve() == 0


def test_an_unwritable_host_file_falls_back_to_the_divided_share(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    limiter = HostFileRateLimiter(60, "basic:till", HOST, blocker / "budget.gcra", sleep=lambda s: None)
    with caplog.at_level(logging.WARNING):
        limiter.reserve()
        assert limiter.reserve() > 1.9  # 30 a minute, not 60
    assert "uses 30 of 60 requests/min for basic:till" in caplog.text


def test_a_redis_outage_falls_back_to_the_divided_share_and_never_raises(caplog):
    import redis

    def unreachable():
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    mode = BudgetMode("redis", redis_conn_id="redis_default", sharers=3)
    limiter = RedisRateLimiter(60, "basic:till", mode, "associate:ratelimit:test", unreachable, sleep=lambda s: None)
    with caplog.at_level(logging.WARNING):
        assert limiter.reserve() == 0
        limiter.pause(5)
        assert limiter.reserve() > 4.5  # the fallback holds back too (real clock)
    assert limiter.store_errors == 1  # not retried on every request
    assert "ConnectionError" in caplog.text and "uses 20 of 60 requests/min" in caplog.text


# -- the task log says which budget applies ----------------------------------------------------------


def test_a_transport_logs_its_budget_once_without_secrets(no_budget_settings, tmp_path, caplog):
    no_budget_settings.setenv("AIRFLOW_HOME", str(tmp_path))
    no_budget_settings.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    settings = ClientSettings(base_url="https://eu.api.capillarytech.com", login="till", password="s3cret-pass",
                              rate_limit_rpm=60)
    transport = Transport(settings)
    with caplog.at_level(logging.INFO, logger="associate.capillary.transport"):
        for _ in range(3):
            transport.limiter
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Rate budget")]
    assert len(lines) == 1
    assert "60 requests/min for basic:till shared by the processes of this host" in lines[0]
    assert "s3cret" not in caplog.text
    reset_registry()
