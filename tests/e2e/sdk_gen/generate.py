"""Generate SDKs from openapi/openapi.yaml into a directory (never committed).

`python -m tests.e2e.sdk_gen.generate OUT` writes OUT/python (openapi-python-client: package
`logway_generated`) and OUT/typescript (openapi-typescript's `schema.d.ts`, beside
`sdk_check.ts`, a program that uses it through openapi-fetch). Each step raises
`GenerationFailed` with the generator's output when it fails or warns about anything but the
one known gap (NDJSON produce bodies, which no generator models), so a spec change that
breaks generation fails the test that calls it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SPEC = REPO / "openapi" / "openapi.yaml"
NODE_MODULES = REPO / "clients" / "js" / "node_modules"
OPENAPI_PYTHON_CLIENT = Path(sys.executable).parent / "openapi-python-client"
# openapi-python-client's one expected warning: the produce body's application/x-ndjson form.
KNOWN_WARNING = re.compile(
    r"WARNING parsing POST /v1/topics/\{topic\}/records within records\.\s+"
    r"Unsupported content type application/x-ndjson\s+\{.*?\n\}\n",
    re.DOTALL,
)


class GenerationFailed(Exception):
    pass


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise GenerationFailed(f"{' '.join(args)} exited {result.returncode}:\n{output}")
    return output


def generate_python(out: Path) -> Path:
    """The openapi-python-client package for the spec; returns the directory to put on sys.path."""
    target = out / "python"
    output = _run(
        [
            str(OPENAPI_PYTHON_CLIENT),
            "generate",
            "--path", str(SPEC),
            "--output-path", str(target / "logway_generated"),
            "--config", str(HERE / "openapi-python-client.yaml"),
            "--meta", "none",
        ],
        cwd=out,
    )  # fmt: skip
    unexpected = KNOWN_WARNING.sub("", output)
    if re.search(r"\b(WARNING|ERROR)\b", unexpected):
        raise GenerationFailed(f"openapi-python-client warned:\n{output}")
    return target


def generate_typescript(out: Path) -> Path:
    """schema.d.ts (openapi-typescript) beside sdk_check.ts and its tsconfig; returns the dir."""
    target = out / "typescript"
    target.mkdir(parents=True)
    for name in ("sdk_check.ts", "tsconfig.json"):
        shutil.copy(HERE / name, target / name)
    (target / "package.json").write_text('{"type": "module", "private": true}\n')
    (target / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    _run(
        [
            "node",
            str(NODE_MODULES / "openapi-typescript" / "bin" / "cli.js"),
            str(SPEC),
            "--output", str(target / "schema.d.ts"),
        ],
        cwd=target,
    )  # fmt: skip
    return target


def compile_typescript(target: Path) -> Path:
    """tsc --strict over sdk_check.ts and the generated types; returns the compiled program."""
    _run(["node", str(NODE_MODULES / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json"], target)
    return target / "out" / "sdk_check.js"


if __name__ == "__main__":
    destination = Path(sys.argv[1])
    destination.mkdir(parents=True, exist_ok=True)
    print(generate_python(destination))
    print(compile_typescript(generate_typescript(destination)))
