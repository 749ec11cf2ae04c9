"""Benchmark of the shared rate budget: cost per request, and the rate several tasks sustain together.

(a) Cost per acquire, in one process, at a budget too high to ever wait: the in-process
    GCRA (``RateLimiter``), the host file (``HostFileRateLimiter``), the Redis Lua GCRA
    (``RedisRateLimiter``), and the libraries evaluated for the Redis store:
    pyrate-limiter's GCRA on ``RedisStateStore`` and limits' moving window on Redis.
(b) Sustained rate against the budget: a sandbox started with ``--rate-limit-rpm RPM``
    (its sliding 60 s window per credential answers 429 past the budget), and 1, 2 or 4
    "tasks" sending with one credential for ``--seconds`` each. A task is an OS process
    (as an Airflow task is); a "worker" is a group of tasks with its own ``AIRFLOW_HOME``,
    i.e. its own host as far as the host file is concerned. Modes:

    - ``redis``: ``[associate] rate_limit_redis_conn_id`` set (Redis db ``--redis-db``);
    - ``host``: LocalExecutor, the file under the worker's ``AIRFLOW_HOME``;
    - ``divided``: CeleryExecutor without Redis, ``rate_limit_sharers`` = 2;
    - ``per-process``: the limiter before session 20, one full budget per process;
    - ``pyrate-limiter``: the evaluated library's GCRA (burst 1) on ``RedisStateStore``.

    Every task sends ``GET /v2/customers/lookup`` when its limiter gives it a slot; after a
    429 it pauses its limiter for ``Retry-After`` as the transport does. The sustained
    rate is (requests - 1) / (last - first) over all tasks together.

    PYTHONPATH=plugins python -m bench.bench_ratelimit [--rpm 600] [--seconds 20] [--acquires 3000]
        [--redis-url redis://127.0.0.1:6379] [--redis-db 12] [--skip-rate] [--skip-cost]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))

REDIS_CONN_ID = "bench_ratelimit_redis"
CREDENTIAL = ("store.server", "server123")
# Sent by every task: a lookup of a number nobody has (a cheap 404 on the sandbox).
LOOKUP = "/v2/customers/lookup?source=INSTORE&identifierName=mobile&identifierValue=919999999999"
MODES = ("redis", "host", "divided", "pyrate-limiter", "per-process")


# -- one task -----------------------------------------------------------------------------------------


def mode_environment(mode: str, airflow_home: str, redis_url: str, redis_db: int) -> dict[str, str]:
    """The environment of a task process that makes ``budget_mode()`` choose ``mode``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__ASSOCIATE__RATE_LIMIT",
                                                                    "ASSOCIATE_RATE_LIMIT"))}
    env.update(AIRFLOW_HOME=airflow_home, PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__EXECUTOR="LocalExecutor")
    if mode == "redis":
        env["AIRFLOW__CORE__EXECUTOR"] = "CeleryExecutor"
        env["AIRFLOW__ASSOCIATE__RATE_LIMIT_REDIS_CONN_ID"] = REDIS_CONN_ID
        env[f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}"] = f"{redis_url}?db={redis_db}"
    elif mode == "divided":
        env["AIRFLOW__CORE__EXECUTOR"] = "CeleryExecutor"
        env["AIRFLOW__ASSOCIATE__RATE_LIMIT_SHARERS"] = "2"
    elif mode == "pyrate-limiter":
        env["BENCH_REDIS_URL"] = f"{redis_url}/{redis_db}"
    return env


def run_task(url: str, rpm: float, mode: str) -> dict:
    """Say ready, read ``start_at stop_at`` from stdin, send lookups until the next slot falls after stop_at."""
    import requests

    from associate.capillary.budget import limiter_for
    from associate.capillary.ratelimit import RateLimiter
    from associate.capillary.transport import retry_after

    from tests.sandbox_support import basic_header

    if mode == "per-process":
        limiter = RateLimiter(rpm)
    elif mode == "pyrate-limiter":
        limiter = PyrateLimiter(url, rpm)
    else:
        limiter = limiter_for(url, f"basic:{CREDENTIAL[0]}", rpm)
    session = requests.Session()
    session.headers.update(basic_header(*CREDENTIAL))
    session.get(url + "/__sandbox/stats", timeout=10)  # connect before the clock starts
    print("ready", flush=True)
    start_at, stop_at = (float(v) for v in sys.stdin.readline().split())
    time.sleep(max(0.0, start_at - time.time()))
    slots, sent, statuses = [], [], {}
    while True:
        wait = limiter.reserve()
        slot = time.time() + wait
        if slot > stop_at:
            break
        slots.append(slot)
        if wait > 0:
            time.sleep(wait)
        sent.append(time.time())
        response = session.get(url + LOOKUP, timeout=30)
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        if response.status_code == 429:
            limiter.pause(retry_after(response) or 60.0)
        response.close()
    return {"mode": limiter.describe(), "slots": slots, "sent": sent, "statuses": statuses}


