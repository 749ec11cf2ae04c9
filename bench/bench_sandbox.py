"""Benchmark of the sandbox itself: customer elements per second through ``POST /v2/customers/bulk``.

Starts a sandbox on a fresh database (faults, latency and rate limit off) and sends N
customers in batches of 100 from one or more client threads (pooled ``requests`` sessions):

1. ``register``: new customers, registration only (mobile + email + externalId);
2. ``associate``: FA parents with a fleet company, then FC children sent with ``parentCustomer``;
3. ``resend``: the ``register`` elements again (matching and update, no new customer);
4. ``warehouse``: a generated warehouse (``bench.generate``, its fleet companies created first)
   as the DAG sends it: ``associate.payload`` elements (full profiles, channels, enrolments,
   fleet company and ``parentCustomer``), parents before children.

Each phase gives wall milliseconds per request and the sandbox process's CPU milliseconds per
request (user + sys from /proc, so other load on the machine does not count).

    PYTHONPATH=plugins .venv/bin/python -m bench.bench_sandbox [--customers 20000] [--batch-size 100]
        [--threads 1] [--phases register,associate,resend,warehouse] [--json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
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


def warehouse_elements(n: int) -> tuple[list[dict], list[dict]]:
    """The companies and the elements (parents first) the DAG sends for a generated warehouse of n customers."""
    from associate.payload import build_elements
    from bench.generate import generate_warehouse

    companies, customers = generate_warehouse(n, bad_ratio=0.0)
    elements = build_elements(customers, companies).sort_values("depth", kind="stable")
    bodies = [{"name": name, "externalId": ext, "hierarchyDefinitionCode": code}
              for ext, name, code in companies[["company_external_id", "company_name", "hierarchy_code"]]
              .itertuples(index=False)]
    return bodies, [json.loads(p) for p in elements["payload"]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(url: str, elements: list[dict], batch_size: int, threads: int, pid: int | None = None) -> dict:
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

    cpu_before = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(batches[t::threads],)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    return {"elements": len(elements), "requests": len(batches), "seconds": round(elapsed, 2),
            "server_cpu_seconds": round(cpu, 2), "elements_per_s": round(len(elements) / elapsed),
            "failed_batches": len(failures)}


def combined(*parts: dict) -> dict:
    """The figures of phases sent one after the other, as one phase."""
    total = {k: sum(p[k] for p in parts) for k in ("elements", "requests", "seconds", "server_cpu_seconds",
                                                   "failed_batches")}
    total["seconds"] = round(total["seconds"], 2)
    total["server_cpu_seconds"] = round(total["server_cpu_seconds"], 2)
    total["elements_per_s"] = round(total["elements"] / total["seconds"]) if total["seconds"] else 0
    return total


PHASES = ("register", "associate", "resend", "warehouse")


def main(argv: list[str] | None = None) -> dict:
    """Run the phases and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated, of " + ", ".join(PHASES))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if "resend" in phases and "register" not in phases:
        parser.error("resend needs register")
    n, size, threads = args.customers, args.batch_size, args.threads
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if set(phases) & {"register", "associate", "resend"}:
            with SandboxProcess(Path(tmp) / "bench.db", batch_limit=max(100, size)) as sandbox:
                pid = sandbox.process.pid
                requests.post(sandbox.url + "/v2/companies", headers=HEADERS, timeout=10,
                              json={"name": "Bench fleet", "externalId": "BENCH",
                                    "hierarchyDefinitionCode": "code-association2"})
                register = registrations(n)
                if "register" in phases:
                    results["register"] = send(sandbox.url, register, size, threads, pid)
                if "associate" in phases:
                    parents, children = associations(n, "BENCH")
                    results["associate"] = combined(send(sandbox.url, parents, size, threads, pid),
                                                    send(sandbox.url, children, size, threads, pid))
                if "resend" in phases:
                    results["resend"] = send(sandbox.url, register, size, threads, pid)
                stats = sandbox.stats()
                results["stored"] = {k: stats[k] for k in ("customers", "associations")}
        if "warehouse" in phases:
            # A sandbox of its own, fresh as the budget benchmark's; the payloads are built before it starts.
            companies, elements = warehouse_elements(n)
            with SandboxProcess(Path(tmp) / "warehouse.db", batch_limit=max(100, size)) as sandbox:
                session = requests.Session()
                for body in companies:
                    session.post(sandbox.url + "/v2/companies", headers=HEADERS, json=body, timeout=10)
                results["warehouse"] = send(sandbox.url, elements, size, threads, sandbox.process.pid)
                stats = sandbox.stats()
                results["warehouse_stored"] = {k: stats[k] for k in ("customers", "companies", "associations")}
    if args.json:
        print(json.dumps(results))
    else:
        print(f"sandbox bulk throughput: {n} customers, batches of {size}, {threads} client thread(s)")
        for phase in (p for p in PHASES if p in results):
            r = results[phase]
            print(f"  {phase:<10} {r['elements']:>7} elements {r['requests']:>5} requests {r['seconds']:>7.2f} s "
                  f"{r['elements_per_s']:>7} elements/s {1000 * r['seconds'] / r['requests']:>7.1f} ms/request "
                  f"(server CPU {1000 * r['server_cpu_seconds'] / r['requests']:>6.1f} ms)  "
                  f"failed batches: {r['failed_batches']}")
        for key in ("stored", "warehouse_stored"):
            if key in results:
                print(f"  {key}: {results[key]}")
    return results


if __name__ == "__main__":
    main()
