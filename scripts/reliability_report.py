"""Write RELIABILITY.md from the results of the reliability tests.

    .venv/bin/python scripts/reliability_report.py --run     # run the tests, then write RELIABILITY.md
    .venv/bin/python scripts/reliability_report.py --junit J --results R   # from an earlier run's files

The tests append what each scenario did to a JSON-lines file (reliability_support.record);
pytest's junit XML gives each test's verdict and time. Both are merged here, per test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ["tests/e2e/test_reliability_faults.py", "tests/integration/test_bad_input.py", "tests/integration/test_properties.py",
              "tests/e2e/test_secrets.py"]
SCHEMATHESIS_TEST = "tests/integration/test_sandbox_openapi.py"
RESULTS_ENV = "ASSOCIATE_RELIABILITY_RESULTS"


def run_tests(junit: Path, results: Path) -> int:
    """Run the reliability tests (and the sandbox's schemathesis test) writing both files."""
    env = dict(os.environ, **{RESULTS_ENV: str(results), "PYTHONPATH": str(ROOT / "plugins")})
    # The tests that check RELIABILITY.md itself are left out: this run is what writes it.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:logging", f"--junitxml={junit}", "-k", "not reliability_md",
           *TEST_FILES, SCHEMATHESIS_TEST]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def verdicts(junit: Path) -> list[tuple[str, dict]]:
    """(nodeid, {verdict, seconds, message}) per testcase of pytest's junit XML.

    schemathesis reports one testcase per API operation under one test name, so a nodeid
    may repeat."""
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        module, name = case.get("classname", ""), case.get("name", "")
        nodeid = module.replace(".", "/") + ".py::" + name
        verdict, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                verdict, message = "FAILED", (child.get("message") or "")[:200]
            elif child.tag == "skipped":
                kind = child.get("type", "")
                verdict = "known gap (xfail)" if "xfail" in kind else "skipped"
                message = child.get("message") or ""
        out.append((nodeid, {"verdict": verdict, "seconds": float(case.get("time") or 0), "message": message}))
    return out


