"""Secrets and PII: nothing secret in logs, XCom, reports or staged files; PII masked; SQL bound; TLS verified."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import ssl
import subprocess
import threading

import pandas as pd
import pytest

from reliability_support import (  # record, reliability_home: fixtures
    AUDITOR, Warehouse, dag_env, find_pii, find_secrets, record, reliability_home, run_artifacts, run_dag_logged,
)

OAUTH = ("reliability-key", "reliability-oauth-secret-5d1e9c")


@pytest.fixture(scope="module")
def sample():
    from bench.generate import generate_warehouse

    # 10% bad rows: the quarantine gets reasons that would name mobiles and emails.
    return generate_warehouse(60, seed=31, bad_ratio=0.1)


@pytest.mark.slow
def test_oauth_run_leaks_no_secret_and_masks_pii(tmp_path, reliability_home, sample, pg_url, record):
    from associate.sandbox.launcher import SandboxProcess
    from dag_support import TILL

    companies, customers = sample
    warehouse = Warehouse.postgres(pg_url, companies, customers)
    log = tmp_path / "oauth_run.log"
    with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL, AUDITOR], oauth=[OAUTH], token_ttl=60) as sandbox:
        env = dag_env(reliability_home, warehouse, sandbox.url, oauth=OAUTH)
        run = run_dag_logged(env, {"mode": "full", "batch_size": 10}, log)
        assert run.returncode == 0 and run.state == "success", run.log[-5000:]
        tokens = sandbox.stats()["tokensIssued"]
    assert tokens >= 1, "the run never asked for an OAuth token"

    texts = run_artifacts(reliability_home, [log])
    texts["sync tables"] = "\n".join(" ".join(map(str, r)) for r in warehouse.rows(
        "SELECT error_message FROM associate_sync_results UNION ALL SELECT message FROM associate_warnings"))
    quarantine = warehouse.rows('SELECT entity_key, "check", column_name, reason FROM associate_quarantine')
    texts["associate_quarantine"] = "\n".join(" ".join(map(str, r)) for r in quarantine)
    secrets = {
        "OAuth secret": OAUTH[1],
        "till password": TILL[1],
        "md5 of the till password": hashlib.md5(TILL[1].encode()).hexdigest(),
        "Basic header": base64.b64encode(f"{TILL[0]}:{hashlib.md5(TILL[1].encode()).hexdigest()}".encode()).decode(),
    }
    leaks = find_secrets(texts, secrets)
    # Payload chunks and extracts must carry the customers' data; everything else must not.
    pii = find_pii({k: v for k, v in texts.items() if not k.startswith("staged file")}, customers)
    record("secrets", "oauth_run_scan", places_scanned=len(texts), tokens_issued=tokens,
           quarantine_rows=len(quarantine), secrets_found=leaks, raw_pii_found=pii[:10],
           scanned=sorted({k.split(" /")[0].rsplit(" ", 1)[0] if "/" in k else k for k in texts}))
    assert len(quarantine) > 0 and any("mobile" in r[1] or "email" in r[1] for r in quarantine)
    assert not leaks, leaks
    assert not pii, pii[:10]


def test_table_names_are_validated_and_values_bound(tmp_path, pg_url, record):
    """A hostile run id is stored as data on SQLite and PostgreSQL; an unknown table name is refused."""
    from associate import warehouse
    from associate.tables import RESULTS_TABLE
    from associate.warehouse.outputs import read_table

    hostile = "run'; DROP TABLE associate_sync_results; --"
    frame = pd.DataFrame([{"entity": "customer", "entity_key": "k'); DELETE FROM x; --", "status": "failed",
                           "capillary_id": None, "error_code": None, "error_message": "m", "attempts": 1,
                           "synced_at": pd.Timestamp("2026-01-01", tz="UTC")}])
    mp = pytest.MonkeyPatch()
    stored = {}
    try:
        for name, conn in (("sqlite", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})),
                           ("postgres", pg_url)):
            mp.setenv("AIRFLOW_CONN_SQL_CHECK", conn)
            warehouse.ensure_output_tables("sql_check")
            warehouse.replace_run_rows("sql_check", RESULTS_TABLE, hostile, frame)
            warehouse.replace_run_rows("sql_check", RESULTS_TABLE, hostile, frame)  # a retry replaces, no duplicate
            rows = read_table("sql_check", RESULTS_TABLE, run_id=hostile)
            stored[name] = rows[["run_id", "entity_key"]].values.tolist()
            for table in ("associate_sync_results; DROP TABLE customers", "customers", "pg_catalog.pg_user"):
                with pytest.raises(ValueError):
                    warehouse.replace_run_rows("sql_check", table, "r", frame)
            with pytest.raises(ValueError):
                read_table("sql_check", "associate_sync_results WHERE 1=1; --")
    finally:
        mp.undo()
    record("secrets", "sql_bound_parameters", stored=stored)
    for rows in stored.values():
        assert rows == [[hostile, "k'); DELETE FROM x; --"]]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server with a self-signed certificate answering the hierarchy list."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"entity": [], "warnings": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def tls_outcome(url: str, verify: str | None, *, ca_bundle_env: bool) -> str:
    """What the hook does with a self-signed certificate for one ``verify`` extra."""
    from associate.hook import CapillaryHook

    extra = {"max_retries": 0, "connect_timeout": 5, "read_timeout": 5}
    if verify is not None:
        extra["verify"] = verify
    mp = pytest.MonkeyPatch()
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if ca_bundle_env:
            mp.setenv(name, ssl.get_default_verify_paths().openssl_cafile)
        else:
            mp.delenv(name, raising=False)
    mp.setenv("AIRFLOW_CONN_CAPILLARY_TLS", json.dumps({"conn_type": "http", "host": url, "login": "u",
                                                        "password": "p", "extra": extra}))
    try:
        hook = CapillaryHook(capillary_conn_id="capillary_tls")
        try:
            hook.get_conn().get_hierarchies()
            outcome = "accepted the self-signed certificate"
        except Exception as exc:  # noqa: BLE001 - any refusal will do; the outcome is recorded
            outcome = f"refused: {type(exc).__name__}"
        finally:
            hook.close()
    finally:
        mp.undo()
    return outcome


@pytest.mark.parametrize("verify, trusted", [(None, False), ("true", False), ("0", True), ("false", True),
                                             ("maybe", False)])
def test_tls_verification_is_on_unless_turned_off_explicitly(tls_server, verify, trusted, record):
    outcome = tls_outcome(tls_server, verify, ca_bundle_env=False)
    record("secrets", f"tls_verify={verify}", outcome=outcome)
    assert outcome.startswith("accepted") == trusted, outcome


def test_tls_verify_false_works_when_a_ca_bundle_variable_is_set(tls_server, record):
    outcome = tls_outcome(tls_server, "false", ca_bundle_env=True)
    # B5 (fixed): requests took the CA bundle from the environment over Session.verify=False.
    record("secrets", "tls_verify=false with REQUESTS_CA_BUNDLE set", outcome=outcome)
    assert outcome.startswith("accepted"), outcome


def test_the_scanners_find_what_they_look_for(tmp_path):
    """Positive control: a planted secret, token and raw mobile/email are found (the scans can fail)."""
    import sqlite3

    from reliability_support import run_artifacts

    home = tmp_path / "home"
    (home / "reports" / "r1").mkdir(parents=True)
    (home / "staging" / "r1").mkdir(parents=True)
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("CREATE TABLE xcom (dag_id, task_id, run_id, key, value)")
        db.execute("INSERT INTO xcom VALUES ('d', 't', 'r', 'return_value', ?)", (b'"token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"',))
    (home / "reports" / "r1" / "report.html").write_text(f"<p>{OAUTH[1]}</p>")
    pd.DataFrame({"a": ["x", "919876543210 called"]}).to_parquet(home / "staging" / "r1" / "f.parquet")
    texts = run_artifacts(home)
    hits = find_secrets(texts, {"OAuth secret": OAUTH[1]})
    assert any("OAuth secret in report" in h for h in hits)
    assert any("JWT" in h and "xcom" in h for h in hits)
    customers = pd.DataFrame({"customer_key": ["K1", "K2"], "mobile": ["+91 98765 43210", None],
                              "email": [None, "Someone@Example.com"]})
    texts["log"] = "sent to someone@example.com"
    pii = find_pii(texts, customers)
    assert any("mobile of K1 in staged file" in h for h in pii) and any("email of K2 in log" in h for h in pii)
