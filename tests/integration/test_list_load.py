"""One client hammering GET /jobs?limit=500 from 16 threads must not starve another client."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.integration.procs import Api

pytestmark = pytest.mark.integration

# The load runs in its own process, so its threads do not share the measuring process' GIL.
LOAD = textwrap.dedent("""
    import sys, threading, requests
    url, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    import time
    stop = time.monotonic() + seconds
    counts = []
    def hammer():
        s = requests.Session(); s.headers["X-API-Key"] = key; n = 0
        while time.monotonic() < stop:
            r = s.get(url + "/jobs", params={"limit": 500}, timeout=30)
            if r.status_code == 429:  # over this key's in-flight cap: back off as told
                time.sleep(float(r.headers["Retry-After"]) * 0.1)
                continue
            assert r.status_code == 200 and len(r.json()["jobs"]) == 200, r.text[:200]
            n += 1
        counts.append(n)
    threads = [threading.Thread(target=hammer) for _ in range(16)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(sum(counts))
""")


def test_list_load_does_not_starve_other_clients(coordinator):
    heavy, light = Api(coordinator.url, coordinator.create_key("client", "heavy")), \
        Api(coordinator.url, coordinator.create_key("client", "light"))
    for i in range(300):
        heavy.submit_bytes(b"x" * (i + 1), kind="dub" if i % 2 else "echo")
    load = subprocess.Popen([sys.executable, "-c", LOAD, coordinator.url, heavy.session.headers["X-API-Key"],
                             "25"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # let the load ramp up
        latencies = []
        for i in range(40):
            started = time.monotonic()
            light.submit_bytes(b"light %d" % i)
            latencies.append(time.monotonic() - started)
            time.sleep(0.2)
        out, _ = load.communicate(timeout=60)
    finally:
        load.kill()
    assert load.returncode == 0 and int(out.strip()) > 16, "the load did not run"
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert p99 < 1.0, f"submit p99 {p99:.3f}s under list load (all: {[round(x, 3) for x in latencies]})"
    assert len(light.all_jobs()) == 40
