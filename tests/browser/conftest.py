"""Browser fixtures: Debian's headless chromium driven by Selenium through /usr/bin/chromedriver
(nothing downloaded), a real waitress coordinator, real worker processes, and helpers that act
as a person would: sign in, click, type, wait for what the page shows."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from dubfleet.local import BIN
from tests.integration.procs import WORKER_KEY, Api, Coordinator, start_worker, stop_all

CHROMIUM = Path(os.environ.get("DUBFLEET_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("DUBFLEET_CHROMEDRIVER", "/usr/bin/chromedriver"))
OUTPUT = Path(__file__).resolve().parent / "output"  # screenshots (git-ignored)
WAIT = 30.0

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online


def _chromium_args(width: int, height: int) -> list[str]:
    """Headless, as root, offline, and with the media features the player tests read."""
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--window-size={width},{height}", "--mute-audio", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            # video.audioTracks is behind this flag in Chromium
            "--enable-blink-features=AudioVideoTracks"]


def make_driver(width: int = 1280, height: int = 900):
    """A Chrome WebDriver session on Debian's chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in _chromium_args(width, height):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="session")
def chromium() -> None:
    """Skip the browser tier where setup could not install chromium (it installs it as root)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")


@pytest.fixture
def driver(chromium):
    """A fresh browser (no cookies) per test; its console is checked for script errors."""
    browser = make_driver()
    browser.set_page_load_timeout(WAIT)
    yield browser
    try:
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
                  and "/events" not in entry["message"] and "EventSource" not in entry["message"]
                  and "favicon" not in entry["message"]
                  and "Failed to load resource" not in entry["message"]]
    finally:
        browser.quit()
    assert not errors, errors


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the page may be reloading: try again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


def screenshot(browser, name: str, full: bool = False) -> Path:
    """Save a screenshot under tests/browser/output/ (`full`: the whole page, up to 4000 px)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    size = browser.get_window_size()
    if full:
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(size["width"], min(int(height) + 140, 4000))
        browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(path))
    if full:
        browser.set_window_size(size["width"], size["height"])
    return path


def create_key(coord: Coordinator, name: str, kind: str = "client") -> tuple[str, str]:
    """A key made with the real CLI, and its one-time sign-in link."""
    out = subprocess.run([str(BIN / "coordinator"), "create-key", "--kind", kind, "--name", name,
                          "--sign-in-link", "--url", coord.url], env=coord.env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1]


def sign_in(browser, base: str, key: str) -> None:
    """Sign in through the form, as a person pasting their key."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/app/sign-in")
    browser.find_element(By.ID, "api_key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(lambda: browser.current_url.endswith("/app/jobs"), what="the jobs page")


def api_in_page(browser, method: str, path: str, body: Any = None, csrf: bool = True) -> dict:
    """Call the JSON API from the page with its session cookie (and CSRF header unless told)."""
    script = """
      const [method, path, body, csrf, done] = arguments;
      const headers = {"Content-Type": "application/json"};
      if (csrf) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
      fetch(path, {method, headers, credentials: "same-origin",
                   body: body === null ? undefined : JSON.stringify(body)})
        .then(async r => done({status: r.status, body: await r.text()}));
    """
    result = browser.execute_async_script(script, method, path, body, csrf)
    try:
        result["json"] = json.loads(result["body"])
    except ValueError:
        result["json"] = None
    return result


class HandWorker:
    """The worker protocol driven by the test (claim, heartbeat, upload), so a page can be
    watched at exact progress values and shown chosen artifacts."""

    def __init__(self, url: str, session: str = "hand-session"):
        self.api = Api(url, WORKER_KEY)
        self.session = session
        self.lease = ""

    def claim(self) -> dict:
        info = {"worker_id": "hand", "session_id": self.session, "kinds": ["dub"],
                "asr_models": ["base"], "target_languages": ["es"], "device": "cpu"}
        reply = self.api.post("/jobs/claim", json={"worker": info, "wait": 10},
                              headers={"X-Worker-Session": self.session})
        assert reply.status_code == 200, reply.text
        self.lease = reply.json()["lease_token"]
        return reply.json()

    def _headers(self) -> dict[str, str]:
        return {"X-Lease-Token": self.lease, "X-Worker-Session": self.session}

    def heartbeat(self, job_id: str, **beat: Any) -> None:
        reply = self.api.post(f"/jobs/{job_id}/heartbeat", json=beat, headers=self._headers())
        assert reply.status_code == 200, reply.text

    def upload(self, job_id: str, name: str, data: bytes, content_type: str, final: bool = False) -> None:
        reply = self.api.post(f"/jobs/{job_id}/upload-result", data=data,
                              params={"name": name, "final": "1" if final else "0",
                                      "content_type": content_type},
                              headers={**self._headers(), "Content-Type": "application/octet-stream"})
        assert reply.status_code == 200, reply.text


def ffmpeg() -> str:
    """System ffmpeg, else imageio-ffmpeg's."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def make_video(path: Path, seconds: float, tone: int = 440, audio_tracks: int = 1) -> Path:
    """A small H.264/AAC mp4: a test card and `audio_tracks` sine tones."""
    inputs = ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate=15:duration={seconds}"]
    maps = ["-map", "0:v"]
    for n in range(audio_tracks):
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={tone + 110 * n}:duration={seconds}"]
        maps += ["-map", f"{n + 1}:a"]
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *inputs, *maps,
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-movflags", "+faststart", "-shortest", str(path)], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A real coordinator and a real echo worker process."""
    root = tmp_path_factory.mktemp("fleet")
    coord = Coordinator(root / "coord").start()
    worker = start_worker(coord.url, root / "w", "echo-worker", "--kinds", "echo", "--claim-wait", "2")
    yield coord
    stop_all([worker])
    coord.kill()


def job_id_from(url: str) -> str:
    """The job id at the end of a job page's address."""
    match = re.search(r"/app/jobs/([0-9a-f]{32})", url)
    assert match, url
    return match.group(1)
