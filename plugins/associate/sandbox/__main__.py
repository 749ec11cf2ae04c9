"""``python -m associate.sandbox``: run a local Capillary."""

from __future__ import annotations

import signal
import sys

from .config import parse_args
from .server import serve


def _stop(signum, frame):
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGTERM or Ctrl-C."""
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    serve(config)


if __name__ == "__main__":
    main(sys.argv[1:])
