"""The client's commands under `logway` (produce, consume, topics, groups, schemas): their
names for the server's `--help`, and how they run -- with the client package alone."""

from __future__ import annotations

import sys
from collections.abc import Sequence

CLIENT_COMMANDS = {
    "produce": "write records from stdin or a file (logway_client)",
    "consume": "print records as NDJSON (logway_client)",
    "topics": "list, describe, create, delete topics (logway_client)",
    "groups": "list, describe (with lag), seek, delete consumer groups (logway_client)",
    "schemas": "register, get, list, delete a topic's schemas (logway_client)",
}


def run_client_command(argv: Sequence[str]) -> int:
    """Run a client command with the client package, imported only now: the server does not
    depend on it, and `logway serve` must start without it."""
    try:
        from logway_client.cli import main as client_main
    except ModuleNotFoundError as exc:
        print(
            f"logway {argv[0]}: needs the Python client (missing module {exc.name!r}): "
            "pip install ./clients/python (from a checkout: pip install -e ./clients/python)",
            file=sys.stderr,
        )
        return 2
    return client_main(argv)
