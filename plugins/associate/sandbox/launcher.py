"""Start the sandbox in a child process, for tests, the demo and benchmarks (stdlib only)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


class SandboxError(RuntimeError):
    """The sandbox process did not come up (the message ends with its log's tail)."""


class SandboxProcess:
    """A sandbox server in a child process, for tests, the demo and benchmarks."""

    def __init__(self, db_path, *, host="127.0.0.1", port=0, credentials=(("store.server", "server123"),),
                 oauth=(("demo-key", "demo-secret"),), token_ttl=300, rate_limit_rpm=0,
                 batch_limit=100, latency_ms=0, faults=None, fault_seed=None, slow_ms=None,
                 hierarchy_file=None, error_form=None, extra_args=(), log_path=None):
        self.db_path = str(db_path)
        self.host = host
        self.port = port
        self.credentials = tuple(credentials or ())
        self.oauth = tuple(oauth or ())
        self.token_ttl = token_ttl
        self.rate_limit_rpm = rate_limit_rpm
        self.batch_limit = batch_limit
        self.latency_ms = latency_ms
        self.faults = faults
        self.fault_seed = fault_seed
        self.slow_ms = slow_ms
        self.hierarchy_file = hierarchy_file
        self.error_form = error_form
        self.extra_args = tuple(extra_args)
        # Without a log path the access log goes next to the db, so a failing test can be read later.
        self.log_path = str(log_path) if log_path else self.db_path + ".log"
        self.url: str | None = None
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        """The command line this launcher runs."""
        cmd = [sys.executable, "-m", "associate.sandbox", "--host", self.host, "--port", str(self.port),
               "--db", self.db_path, "--token-ttl", str(self.token_ttl),
               "--rate-limit-rpm", str(self.rate_limit_rpm), "--batch-limit", str(self.batch_limit),
               "--latency-ms", str(self.latency_ms)]
        for user, password in self.credentials:
            cmd += ["--credentials", f"{user}:{password}"]
        for key, secret in self.oauth:
            cmd += ["--oauth", f"{key}:{secret}"]
        if self.faults:
            spec = self.faults if isinstance(self.faults, str) else ",".join(f"{k}={v}" for k, v in self.faults.items())
            cmd += ["--faults", spec]
        if self.fault_seed is not None:
            cmd += ["--fault-seed", str(self.fault_seed)]
        if self.slow_ms is not None:
            cmd += ["--slow-ms", str(self.slow_ms)]
        if self.hierarchy_file:
            cmd += ["--hierarchy-file", str(self.hierarchy_file)]
        if self.error_form:
            cmd += ["--error-form", str(self.error_form)]
        return cmd + [str(a) for a in self.extra_args]

    def start(self) -> "SandboxProcess":
        """Start the server; return once ``/__sandbox/stats`` replies."""
        if self.process is not None and self.process.poll() is None:
            raise SandboxError("sandbox already running")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGINS_DIR), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log,
                                            stdin=subprocess.DEVNULL, env=env)
        try:
            self.url = self._read_url()
            self.port = int(self.url.rsplit(":", 1)[1])
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _read_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(f"sandbox printed no URL within {START_TIMEOUT:.0f}s{self._log_tail()}")
            ready, _, _ = select.select([self.process.stdout], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 1024)
                if not chunk:
                    raise SandboxError(f"sandbox exited with {self.process.wait()}{self._log_tail()}")
                line += chunk
        first = line.split(b"\n", 1)[0].decode()
        if "http://" not in first:
            raise SandboxError(f"unexpected first line {first!r}{self._log_tail()}")
        return first[first.index("http://"):].strip()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.stats()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None:
                    raise SandboxError(f"sandbox exited with {self.process.returncode}{self._log_tail()}") from None
                if time.monotonic() > deadline:
                    raise SandboxError(f"sandbox did not answer within {START_TIMEOUT:.0f}s{self._log_tail()}") from None
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- sandbox log tail ---\n" + "\n".join(text.splitlines()[-20:])

    def stats(self) -> dict:
        """The server's counters (``GET /__sandbox/stats``)."""
        with urllib.request.urlopen(f"{self.url}/__sandbox/stats", timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def restart(self, **changes) -> None:
        """Stop and start again on the same db and port, optionally with changed settings."""
        for name, value in changes.items():
            if not hasattr(self, name) or name in ("url", "process"):
                raise TypeError(f"unknown sandbox setting {name!r}")
            setattr(self, name, value)
        self.stop()
        self.start()

    def __enter__(self) -> "SandboxProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
