"""The OpenAPI contract, fuzzed: schemathesis (`st run`) against a real waitress coordinator.

The schema is loaded from the live `/openapi.json`. Every operation gets generated requests,
valid and invalid (the examples, coverage and fuzzing phases), sent with the API key its
security names, and every check runs: no server error; status codes, content types, headers and
bodies as documented; schema-invalid data rejected; schema-valid data accepted (see
POSITIVE_422); unsupported methods answered 405; a missing key refused.
Rate limits are off so the fuzzer is never throttled (429 is still documented: a unit test
checks it). The run is seeded and deterministic.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Coordinator

pytestmark = pytest.mark.integration

ST = Path(sys.executable).parent / "st"
EXAMPLES = 12  # per operation and phase: the run stays around a minute on 2 cores
SEED = 1

# Submits whose rules JSON Schema cannot state: a callback host's DNS answer, a dub's own
# subtitles (format, cues, a language that is the job's source or target), the options' 16 KB
# as JSON. The document states each field exactly; these combinations are a 422 with the reason.
POSITIVE_422 = ("/jobs", "/upload-async")


def _config(client_key: str, report: Path) -> str:
    """schemathesis.toml: seed, examples, a key per security scheme, the POST /jobs exception."""
    keys = {"ClientKey": client_key, "WorkerKey": WORKER_KEY, "AdminKey": ADMIN_KEY}
    auth = "".join(f'[auth.openapi.{name}]\napi_key = "{key}"\n\n' for name, key in keys.items())
    exceptions = "".join(
        f'[[operations]]\ninclude-path = "{path}"\ninclude-method = "POST"\n'
        '[operations.checks.positive_data_acceptance]\n'
        'expected-statuses = ["2xx", "401", "403", "404", "409", "422"]\n\n'
        for path in POSITIVE_422)
    return (f"seed = {SEED}\n"
            f"[generation]\nmax-examples = {EXAMPLES}\ndeterministic = true\n\n"
            f"[reports.junit]\npath = \"{report}\"\n\n" + auth + exceptions)


@pytest.fixture
def live(tmp_path) -> Coordinator:
    """A real coordinator: no rate limits (the fuzzer sends bursts), no callbacks sent."""
    coord = Coordinator(tmp_path / "coord", env={"RATELIMIT_ENABLED": "0", "CALLBACKS_ENABLED": "0"},
                        threads=8)
    yield coord.start()
    coord.kill()


def test_api_conforms_to_its_document(live, tmp_path):
    """Every generated request gets a documented, conforming reply, and never a 5xx."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(live.create_key("client", "fuzz"), tmp_path / "junit.xml"))
    started = time.monotonic()
    run = subprocess.run(
        [str(ST), "--no-color", "--config-file", str(config), "run", f"{live.url}/openapi.json",
         "--checks", "all", "--phases", "examples,coverage,fuzzing", "--workers", "2",
         "--request-timeout", "30", "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    elapsed = time.monotonic() - started
    print(run.stdout[-8000:], f"\nschemathesis took {elapsed:.0f} s")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-4000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout
