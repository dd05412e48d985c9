"""Test-only fault points: kill the process at a chosen instant, to prove crash recovery.

`LOGWAY_TEST_FAULT=<name>` in the environment of `logway serve` makes `fault_point(name)`
send the process SIGKILL when reached (no cleanup, no flush: what a crash does). Unset,
as in every real deployment, a fault point costs one comparison. Points:

    after-append   produce: every append of the request is durable, the answer not yet
                   saved or sent (gateway.produce.write)
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "LOGWAY_TEST_FAULT"
_ARMED = os.environ.get(FAULT_ENV)


def fault_point(name: str) -> None:
    """Die here if the test environment armed this point."""
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
