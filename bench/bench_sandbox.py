"""Benchmark of the sandbox itself: customer elements per second through ``POST /v2/customers/bulk``.

Starts a sandbox on a fresh database (faults, latency and rate limit off) and sends N
customers in batches of 100 from one or more client threads (pooled ``requests`` sessions):

1. ``register``: new customers, registration only (mobile + email + externalId);
2. ``associate``: FA parents with a fleet company, then FC children sent with ``parentCustomer``;
3. ``resend``: the ``register`` elements again (matching and update, no new customer).

    PYTHONPATH=plugins .venv/bin/python -m bench.bench_sandbox [--customers 20000] [--batch-size 100]
        [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from associate.sandbox.launcher import SandboxProcess  # noqa: E402

HEADERS = {
    "Authorization": "Basic " + base64.b64encode(
        ("store.server:" + hashlib.md5(b"server123").hexdigest()).encode()).decode(),
    "Content-Type": "application/json", "Accept": "application/json",
}


def registrations(n: int) -> list[dict]:
    """N new customers with three primary identifiers each."""
    return [{"profiles": [{"firstName": "Bench", "lastName": f"R{i}", "source": "INSTORE",
                           "identifiers": [{"type": "mobile", "value": f"91{i:010d}"},
                                           {"type": "email", "value": f"r{i}@bench.example"},
                                           {"type": "externalId", "value": f"R{i}"}]}],
             "loyaltyInfo": {"loyaltyType": "loyalty"}, "extendedFields": {"gender": "F"}} for i in range(n)]


def associations(n: int, company: str) -> tuple[list[dict], list[dict]]:
    """One FA per 50 customers, then FC children naming their FA as parentCustomer."""
    def element(mobile: str, role: str, parent: str | None) -> dict:
        details = {"hierarchyCode": "code-association2", "roleCode": role, "fleetCompany": {"externalId": company}}
        if parent:
            details["parentCustomer"] = {"profiles": [{"identifiers": [{"type": "mobile", "value": parent}]}]}
        return {"profiles": [{"firstName": "Bench", "identifiers": [{"type": "mobile", "value": mobile}]}],
                "loyaltyInfo": {"loyaltyType": "loyalty"}, "associationDetails": details}
    admins = [f"92{i:010d}" for i in range(max(1, n // 50))]
    parents = [element(m, "FA", None) for m in admins]
    children = [element(f"93{i:010d}", "FC", admins[i % len(admins)]) for i in range(n - len(admins))]
    return parents, children


def send(url: str, elements: list[dict], batch_size: int, threads: int) -> dict:
    """Post all elements in batches from ``threads`` threads; elements/s and failures."""
    batches = [elements[i:i + batch_size] for i in range(0, len(elements), batch_size)]
    failures, lock = [], threading.Lock()

    def worker(mine: list[list[dict]]) -> None:
        session = requests.Session()
        for batch in mine:
            response = session.post(url + "/v2/customers/bulk", data=json.dumps(batch), headers=HEADERS, timeout=60)
            bad = response.status_code != 200 or any(r["errors"] for r in response.json())
            if bad:
                with lock:
                    failures.append(response.text[:300])

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(batches[t::threads],)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"elements": len(elements), "requests": len(batches), "seconds": round(elapsed, 2),
            "elements_per_s": round(len(elements) / elapsed), "failed_batches": len(failures)}


def main(argv: list[str] | None = None) -> dict:
    """Run the three phases and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, SandboxProcess(Path(tmp) / "bench.db",
                                                              batch_limit=max(100, args.batch_size)) as sandbox:
        requests.post(sandbox.url + "/v2/companies", headers=HEADERS, timeout=10,
                      json={"name": "Bench fleet", "externalId": "BENCH", "hierarchyDefinitionCode": "code-association2"})
        register = registrations(args.customers)
        parents, children = associations(args.customers, "BENCH")
        results = {"register": send(sandbox.url, register, args.batch_size, args.threads)}
        first = send(sandbox.url, parents, args.batch_size, args.threads)
        second = send(sandbox.url, children, args.batch_size, args.threads)
        seconds = first["seconds"] + second["seconds"]
        results["associate"] = {"elements": first["elements"] + second["elements"],
                                "requests": first["requests"] + second["requests"], "seconds": round(seconds, 2),
                                "elements_per_s": round((first["elements"] + second["elements"]) / seconds),
                                "failed_batches": first["failed_batches"] + second["failed_batches"]}
        results["resend"] = send(sandbox.url, register, args.batch_size, args.threads)
        stats = sandbox.stats()
        results["stored"] = {k: stats[k] for k in ("customers", "associations")}
    if args.json:
        print(json.dumps(results))
    else:
        print(f"sandbox bulk throughput: {args.customers} customers, batches of {args.batch_size}, "
              f"{args.threads} client thread(s)")
        for phase in ("register", "associate", "resend"):
            r = results[phase]
            print(f"  {phase:<10} {r['elements']:>7} elements {r['requests']:>5} requests {r['seconds']:>7.2f} s "
                  f"{r['elements_per_s']:>7} elements/s  failed batches: {r['failed_batches']}")
        print(f"  stored: {results['stored']}")
    return results


if __name__ == "__main__":
    main()
