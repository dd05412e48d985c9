"""A WHATWG EventSource driven from the tests: tests/e2e/eventsource_client.mjs, the
`eventsource` package from npm, which gives up for good on any status but 200."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.js_harness import JS_DIR, node_or_skip

CLIENT = Path(__file__).resolve().parent / "eventsource_client.mjs"


@dataclass
class EventSourceClient:
    """tests/e2e/eventsource_client.mjs `follow URL`, its output parsed as it arrives."""

    process: subprocess.Popen[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    opens: int = 0
    errors: list[str | None] = field(default_factory=list)
    gave_up: str | None = None
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def follow(cls, url: str, cafile: Path | None = None) -> EventSourceClient:
        env = {**os.environ, "LOGWAY_JS_DIR": str(JS_DIR)}
        if cafile is not None:
            env["NODE_EXTRA_CA_CERTS"] = str(cafile)
        process = subprocess.Popen(
            [node_or_skip(), str(CLIENT), "follow", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        client = cls(process)
        client.reader = threading.Thread(target=client._read, daemon=True)
        client.reader.start()
        return client

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # node's own complaints: kept in `output` for the failure message
            if "record" in message:
                self.records.append(message["record"])
            elif "open" in message:
                self.opens = message["open"]
            elif "error" in message:
                self.errors.append(message["error"])
            elif "gave_up" in message:
                self.gave_up = message["gave_up"]

    def values(self) -> list[Any]:
        return [r["value"] for r in self.records]

    def close(self) -> int:
        """Close stdin (the client closes its EventSource and exits); the exit code."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        if self.reader is not None:
            self.reader.join(5)  # it has read to the end of the output
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def report(self) -> str:
        return "".join(self.output[-40:])
