"""The client CLI (`logway produce|consume|topics|groups`, logway_client.cli) as a user runs it:
the installed `logway` console script as a subprocess against a real gateway, output parsed as
NDJSON or JSON, exit codes and stderr lines as documented in logway_client.cli.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.client_commands import run_client_command
from tests.e2e.conftest import LOGWAY, Gateway, GatewayFactory, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GUARD_S = 30.0  # only a guard against hanging; no test asserts a duration


@pytest.fixture
def server() -> str:
    """The CLI is a client of the API: the default HTTP server is enough."""
    return "granian"


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> Gateway:
    """A gateway that does not auto-create topics, so unknown topics are 404s."""
    return start_gateway()


def logway(
    gateway: Gateway, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `logway ARGS` with LOGWAY_URL pointing at the gateway."""
    return subprocess.run(
        [str(LOGWAY), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        env={**os.environ, "LOGWAY_URL": gateway.url},
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def essence(record: dict[str, Any]) -> str:
    """What a producer chose: partition, key, value (or bytes), headers."""
    chosen = ("partition", "key", "value", "value_base64", "headers")
    return json.dumps({k: v for k, v in record.items() if k in chosen}, sort_keys=True)


def test_produce_lines_json_ndjson_file_then_consume_from_earliest(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Every input mode lands as the API's records, with keys, headers and partitions; consume
    prints exactly those records as NDJSON; and its output can be produced again."""
    ok(logway(gateway, "topics", "create", "orders", "--partitions", "3"))

    lines = ok(
        logway(
            gateway,
            "produce", "orders", "--key-separator", ":", "-H", "source=cli", "-H", "v=1",
            stdin="customer-1:first\n\ncustomer-2:second:with colon\nno separator\r\n",
        )
    )  # fmt: skip
    assert lines.stderr.strip().startswith("logway: produced 3 records to orders")
    ok(logway(gateway, "produce", "orders", "--json", "--partition", "1", stdin='{"a": 1}\n42\n'))
    raw = base64.b64encode(b"\x00\xff bytes").decode()
    ndjson_input = "\n".join(
        [
            json.dumps({"key": "k", "value": {"n": 1}, "headers": {"h": "x"}, "partition": 2}),
            json.dumps({"key": None, "value_base64": raw}),
        ]
    )
    ok(
        logway(
            gateway,
            "produce",
            "orders",
            "--format",
            "ndjson",
            "-H",
            "h=default",
            stdin=ndjson_input,
        )
    )
    data = tmp_path / "values.txt"
    data.write_text("".join(f"line {i}\n" for i in range(50)))
    from_file = ok(
        logway(
            gateway,
            "produce",
            "orders",
            "--file",
            str(data),
            "--key",
            "file",
            "--progress",
            "always",
        )
    )
    assert "100%" in from_file.stderr  # the progress bar ran to the end of the file
    assert "produced 50 records to orders in 1 partition" in from_file.stderr

    consumed = ok(logway(gateway, "consume", "orders", "--from", "earliest", "--max-records", "57"))
    records = ndjson(consumed.stdout)
    assert len(records) == 57
    assert all(
        list(r) == ["topic", "partition", "offset", "timestamp", "key", "value", "headers"]
        or list(r)
        == ["topic", "partition", "offset", "timestamp", "key", "value_base64", "headers"]
        for r in records
    )
    got = {(r["key"], json.dumps(r.get("value")), r.get("value_base64")): r for r in records}
    headers = {"source": "cli", "v": "1"}
    assert got["customer-1", '"first"', None]["headers"] == headers
    assert got["customer-2", '"second:with colon"', None]["headers"] == headers
    assert got[None, '"no separator"', None]["headers"] == headers  # \r dropped, no key
    assert got[None, '{"a": 1}', None]["partition"] == 1
    assert got[None, "42", None]["partition"] == 1
    assert got["k", '{"n": 1}', None]["partition"] == 2
    assert got["k", '{"n": 1}', None]["headers"] == {"h": "x"}  # its own header wins over -H
    assert got[None, "null", raw]["headers"] == {"h": "default"}
    file_records = [r for r in records if r["key"] == "file"]
    assert [r["value"] for r in sorted(file_records, key=lambda r: r["offset"])] == [
        f"line {i}" for i in range(50)
    ]  # one key, one partition, file order

    ok(logway(gateway, "topics", "create", "mirror", "--partitions", "3"))
    ok(logway(gateway, "produce", "mirror", "--format", "ndjson", stdin=consumed.stdout))
    mirrored = ok(logway(gateway, "consume", "mirror", "--from", "earliest", "--max-records", "57"))
    assert sorted(map(essence, ndjson(mirrored.stdout))) == sorted(map(essence, records))


def test_group_commit_auto_continues_and_groups_admin(gateway: Gateway) -> None:
    """A group consume stopped by --max-records commits exactly what it printed, so the next
    one continues after it (--from earliest again: a partition the first one never read has
    no commit); groups list/describe (lag)/seek/delete see and move that."""
    ok(logway(gateway, "topics", "create", "events", "--partitions", "2"))
    ok(logway(gateway, "produce", "events", stdin="".join(f"e{i}\n" for i in range(10))))

    first = ndjson(
        ok(logway(gateway, "consume", "events", "--group", "g", "--from", "earliest",
                  "--max-records", "4")).stdout
    )  # fmt: skip
    second = ndjson(
        ok(
            logway(
                gateway,
                "consume",
                "events",
                "--group",
                "g",
                "--from",
                "earliest",
                "--max-records",
                "6",
            )
        ).stdout
    )
    seen = [(r["partition"], r["offset"]) for r in first + second]
    assert len(seen) == len(set(seen)) == 10
    assert sorted(r["value"] for r in first + second) == sorted(f"e{i}" for i in range(10))

    described = json.loads(ok(logway(gateway, "groups", "describe", "g", "--json")).stdout)
    assert described["group"] == "g"
    assert {p["partition"]: p["lag"] for p in described["partitions"]} == {0: 0, 1: 0}
    assert all(p["committed_offset"] == p["end_offset"] for p in described["partitions"])
    table = ok(logway(gateway, "groups", "describe", "g")).stdout
    assert "COMMITTED" in table
    assert "LAG" in table
    listed = json.loads(ok(logway(gateway, "groups", "list", "--json")).stdout)
    assert [g["group"] for g in listed["groups"]] == ["g"]

    seek = json.loads(
        ok(
            logway(
                gateway, "groups", "seek", "g", "--topic", "events", "--to", "earliest", "--json"
            )
        ).stdout
    )
    assert [o["offset"] for o in seek["offsets"]] == [0, 0]
    after_seek = json.loads(ok(logway(gateway, "groups", "describe", "g", "--json")).stdout)
    assert sum(p["lag"] for p in after_seek["partitions"]) == 10

    ok(logway(gateway, "groups", "delete", "g"))
    gone = logway(gateway, "groups", "describe", "g")
    assert gone.returncode == 3
    assert gone.stderr == "logway: Unknown consumer group: consumer group 'g' does not exist\n"


def test_topics_list_describe_create_delete(gateway: Gateway) -> None:
    created = json.loads(
        ok(logway(gateway, "topics", "create", "t1", "--partitions", "2",
                  "--config", "retention.ms=3600000", "--json")).stdout
    )  # fmt: skip
    assert created["config"]["retention.ms"] == 3600000
    assert len(created["partitions"]) == 2
    same = ("--partitions", "2", "--config", "retention.ms=3600000")
    ok(logway(gateway, "topics", "create", "t1", *same))  # same settings: no change
    conflict = logway(gateway, "topics", "create", "t1", "--partitions", "3")
    assert conflict.returncode == 4
    assert conflict.stderr.startswith("logway: Topic exists with other settings: ")
    assert conflict.stderr.count("\n") == 1

    ok(logway(gateway, "produce", "t1", "--partition", "1", stdin="a\nb\n"))
    described = json.loads(ok(logway(gateway, "topics", "describe", "t1", "--json")).stdout)
    assert [p["end_offset"] for p in described["partitions"]] == [0, 2]
    assert "t1" in ok(logway(gateway, "topics", "list")).stdout
    assert json.loads(ok(logway(gateway, "topics", "list", "--json")).stdout) == {
        "topics": [{"name": "t1", "partitions": 2}]
    }
    ok(logway(gateway, "topics", "delete", "t1"))
    assert logway(gateway, "topics", "describe", "t1").returncode == 3


def test_errors_are_one_line_with_documented_exit_codes(gateway: Gateway) -> None:
    unknown = logway(gateway, "consume", "nope", "--from", "earliest", "--max-records", "1")
    assert unknown.returncode == 3
    assert unknown.stderr == "logway: Unknown topic: topic 'nope' does not exist\n"
    produce_unknown = logway(gateway, "produce", "nope", stdin="x\n")
    assert produce_unknown.returncode == 3
    assert "logway: Unknown topic: " in produce_unknown.stderr

    ok(logway(gateway, "topics", "create", "t", "--partitions", "1"))
    bad_line = logway(gateway, "produce", "t", "--json", stdin="1\nnot json\n3\n")
    assert bad_line.returncode == 5
    assert "logway: <stdin>:2: not JSON" in bad_line.stderr
    assert "produced 1 record to t" in bad_line.stderr  # what came before the bad line
    bad_partition = logway(gateway, "produce", "t", "--partition", "7", stdin="x\n")
    assert bad_partition.returncode == 3  # unknown partition

    for args in (
        ["consume", "t", "--bogus"],
        ["consume", "t", "--from", "yesterday"],
        ["consume", "t", "--group", "g", "--partitions", "0"],
        ["consume", "t", "--commit", "auto"],
        ["consume", "t", "--max-rec", "1"],  # never abbreviated
        ["produce", "t", "--format", "ndjson", "--json"],
        ["produce", "t", "--key", "k", "--key-separator", ":"],
        ["topics", "create", "t", "--config", "retention.ms=soon"],
        ["groups", "seek", "g", "--topic", "t"],
        ["topics"],
    ):
        result = logway(gateway, *args, stdin="")
        assert result.returncode == 2, (args, result.stderr)
        assert "usage:" in result.stderr

    unreachable = subprocess.run(
        [str(LOGWAY), "topics", "list", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=GUARD_S, check=False,
    )  # fmt: skip
    assert unreachable.returncode == 7
    assert unreachable.stderr.startswith("logway: no answer from the gateway: ")


def test_consume_stops_cleanly_on_idle_timeout_sigint_and_closed_pipe(gateway: Gateway) -> None:
    ok(logway(gateway, "topics", "create", "live", "--partitions", "1"))
    idle = ok(logway(gateway, "consume", "live", "--from", "earliest", "--timeout-s", "0.5"))
    assert idle.stdout == ""

    ok(logway(gateway, "produce", "live", stdin="one\n"))
    env = {**os.environ, "LOGWAY_URL": gateway.url}
    for stop in ("sigint", "pipe"):
        with subprocess.Popen(
            [str(LOGWAY), "consume", "live", "--group", stop, "--from", "earliest"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as process:
            try:
                assert process.stdout is not None
                assert process.stderr is not None
                assert json.loads(process.stdout.readline())["value"] == "one"  # flushed per line
                if stop == "sigint":
                    process.send_signal(signal.SIGINT)
                else:
                    process.stdout.close()
                    ok(logway(gateway, "produce", "live", stdin="two\nthree\n"))
                assert process.wait(GUARD_S) == 0
                stderr = process.stderr.read().decode()
                assert "Traceback" not in stderr, stderr
                assert "Exception" not in stderr, stderr
            finally:
                if process.poll() is None:
                    process.kill()
    # the SIGINT'd member committed what it printed before leaving
    described = json.loads(ok(logway(gateway, "groups", "describe", "sigint", "--json")).stdout)
    assert described["partitions"][0]["committed_offset"] == 1


def test_client_commands_without_the_client_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's `logway` imports the client only for its commands, and says how to get it."""
    monkeypatch.setitem(sys.modules, "logway_client.cli", None)
    assert run_client_command(["topics", "list"]) == 2
    assert "pip install" in capsys.readouterr().err


ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}


def test_schemas_register_evolve_refuse_and_a_violation_is_one_line(
    gateway: Gateway, tmp_path: Path
) -> None:
    """`logway schemas` registers and reads versions; a breaking change and a record that
    breaks the schema each come back as one line naming why and where."""
    ok(logway(gateway, "topics", "create", "orders", "--partitions", "1"))
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(ORDER_SCHEMA))
    registered = ok(logway(gateway, "schemas", "register", "orders", str(v1)))
    assert registered.stderr.strip() == "logway: topic orders: schema version 1"
    v2 = {
        **ORDER_SCHEMA,
        "properties": {**ORDER_SCHEMA["properties"], "coupon": {"type": "string"}},
    }
    second = ok(logway(gateway, "schemas", "register", "orders", "-", stdin=json.dumps(v2)))
    assert "schema version 2" in second.stderr
    breaking = {**v2, "properties": {**v2["properties"], "currency": {"type": "string"}}, "required": ["order_id", "amount", "currency"]}  # fmt: skip
    refused = logway(gateway, "schemas", "register", "orders", "-", stdin=json.dumps(breaking))
    assert refused.returncode == 4  # a conflict
    assert refused.stderr.count("\n") == 1
    assert "`currency`" in refused.stderr
    assert "breaks BACKWARD" in refused.stderr
    latest = json.loads(ok(logway(gateway, "schemas", "get", "orders")).stdout)
    assert (latest["version"], latest["schema"]) == (2, v2)
    listed = json.loads(ok(logway(gateway, "schemas", "list", "orders")).stdout)
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    assert ok(logway(gateway, "schemas", "compatibility", "orders")).stdout.strip() == "BACKWARD"
    assert (
        ok(logway(gateway, "schemas", "compatibility", "orders", "FULL")).stdout.strip() == "FULL"
    )

    lines = '{"order_id": "a", "amount": 1}\n{"order_id": "b", "amount": -2}\n'
    violated = logway(gateway, "produce", "orders", "--json", stdin=lines)
    assert violated.returncode == 5
    assert violated.stderr.splitlines() == [
        "logway: produced 0 records to orders; 2 not produced",
        "logway: schema violation (version 2): /records/1/value/amount:"
        " -2 is less than the minimum of 0 (keyword minimum)",
    ]
    ok(logway(gateway, "produce", "orders", "--json", stdin='{"order_id": "c", "amount": 3}\n'))
    [record] = ndjson(
        ok(logway(gateway, "consume", "orders", "--from", "earliest", "--max-records", "1")).stdout
    )
    assert (record["value"], record["headers"]) == (
        {"order_id": "c", "amount": 3},
        {"logway-schema-version": "2"},
    )
    assert ok(logway(gateway, "schemas", "delete", "orders", "2")).returncode == 0
    bad_file = logway(gateway, "schemas", "register", "orders", str(tmp_path / "missing.json"))
    assert bad_file.returncode == 2