def records(path: Path) -> dict[tuple[str, str], dict]:
    """(section, name) -> the latest record of it."""
    latest: dict[tuple[str, str], dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        entry = json.loads(line)
        latest[(entry["section"], entry["name"])] = entry
    return latest


def cell(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def fault_rows(recs, tests) -> list[str]:
    rows = ["| scenario | what was done | runs | injected | Capillary audit | results rows missing | verdict |",
            "|---|---|---|---|---|---|---|"]
    for (section, name), r in sorted(recs.items()):
        if section != "faults" or "audit" not in r:
            continue
        a = r["audit"]
        injected = {**r.get("faults_injected", {}), **({"429": r["rate_limited"]} if r.get("rate_limited") else {})}
        if r.get("faults_on_bulk_sends"):
            injected["of them on bulk sends"] = len(r["faults_on_bulk_sends"])
        runs = ", ".join(f"{x['state'] or 'killed'}" for x in r["runs"])
        audit = (f"{a['found_once_in_capillary']}/{a['valid_customers']} valid customers exactly once "
                 f"(sandbox holds {a['customers_in_sandbox']})" + (f"; problems: {a['problems']}" if a["problems"] else ""))
        what = r["description"] + (f"; {r['action']}" if r.get("action") else "")
        rows.append(f"| {name} | {cell(what)} | {runs} | {cell(injected)} | {cell(audit)} | "
                    f"{len(r['results_missing']) if r['results_missing'] else 0} | {tests.get(r['nodeid'], {}).get('verdict', '?')} |")
    return rows


def bad_input_rows(recs, tests) -> list[str]:
    rows = ["| kind | expected | what the run did | verdict |", "|---|---|---|---|"]
    for (section, name), r in sorted(recs.items()):
        if section != "bad_input":
            continue
        did = []
        for key, obs in r["observed"].items():
            if obs["quarantined"]:
                did.append(f"{key}: quarantined ({'; '.join(obs['quarantined'])[:160]})")
            elif obs["result"]:
                did.append(f"{key}: {obs['result'][0]}" + (f" ({obs['error']})" if obs.get("error") else ""))
            else:
                did.append(f"{key}: no outcome")
        verdict = tests.get(r["nodeid"], {}).get("verdict", "?")
        if r.get("known_gap"):
            verdict += f" — {r['known_gap']}"
        expected = "; ".join(f"{k}: {v}" for k, v in r["expected"].items())
        rows.append(f"| {name} | {cell(expected)} | {cell(' / '.join(did))} | {cell(verdict)} |")
    return rows


def other_rows(recs, tests, section: str) -> list[str]:
    rows = ["| check | what the test saw | verdict |", "|---|---|---|"]
    for (sec, name), r in sorted(recs.items()):
        if sec != section or (section == "faults" and "audit" in r):
            continue
        facts = {k: v for k, v in r.items() if k not in ("section", "name", "nodeid", "at")}
        rows.append(f"| {name} | {cell(facts)[:400]} | {tests.get(r['nodeid'], {}).get('verdict', '?')} |")
    return rows


def render(junit: Path, results: Path) -> str:
    cases = verdicts(junit)
    recs = records(results)
    per_file: dict[str, float] = {}
    counts: dict[str, int] = {}
    tests: dict[str, dict] = {}
    for nodeid, t in cases:
        per_file[nodeid.split("::")[0]] = per_file.get(nodeid.split("::")[0], 0.0) + t["seconds"]
        counts[t["verdict"]] = counts.get(t["verdict"], 0) + 1
        # A repeated nodeid (schemathesis) is failed if any of its cases failed.
        if tests.get(nodeid, {}).get("verdict") != "FAILED":
            tests[nodeid] = t
    gaps = ["A *known gap* is a strict xfail: the test shows a defect (described in its reason)",
            "and fails once it is fixed."] if "known gap (xfail)" in counts else []
    schemathesis = {k: v for k, v in tests.items() if k.startswith(SCHEMATHESIS_TEST)}
    lines = [
        "# Reliability",
        "",
        "Generated by `scripts/reliability_report.py` from the results of the reliability tests",
        f"({', '.join(f'`{f}`' for f in TEST_FILES)}), which run in `make test`. Each row is what the",
        "test observed in its last run; the verdict is pytest's.",
        *gaps,
        "",
        "Verdicts (junit test cases): " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + ".",
        "Test time (pytest's own, per file): " + ", ".join(f"`{f}` {s:.0f} s" for f, s in sorted(per_file.items())) + ".",
        "",
        "## Faults (sandbox `--faults`, real processes, `airflow dags test`)",
        "",
        "After each scenario the test looks every valid customer up in Capillary by each of its primary",
        "identifiers (`/v2/customers/lookup/customerDetails`, with a credential of its own): one id for all",
        "identifiers, the right fleet company, role and parent id; the sandbox holds exactly as many",
        "customers as there are valid rows (a duplicate would be one more); `associate_sync_state` has",
        "every valid customer as success/warning with Capillary's id; every success/warning row of",
        "`associate_sync_results` carries Capillary's id, and no run has two rows for one customer.",
        "Every run's output is also scanned for the till password, its md5 and the Basic header.",
        "",
        *fault_rows(recs, tests),
        "",
        *other_rows(recs, tests, "faults"),
        "",
        "## Bad input (beyond the quality gate's own catalogue in tests/validation_cases.py)",
        "",
        "One warehouse (SQLite, no constraints, so duplicate keys and values of any type can be stored)",
        "holds a valid fleet plus every kind; the DAG's task functions run in process against the sandbox;",
        "a kind expected *sent* is checked in Capillary through the lookups.",
        "",
        *bad_input_rows(recs, tests),
        "",
        "## Properties (hypothesis)",
        "",
        *other_rows(recs, tests, "properties"),
        "",
        "## Secrets, PII, SQL, TLS",
        "",
        *other_rows(recs, tests, "secrets"),
        "",
        "## The sandbox under schemathesis (faults off)",
        "",
        f"`{SCHEMATHESIS_TEST}` (the sandbox helper's) runs schemathesis over every operation of the served",
        "OpenAPI document with the `not_a_server_error` check among others: "
        + (", ".join(f"`{k.split('::')[1]}` {v['verdict']}" for k, v in sorted(schemathesis.items()))
           or "not part of this run") + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the reliability tests first")
    parser.add_argument("--junit", type=Path, help="pytest junit XML of an earlier run")
    parser.add_argument("--results", type=Path, help="the tests' JSON-lines results of that run")
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args(argv)
    rc = 0
    if args.run:
        tmp = Path(tempfile.mkdtemp(prefix="reliability-"))
        args.junit, args.results = tmp / "junit.xml", tmp / "results.jsonl"
        rc = run_tests(args.junit, args.results)
    if not args.junit or not args.results:
        parser.error("give --run, or both --junit and --results")
    args.out.write_text(render(args.junit, args.results), encoding="utf-8")
    print(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
