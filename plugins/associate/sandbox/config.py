"""Settings of one sandbox server, parsed from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

DEFAULT_CREDENTIALS = (("store.server", "server123"),)
DEFAULT_OAUTH = (("demo-key", "demo-secret"),)
FAULT_KINDS = ("500", "502", "503", "drop", "slow", "commit500")
# How errors are answered (docs/sandbox.md, "Error forms"): the reference gives codes, not HTTP
# statuses, so a client must be tried against every plausible form.
ERROR_FORMS = ("documented", "400", "404", "200", "500", "500-bare")


def parse_faults(spec: str | None) -> dict[str, float]:
    """``500=0.05,drop=0.02`` -> {"500": 0.05, "drop": 0.02}; unknown kinds are an error."""
    faults: dict[str, float] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        kind, sep, ratio = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(f"bad fault {part!r}: expected KIND=RATIO with KIND in {', '.join(FAULT_KINDS)}")
        value = float(ratio)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"bad fault ratio {part!r}: must be between 0 and 1")
        faults[kind] = value
    if sum(faults.values()) > 1.0:
        raise ValueError("fault ratios add up to more than 1")
    return faults


def _pair(text: str) -> tuple[str, str]:
    name, sep, secret = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:SECRET, got {text.split(':')[0]!r}:...")
    return name, secret


@dataclass
class SandboxConfig:
    """Everything a sandbox server is started with."""

    db_path: str
    host: str = "127.0.0.1"
    port: int = 0
    credentials: tuple[tuple[str, str], ...] = DEFAULT_CREDENTIALS
    oauth: tuple[tuple[str, str], ...] = DEFAULT_OAUTH
    token_ttl: int = 300
    rate_limit_rpm: int = 0
    batch_limit: int = 100
    latency_ms: int = 0
    faults: dict[str, float] = field(default_factory=dict)
    fault_seed: int | None = None
    slow_ms: int = 35000
    hierarchy_file: str | None = None
    error_form: str = "documented"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m associate.sandbox``."""
    p = argparse.ArgumentParser(prog="python -m associate.sandbox",
                                description="A local Capillary (customers bulk, companies, fleet hierarchy).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--db", required=True, help="SQLite file holding the state")
    p.add_argument("--credentials", type=_pair, action="append", metavar="USER:PASSWORD",
                   help="Basic auth till credentials (repeatable); default store.server:server123")
    p.add_argument("--oauth", type=_pair, action="append", metavar="KEY:SECRET",
                   help="OAuth key/secret (repeatable); default demo-key:demo-secret")
    p.add_argument("--token-ttl", type=int, default=300, metavar="SECONDS")
    p.add_argument("--rate-limit-rpm", type=int, default=0, metavar="N", help="per credential; 0 = off")
    p.add_argument("--batch-limit", type=int, default=100, metavar="N")
    p.add_argument("--latency-ms", type=int, default=0, metavar="N")
    p.add_argument("--faults", default="", metavar="SPEC", help="e.g. 500=0.05,502=0.02,drop=0.02,commit500=0.1")
    p.add_argument("--fault-seed", type=int, default=None, metavar="N")
    p.add_argument("--slow-ms", type=int, default=35000, metavar="N")
    p.add_argument("--hierarchy-file", default=None, metavar="FILE", help="JSON list of hierarchy definitions")
    p.add_argument("--error-form", choices=ERROR_FORMS, default="documented", metavar="FORM",
                   help="how errors are answered: documented (default: one status per case, docs/sandbox.md), "
                        "400, 404, 200 (errors in a 200 body), 500, 500-bare; see docs/sandbox.md")
    return p


def parse_args(argv: list[str] | None = None) -> SandboxConfig:
    """Parse the command line into a SandboxConfig."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    return SandboxConfig(
        db_path=args.db, host=args.host, port=args.port,
        credentials=tuple(args.credentials) if args.credentials else DEFAULT_CREDENTIALS,
        oauth=tuple(args.oauth) if args.oauth else DEFAULT_OAUTH,
        token_ttl=args.token_ttl, rate_limit_rpm=args.rate_limit_rpm, batch_limit=args.batch_limit,
        latency_ms=args.latency_ms, faults=faults, fault_seed=args.fault_seed, slow_ms=args.slow_ms,
        hierarchy_file=args.hierarchy_file, error_form=args.error_form,
    )
