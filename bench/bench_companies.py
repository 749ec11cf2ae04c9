"""Benchmark of ``ensure_companies``: requests against the fewest the API allows, and wall time.

Starts a sandbox on a fresh database with a rate limit and a latency, then ensures N fleet
companies (a quarter holding companies, the rest their subsidiaries, one in ten of those
with a subsidiary of its own: several depths) through ``CapillaryClient.ensure_companies``
with the client's budget set to the sandbox's:

1. ``first sync``: every company new (the sync state knows none): the fewest is one POST each;
2. ``change run``: ``--changed`` of them renamed, the state knowing them all: one PUT each;
3. ``state lost`` (``--state-lost``): every company again, the state knowing none and none
   changed: POST ``1702`` and a GET each (two requests a company: what settling costs).

Requests are counted by the client (retries included); 429s by the sandbox.

    PYTHONPATH=plugins .venv/bin/python -m bench.bench_companies [--companies 41] [--rate-limit-rpm 240]
        [--latency-ms 40] [--concurrency 2] [--changed 3] [--state-lost] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from associate.capillary.client import CapillaryClient  # noqa: E402
from associate.capillary.budget import reset_registry  # noqa: E402
from associate.capillary.settings import ClientSettings  # noqa: E402
from associate.capillary.transport import Transport  # noqa: E402
from associate.sandbox.launcher import SandboxProcess  # noqa: E402

HIERARCHY = "code-association2"


def fleet(n: int, tag: str) -> list[dict]:
    """N company requests: a quarter holding companies, the rest subsidiaries (some two levels down)."""
    holdings = max(1, n // 4)
    companies = []
    for i in range(n):
        body = {"name": f"Company {i}", "externalId": f"{tag}-{i}", "hierarchyDefinitionCode": HIERARCHY,
                "extendedFields": {"region": ("north", "south", "east", "west")[i % 4]}}
        if i >= holdings:
            # One subsidiary in ten hangs under an earlier subsidiary: a third depth.
            parent = i - holdings if i % 10 == 0 and i - holdings >= holdings else i % holdings
            body["parentCompany"] = {"externalId": f"{tag}-{parent}"}
        companies.append(body)
    return companies


class Counted:
    """Company requests put on the wire by method (retries included), for the whole process."""

    def __init__(self):
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        send = Transport.send

        def counting_send(transport, method, path, **kwargs):
            answer = send(transport, method, path, **kwargs)
            with self._lock:
                self.counts[method] += answer.attempts
            return answer

        Transport.send = counting_send

    def take(self) -> dict[str, int]:
        """Return the counts since the last take, and start again."""
        with self._lock:
            counts, self.counts = dict(self.counts), Counter()
        return {m: counts.get(m, 0) for m in ("POST", "PUT", "GET")}


def phase(name: str, client: CapillaryClient, sandbox: SandboxProcess, counted: Counted, requests: list[dict],
          known_ids: dict[str, int], fewest: int) -> tuple[dict, list]:
    """Ensure the requests once; return the phase's figures and the outcomes."""
    throttled_before = sandbox.stats()["rateLimited"]
    started = time.monotonic()
    outcomes = client.ensure_companies(requests, known_ids=known_ids)
    seconds = time.monotonic() - started
    calls = counted.take()
    total = sum(calls.values())
    return {
        "phase": name, "companies": len(requests), "requests": total, "fewest": fewest,
        "ratio": round(total / fewest, 2) if fewest else None, **calls,
        "http_429": sandbox.stats()["rateLimited"] - throttled_before, "seconds": round(seconds, 2),
        # Requests against what the budget allows in the phase's wall time (1.0: every slot used).
        "budget_share": round(total * 60 / (seconds * client.settings.rate_limit_rpm), 3) if seconds else None,
        "actions": dict(Counter(o.action for o in outcomes)),
    }, outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=41)
    parser.add_argument("--rate-limit-rpm", type=int, default=240, help="the sandbox's budget and the client's")
    parser.add_argument("--latency-ms", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=2, help="client threads (the connection's default: 2)")
    parser.add_argument("--changed", type=int, default=3, help="companies renamed in the change run")
    parser.add_argument("--state-lost", action="store_true", help="also run every company with no sync state")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    counted = Counted()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SandboxProcess(
            str(Path(tmp) / "sandbox.db"), rate_limit_rpm=args.rate_limit_rpm, latency_ms=args.latency_ms) as sandbox:
        reset_registry()
        settings = ClientSettings(base_url=sandbox.url, login="store.server", password="server123",
                                  rate_limit_rpm=args.rate_limit_rpm, concurrency=args.concurrency)
        requests = fleet(args.companies, f"B{int(time.time())}")
        with CapillaryClient(settings) as client:
            row, outcomes = phase("first sync", client, sandbox, counted, requests, {}, len(requests))
            rows.append(row)
            known = {o.external_id: o.company_id for o in outcomes if o.company_id is not None}
            step = max(1, len(requests) // max(1, args.changed))
            changed = [dict(r, name=r["name"] + " renamed") for r in requests[::step][:args.changed]]
            row, _ = phase("change run", client, sandbox, counted, changed, known, len(changed))
            rows.append(row)
            if args.state_lost:
                row, _ = phase("state lost", client, sandbox, counted, requests, {}, len(requests))
                rows.append(row)

    settings_line = (f"{args.companies} companies, sandbox {args.rate_limit_rpm} rpm / {args.latency_ms} ms, "
                     f"concurrency {args.concurrency}")
    if args.json:
        print(json.dumps({"settings": settings_line, "phases": rows}, indent=2))
        return 0
    print(settings_line)
    print(f"{'phase':<12} {'companies':>9} {'requests':>8} {'fewest':>6} {'ratio':>5} {'POST':>5} {'PUT':>5} "
          f"{'GET':>5} {'429':>4} {'seconds':>8} {'budget':>6}  actions")
    for r in rows:
        print(f"{r['phase']:<12} {r['companies']:>9} {r['requests']:>8} {r['fewest']:>6} {r['ratio']:>5} "
              f"{r['POST']:>5} {r['PUT']:>5} {r['GET']:>5} {r['http_429']:>4} {r['seconds']:>8} "
              f"{r['budget_share']:>6.0%}  {r['actions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
