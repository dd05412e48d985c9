"""The `logway` console script.

A client command (`logway produce`, `consume`, `topics`, `groups`, `schemas`) loads the
client package alone; only the rest (`serve`, `--help`) loads the server's command line.
The server's modules (Starlette, PyJWT, the storage engine) take ~0.7 s to import, which
every `logway produce` in a shell loop would otherwise pay on top of the client's ~0.5 s.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gateway.client_commands import CLIENT_COMMANDS, run_client_command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `logway` console script; returns the process exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] in CLIENT_COMMANDS:
        return run_client_command(arguments)
    from gateway.cli import main as server_main  # the server's, only for its own commands

    return server_main(arguments)