class PyrateLimiter:
    """pyrate-limiter's GCRA (burst 1) in the same Redis, behind this bench's limiter calls (evaluation)."""

    def __init__(self, url: str, rpm: float):
        import redis
        from pyrate_limiter import GCRA, Limiter, Rate, RedisStateStore, StateBucket

        from associate.capillary.ratelimit import DEFAULT_HEADROOM
        from associate.capillary.shared_budget import budget_key

        client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        # A whole minute's requests with burst 1: spaced 60 / rpm apart, as the Lua GCRA does.
        rate = Rate(int(rpm * DEFAULT_HEADROOM), 60_000, burst=1)
        store = RedisStateStore(client, "associate:bench:pyrate:" + budget_key(url, "bench"))
        self.limiter = Limiter(StateBucket([rate], GCRA(), store))

    def reserve(self) -> float:
        """Block in pyrate-limiter's own polling loop; report no further wait."""
        self.limiter.try_acquire("bench", blocking=True)
        return 0.0

    def pause(self, seconds: float) -> None:
        """pyrate-limiter has no shared pause: only this process sleeps."""
        time.sleep(seconds)

    def describe(self) -> str:
        return "pyrate-limiter GCRA (burst 1) on RedisStateStore"


def start_tasks(url: str, rpm: float, mode: str, tasks: int, workers: int, *, seconds: float, homes: list[str],
                redis_url: str = "redis://127.0.0.1:6379", redis_db: int = 12) -> list[subprocess.Popen]:
    """Start ``tasks`` task processes spread over ``workers`` (one ``AIRFLOW_HOME`` each), sending together."""
    processes = []
    for i in range(tasks):
        env = mode_environment(mode, homes[i % workers], redis_url, redis_db)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "bench.bench_ratelimit", "--task", url, str(rpm), mode],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    # Every task has imported Airflow and made its limiter: start them at the same moment.
    for process in processes:
        if process.stdout.readline().strip() != b"ready":
            for other in processes:
                other.kill()
            raise RuntimeError("a task process failed before it was ready")
    start_at = time.time() + 0.5
    for process in processes:
        process.stdin.write(f"{start_at} {start_at + seconds}\n".encode())
        process.stdin.close()
    return processes


def collect(processes: list[subprocess.Popen]) -> list[dict]:
    """Wait for the task processes; their reports."""
    reports = []
    for process in processes:
        out = process.stdout.read()
        process.wait(timeout=300)
        if process.returncode != 0:
            raise RuntimeError(f"task process exited with {process.returncode}")
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


def run_tasks(url: str, rpm: float, mode: str, tasks: int, workers: int, *, seconds: float, homes: list[str],
              **kwargs) -> list[dict]:
    """Run ``tasks`` task processes over ``workers`` worker homes; their reports."""
    return collect(start_tasks(url, rpm, mode, tasks, workers, seconds=seconds, homes=homes, **kwargs))


def most_in_window(times: list[float], window: float) -> int:
    """The largest number of ``times`` within any ``window`` seconds."""
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def sustained_rpm(times: list[float]) -> float | None:
    """Requests per minute between the first and the last request."""
    times = sorted(times)
    if len(times) < 2 or times[-1] == times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0]) * 60


# -- (a) cost per acquire -----------------------------------------------------------------------------


