"""Benchmark of sending customers to a rate-limited Capillary: the operator's path vs a plain loop.

Starts a sandbox with ``--rate-limit-rpm`` and ``--latency-ms`` (fresh database for each
run), stages one payload chunk of N independent customers in batches (with ``--children C``:
fleet admins first, then C fleet customers each, as a hierarchy's depths are sent), and sends it

1. through ``associate.sending.send_payload_chunk`` (CapillaryHook: pooled session,
   GCRA limiter at the budget, ``concurrency`` threads, retries), and
2. through a plain sequential ``requests`` loop (one POST after the other, sleeping
   ``Retry-After`` on a 429 and sending again - the least a loop needs to finish).

It prints the sustained request rate against the budget, 429s (all and after the first
minute) and customers/s of both, and their ratio.

    PYTHONPATH=plugins python -m bench.bench_send [--customers 5000] [--batch-size 10]
        [--rpm 600] [--latency-ms 50] [--concurrency 2] [--children 0] [--skip-baseline]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))

CONN_ID = "bench_send_capillary"


COMPANY = "BENCH-SEND-FLEET"


def customers(n: int, seed: int, children: int = 0) -> list[dict]:
    """N customer elements (registration only, unique mobiles), parents first.

    With ``children`` every parent (a fleet admin, FA) has that many fleet customers (FC)
    of one company, sent after all parents in parent order, as ``chunking`` lays them out.
    """
    def mobile(i: int) -> str:
        return f"9{seed % 9 + 1}{i:010d}"

    def element(i: int, association: dict | None = None) -> dict:
        body = {"profiles": [{"firstName": "Bench", "lastName": f"C{i}", "source": "INSTORE",
                              "identifiers": [{"type": "mobile", "value": mobile(i)}]}],
                "loyaltyInfo": {"loyaltyType": "loyalty"}}
        if association:
            body["associationDetails"] = {"hierarchyCode": "code-association2", "fleetCompany": {"externalId": COMPANY},
                                          **association}
        return body

    if not children:
        return [element(i) for i in range(n)]
    parents = max(1, n // (children + 1))
    out = [element(i, {"roleCode": "FA"}) for i in range(parents)]
    for i in range(parents, n):
        parent = (i - parents) // children % parents
        out.append(element(i, {"roleCode": "FC", "parentCustomer": {
            "profiles": [{"identifiers": [{"type": "mobile", "value": mobile(parent)}]}]}}))
    return out


class ThrottleClock:
    """Times of the 429s the hook met (read from its counters while it runs)."""

    def __init__(self, hook):
        self.hook, self.times, self._stop = hook, [], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        seen = 0
        while not self._stop.is_set():
            count = self.hook.get_conn().stats.throttled
            self.times += [time.monotonic()] * (count - seen)
            seen = count
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_hook(url: str, elements: list[dict], args, workdir: Path) -> dict:
    """Send through the operator's function and the hook."""
    import pandas as pd

    from associate import staging
    from associate.hook import CapillaryHook
    from associate.sending import send_payload_chunk

    os.environ["ASSOCIATE_STAGING_BASE"] = "file://" + str(workdir / "staging")
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({
        "conn_type": "http", "host": url, "login": "store.server", "password": "server123",
        "extra": {"rate_limit_rpm": args.rpm, "concurrency": args.concurrency, "batch_size": args.batch_size},
    })
    parents = sum(1 for e in elements if e.get("associationDetails", {}).get("roleCode") == "FA")
    # Parents fill their own batches; children start a new batch (one depth, one call key each).
    frame = pd.DataFrame({
        "batch_no": [i // args.batch_size if i < parents
                     else -(-parents // args.batch_size) + (i - parents) // args.batch_size
                     for i in range(len(elements))],
        "entity_key": [f"c{i}" for i in range(len(elements))],
        "payload": [json.dumps(e) for e in elements],
        "payload_hash": [hashlib.sha256(json.dumps(e).encode()).hexdigest() for e in elements],
        "method": "POST", "source": "INSTORE", "account_id": None,  # new customers: registered
    })
    payload_uri = staging.write_frame(frame, staging.run_path("bench", "payloads", "chunk-000.parquet"))
    hook = CapillaryHook(capillary_conn_id=CONN_ID)
    if parents:
        hook.get_conn().ensure_companies([{"name": "Bench fleet", "externalId": COMPANY,
                                           "hierarchyDefinitionCode": "code-association2"}])
    started = time.monotonic()
    with ThrottleClock(hook) as throttles:
        outcome_uri = send_payload_chunk(hook, payload_uri, payload_uri.replace("/payloads/", "/outcomes/"),
                                         run_id="bench")
    elapsed = time.monotonic() - started
    outcome = staging.read_frame(outcome_uri)
    stats = hook.get_conn().stats.snapshot()
    return {
        "elapsed_s": elapsed,
        "sustained_rpm": hook.get_conn().stats.sustained_rpm(),
        "requests": stats["requests"],
        "throttled": stats["throttled"],
        "throttled_after_first_minute": sum(1 for t in throttles.times if t - started > 60),
        "succeeded": int((outcome["status"] != "failed").sum()),
    }


def run_baseline(url: str, elements: list[dict], args) -> dict:
    """A plain sequential loop: one POST per batch, sleep Retry-After on a 429, send again."""
    import requests

    digest = hashlib.md5(b"server123").hexdigest()  # noqa: S324 - the API's scheme
    headers = {"Authorization": "Basic " + base64.b64encode(f"store.server:{digest}".encode()).decode(),
               "Content-Type": "application/json", "Accept": "application/json"}
    if any("associationDetails" in e for e in elements):  # the hierarchy's company, as the hook's run has it
        requests.post(f"{url}/v2/companies", headers=headers, timeout=(5, 30), json={
            "name": "Bench fleet", "externalId": COMPANY, "hierarchyDefinitionCode": "code-association2"})
    batches = [elements[i:i + args.batch_size] for i in range(0, len(elements), args.batch_size)]
    sent = throttled = throttled_late = succeeded = 0
    started = time.monotonic()
    first = last = started
    for batch in batches:
        while True:
            last = time.monotonic()
            first = last if sent == 0 else first
            response = requests.post(f"{url}/v2/customers/bulk", json=batch, headers=headers, timeout=(5, 30))
            sent += 1
            if response.status_code != 429:
                break
            throttled += 1
            throttled_late += time.monotonic() - started > 60
            time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code == 200:
            succeeded += sum(1 for r in response.json() if r.get("entity"))
    return {"elapsed_s": time.monotonic() - started, "requests": sent,
            "sustained_rpm": (sent - 1) / (last - first) * 60 if last > first else None, "throttled": throttled,
            "throttled_after_first_minute": throttled_late, "succeeded": succeeded}


def report(name: str, result: dict, args) -> str:
    rpm = result["requests"] / result["elapsed_s"] * 60
    good_rpm = (result["requests"] - result["throttled"]) / result["elapsed_s"] * 60
    result.update(rpm=rpm, good_rpm=good_rpm, customers_per_s=result["succeeded"] / result["elapsed_s"])
    sustained = result["sustained_rpm"] or 0.0
    return (f"| {name} | {result['elapsed_s']:.1f} | {result['requests']} "
            f"| {sustained:.0f} ({sustained / args.rpm:.1%}) | {good_rpm:.0f} "
            f"({good_rpm / args.rpm:.1%}) | {result['throttled']} | {result['throttled_after_first_minute']} "
            f"| {result['succeeded']} | {result['customers_per_s']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--children", type=int, default=0,
                        help="fleet customers per fleet admin (0: independent customers)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)

    from associate.sandbox.launcher import SandboxProcess

    elements = customers(args.customers, seed=int(time.time()), children=args.children)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_send_") as tmp:
        workdir = Path(tmp)
        runs = [("CapillaryHook (operator path)", lambda url: run_hook(url, elements, args, workdir))]
        if not args.skip_baseline:
            runs.append(("plain sequential requests loop", lambda url: run_baseline(url, elements, args)))
        results = {}
        for index, (name, run) in enumerate(runs):
            with SandboxProcess(workdir / f"sandbox-{index}.db", rate_limit_rpm=args.rpm,
                                latency_ms=args.latency_ms) as sandbox:
                results[name] = run(sandbox.url)
                results[name]["server_429"] = sandbox.stats()["rateLimited"]
            rows.append(report(name, results[name], args))
    print(f"{args.customers} customers, batch size {args.batch_size}, sandbox --rate-limit-rpm {args.rpm} "
          f"--latency-ms {args.latency_ms}, hook concurrency {args.concurrency}\n")
    print("| client | wall s | requests | sustained req/min, first to last request (of budget) "
          "| accepted req/min over wall time (of budget) | 429s | 429s after 1st min | customers ok | customers/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if len(results) == 2:
        hook_result, base_result = results.values()
        print(f"\nratio hook / baseline: customers/s {hook_result['customers_per_s'] / base_result['customers_per_s']:.2f}, "
              f"429s {hook_result['throttled']} vs {base_result['throttled']}")
    print("\nraw:", json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
