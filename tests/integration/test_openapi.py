"""The OpenAPI contract, fuzzed: schemathesis (`st run`) against a real waitress coordinator.

The schema is loaded from the live `/openapi.json`. Every operation gets generated requests,
valid and invalid (the examples, coverage and fuzzing phases), then sequences of calls along the
links schemathesis infers (stateful: a submitted job's id into the calls that take one), each
sent with the API key its security names. Every check runs: no server error; status codes,
content types, headers and bodies as documented; schema-invalid data rejected; schema-valid data
accepted (see CROSS_FIELD_RULES); unsupported methods answered 405; a missing key refused.
Rate limits are off so the fuzzer is never throttled (429 is still documented: a unit test
checks it). Generation is deterministic: the same code gets the same requests.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Coordinator

pytestmark = pytest.mark.integration

ST = Path(sys.executable).parent / "st"
EXAMPLES = 50  # per operation and phase: the run stays within about a minute on 2 cores

# Operations with rules between fields that JSON Schema cannot state. The document states each
# field exactly; a schema-valid combination may still be refused, with the reason:
# - a submit (422): a callback host's DNS answer, a dub's own subtitles (format, cues, a language
#   that is the job's source or target), the options' 16 KB as JSON;
# - an upload-result naming an object-storage `key` (400/422): also needs `size` and
#   X-Content-SHA256, and a coordinator without object storage refuses it.
# - a re-dub (422): the job must be a dub and each edited index one of its lines; a text of
#   blanks only is empty.
# - a job's input (416): a Range past the end of the stored file, or several ranges at once.
# - an edited summary (422): chapters in order (none starts before the previous one ends), and
#   a body `language` (if any) that is the chosen summary's.
# - a batch call (422): a job appears at most once across its results and releases.
CROSS_FIELD_RULES = {("POST", "/jobs"): ("422",), ("POST", "/upload-async"): ("422",),
                     ("POST", "/jobs/{job_id}/upload-result"): ("400", "422"),
                     ("POST", "/jobs/{job_id}/redub"): ("422",),
                     ("PUT", "/jobs/{job_id}/summary"): ("422",),
                     ("POST", "/jobs/batch"): ("422",),
                     ("GET", "/jobs/{job_id}/input"): ("416",)}

# Checks left out: `allow_header_conformance`, because /jobs/next and /jobs/claim are also
# `/jobs/<job_id>` (a GET or DELETE there is a 404, no such job), so OPTIONS lists those methods;
# `use_after_free`, because DELETE /jobs/<id> cancels: the job stays, visibly `cancelled`.
EXCLUDED_CHECKS = "allow_header_conformance,use_after_free"
# Live event streams also answer 503 + Retry-After (documented) past MAX_EVENT_STREAMS: the fuzzer
# reads the start of a stream and moves on, and a left stream holds its slot until it ends.
STREAMS = ("/jobs/events", "/jobs/{job_id}/events")

# No rate limits (the fuzzer sends bursts; 429 is documented), no callbacks sent, no DNS lookups
# of callback hosts (private addresses allowed), and no long polls: a claim with `wait` answers
# 204 + Retry-After at once instead of holding 20 s; live event streams of open jobs end after
# 0.2 s (the reply is complete, as when a real stream reaches EVENT_STREAM_MAX_SECONDS).
FUZZ_ENV = {"RATELIMIT_ENABLED": "0", "CALLBACKS_ENABLED": "0", "ALLOW_PRIVATE_CALLBACKS": "1",
            "MAX_CLAIM_WAITERS": "0", "EVENT_STREAM_MAX_SECONDS": "0.2"}


def _config(client_key: str) -> str:
    """schemathesis.toml: examples (deterministic), a key per security scheme, CROSS_FIELD_RULES,
    STREAMS."""
    keys = {"ClientKey": client_key, "WorkerKey": WORKER_KEY, "AdminKey": ADMIN_KEY}
    auth = "".join(f'[auth.openapi.{name}]\napi_key = "{key}"\n\n' for name, key in keys.items())
    # First: the first [[operations]] entry that applies to an operation wins.
    streams = "".join(
        f'[[operations]]\ninclude-name = "GET {path}"\n'
        '[operations.checks.not_a_server_error]\nexpected-statuses = ["2xx", "3xx", "4xx", "503"]\n'
        '[operations.checks.positive_data_acceptance]\n'
        'expected-statuses = ["2xx", "401", "403", "404", "503"]\n\n' for path in STREAMS)
    exceptions = streams + "".join(
        f'[[operations]]\ninclude-path = "{path}"\ninclude-method = "{method}"\n'
        '[operations.checks.positive_data_acceptance]\n'
        f'expected-statuses = {json.dumps(["2xx", "401", "403", "404", "409", *codes])}\n\n'
        for (method, path), codes in CROSS_FIELD_RULES.items())
    return f"[generation]\nmax-examples = {EXAMPLES}\ndeterministic = true\n\n" + auth + exceptions


@pytest.fixture
def live(tmp_path) -> Coordinator:
    """A real coordinator set up for fuzzing (FUZZ_ENV)."""
    coord = Coordinator(tmp_path / "coord", env=FUZZ_ENV, threads=8)
    yield coord.start()
    coord.kill()


def test_api_conforms_to_its_document(live, tmp_path):
    """Every generated request gets a documented, conforming reply, and never a 5xx."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(live.create_key("client", "fuzz")))
    started = time.monotonic()
    # One worker: hypothesis calls ast.parse, which fails in concurrent threads on CPython 3.11
    # ("AST constructor recursion depth mismatch").
    run = subprocess.run(
        [str(ST), "--no-color", "--config-file", str(config), "run", f"{live.url}/openapi.json",
         "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
         "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1",
         "--request-timeout", "30", "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    print(run.stdout[-4000:], f"\nschemathesis took {time.monotonic() - started:.0f} s")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-4000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    assert selected and selected.group(1) == selected.group(2), "every operation is fuzzed"
    assert re.search(rf"Tested: {selected.group(2)}\b", run.stdout), run.stdout[-4000:]


def test_throttling_is_documented_where_it_can_happen(live):
    """The fuzzer runs without rate limits, so the document must say every keyed call may get a
    429 (per-key rate limits and in-flight gate) with Retry-After."""
    doc = requests.get(f"{live.url}/openapi.json", timeout=10).json()
    keyed = [(method, path, op) for path, item in doc["paths"].items()
             for method, op in item.items() if op.get("security")]
    assert keyed
    for method, path, operation in keyed:
        assert "429" in operation["responses"], f"{method} {path}"
    assert "Retry-After" in doc["components"]["responses"]["E429"]["headers"]