def cost_per_acquire(n: int, redis_url: str, redis_db: int) -> list[tuple[str, float]]:
    """Microseconds per acquire of each limiter (one process, never waiting)."""
    import redis

    from associate.capillary.ratelimit import BudgetMode, RateLimiter
    from associate.capillary.shared_budget import HostFileRateLimiter, RedisRateLimiter

    huge = 1e12  # requests/min: the limiter never waits, so only its own cost is measured
    client = redis.Redis.from_url(redis_url, db=redis_db)
    prefix = f"associate:bench:{os.getpid()}:"
    results = []

    def timed(name, acquire):
        acquire()  # warm up: connect, load scripts
        began = time.perf_counter()
        for _ in range(n):
            acquire()
        results.append((name, (time.perf_counter() - began) / n * 1e6))

    timed("per process (`RateLimiter`, in memory)", RateLimiter(huge).acquire)
    with tempfile.TemporaryDirectory() as folder:
        host = HostFileRateLimiter(huge, "basic:bench", BudgetMode("host"), Path(folder) / "b.gcra")
        timed("host (`HostFileRateLimiter`, flock'ed file)", host.acquire)
    shared = RedisRateLimiter(huge, "basic:bench", BudgetMode("redis", redis_conn_id="-"), prefix + "lua",
                              lambda: client)
    timed("redis (`RedisRateLimiter`, Lua GCRA, chosen)", shared.acquire)
    try:
        from pyrate_limiter import GCRA, Limiter, Rate, RedisStateStore, StateBucket

        store = RedisStateStore(client, prefix + "pyrate")
        bucket = StateBucket([Rate(10 ** 9, 1000)], GCRA(), store)
        limiter = Limiter(bucket)
        timed("redis via pyrate-limiter 4.5 (GCRA, `RedisStateStore`)",
              lambda: limiter.try_acquire("bench", blocking=False))
    except Exception as exc:  # noqa: BLE001 - an evaluated library's API differs: say so in the table
        results.append((f"pyrate-limiter: not measured ({type(exc).__name__}: {exc})", float("nan")))
    try:
        from limits import RateLimitItemPerSecond
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        item = RateLimitItemPerSecond(10 ** 9)
        moving = MovingWindowRateLimiter(RedisStorage(f"{redis_url}/{redis_db}"))
        timed("redis via limits 5.8 (moving window)", lambda: moving.hit(item, prefix + "limits"))
    except ImportError as exc:
        results.append((f"limits: not installed ({exc})", float("nan")))
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    for key in client.scan_iter("LIMITS:" + prefix + "*"):
        client.delete(key)
    return results


# -- (b) sustained rate -------------------------------------------------------------------------------


def rate_runs(args) -> list[dict]:
    """Run every (mode, tasks, workers) combination against a fresh sandbox; one row each."""
    from associate.sandbox.launcher import SandboxProcess

    combos = [("redis", t, w) for t, w in ((1, 1), (2, 1), (4, 1), (2, 2), (4, 2))]
    combos += [("host", t, 1) for t in (2, 4)]
    combos += [("divided", 1, 1), ("divided", 2, 2)]
    combos += [("pyrate-limiter", 4, 2)]
    # Two unshared tasks reach 429s only after 30 s; four after 15 s.
    combos += [("per-process", 4, 1)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as folder:
        for n, (mode, tasks, workers) in enumerate(combos):
            homes = [str(Path(folder) / f"run{n}-worker{w}") for w in range(workers)]
            with SandboxProcess(Path(folder) / f"run{n}.db", rate_limit_rpm=int(args.rpm),
                                credentials=(CREDENTIAL,)) as sandbox:
                reports = run_tasks(sandbox.url, args.rpm, mode, tasks, workers, seconds=args.seconds, homes=homes,
                                    redis_url=args.redis_url, redis_db=args.redis_db)
                stats = sandbox.stats()
            sent = [t for r in reports for t in r["sent"]]
            rate = sustained_rpm(sent)
            rows.append({
                "mode": mode, "tasks": tasks, "workers": workers, "requests": len(sent),
                "rpm": rate, "of_budget": rate / args.rpm if rate else None,
                "most_in_10s": most_in_window(sent, 10.0), "rejected": stats["rateLimited"],
                "log": reports[0]["mode"],
            })
            row = rows[-1]
            print(f"  {mode:11} tasks={tasks} workers={workers}: {row['requests']} requests, "
                  f"{row['rpm'] or 0:.0f}/min, 429s={row['rejected']}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", nargs=3, metavar=("URL", "RPM", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--rpm", type=float, default=600.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--acquires", type=int, default=3000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args(argv)
    if args.task:
        url, rpm, mode = args.task
        print(json.dumps(run_task(url, float(rpm), mode)))
        return
    if not args.skip_cost:
        print(f"\n(a) Cost per acquire ({args.acquires} acquires, one process, never waiting)\n")
        print("| Limiter | µs per acquire |\n|---|---:|")
        for name, micros in cost_per_acquire(args.acquires, args.redis_url, args.redis_db):
            print(f"| {name} | {micros:.0f} |")
    if not args.skip_rate:
        print(f"\n(b) Sustained rate, budget {args.rpm:g}/min, {args.seconds:g} s per run\n", flush=True)
        rows = rate_runs(args)
        print("| Mode | Tasks | Workers | Requests | Sustained /min | Of budget | Most in 10 s | 429s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['mode']} | {row['tasks']} | {row['workers']} | {row['requests']} | "
                  f"{row['rpm'] or 0:.0f} | {(row['of_budget'] or 0) * 100:.0f} % | {row['most_in_10s']} | "
                  f"{row['rejected']} |")
        print("\nLogged by the first task of each mode:")
        for mode in MODES:
            line = next((r["log"] for r in rows if r["mode"] == mode), None)
            if line:
                print(f"- {mode}: {line}")


if __name__ == "__main__":
    main()
