"""The web app in a real browser against a real coordinator and a real echo worker: sign in,
upload several files with a progress bar each, follow jobs live, cancel a queued job, sign out;
and what must be refused or escaped."""
from __future__ import annotations

import json
import os

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import (HandWorker, api_in_page, create_key, job_id_from, make_video,
                                    screenshot, sign_in, wait_for)
from tests.integration.procs import Api

pytestmark = [pytest.mark.browser, pytest.mark.integration]

XSS = "<script>alert(1)</script>"


def _row(browser, job_id: str):
    return browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')


def _status(element) -> str:
    return element.find_element(By.CSS_SELECTOR, '[data-field="status"]').text


def _upload(browser, base: str, paths, kind: str) -> list[str]:
    """Submit files through the upload page; returns the queued jobs' ids from their links."""
    browser.get(f"{base}/app/upload")
    Select(browser.find_element(By.ID, "kind")).select_by_value(kind)
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    browser.find_element(By.ID, "start").click()
    links = wait_for(lambda: (lambda found: found if len(found) == len(paths) else None)(
        browser.find_elements(By.CSS_SELECTOR, "#uploads a.job-link")), what="a link per upload")
    bars = browser.find_elements(By.CSS_SELECTOR, "#uploads progress")
    assert len(bars) == len(paths) and all(bar.get_attribute("value") == "1" for bar in bars)
    return [job_id_from(link.get_attribute("href")) for link in reversed(links)]


def test_sign_in_upload_follow_cancel_and_sign_out(fleet, driver, tmp_path):
    key, _ = create_key(fleet, "alice")
    driver.get(f"{fleet.url}/app/jobs")
    assert "/app/sign-in" in driver.current_url  # no session: the sign-in page
    sign_in(driver, fleet.url, key)

    files = [tmp_path / "one.mp4", tmp_path / "two.mp4"]
    for n, path in enumerate(files):
        path.write_bytes(os.urandom(512 * 1024 * (n + 1)))
    echo_ids = _upload(driver, fleet.url, files, "echo")
    queued_id = _upload(driver, fleet.url, [tmp_path / "one.mp4"], "dub")[0]  # no dub worker

    driver.get(f"{fleet.url}/app/jobs")
    for job_id in echo_ids:
        wait_for(lambda: _status(_row(driver, job_id)) == "completed", what=f"{job_id} completed")
    row = _row(driver, queued_id)
    assert _status(row) == "queued"
    waiting = row.find_element(By.CSS_SELECTOR, '[data-field="waiting"]')
    assert waiting.is_displayed() and "no online worker can run this job" in waiting.text
    screenshot(driver, "jobs_list")

    row.find_element(By.CSS_SELECTOR, "button[data-action=cancel]").click()
    wait_for(lambda: _status(_row(driver, queued_id)) == "cancelled", what="cancelled")
    assert _row(driver, queued_id).find_element(By.CSS_SELECTOR, "button[data-action=retry]").is_displayed()
    driver.refresh()
    assert _status(_row(driver, queued_id)) == "cancelled"  # the server agrees

    driver.get(f"{fleet.url}/app/jobs?status=completed&kind=echo")
    shown = {r.get_attribute("data-job-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")}
    assert shown == set(echo_ids)
    assert Select(driver.find_element(By.ID, "f-status")).first_selected_option.text == "completed"

    driver.find_element(By.CSS_SELECTOR, ".sign-out button").click()
    wait_for(lambda: "/app/sign-in" in driver.current_url, what="the sign-in page")
    driver.get(f"{fleet.url}/app/jobs/{echo_ids[0]}")
    assert "/app/sign-in" in driver.current_url


def _dub_job_with_artifacts(fleet, browser, tmp_path) -> tuple[str, HandWorker]:
    """Upload a video as a dub through the page and claim it by hand."""
    source = make_video(tmp_path / "talk.mp4", 4.0, tone=330)
    job_id = _upload(browser, fleet.url, [source], "dub")[0]
    worker = HandWorker(fleet.url)
    assert worker.claim()["job_id"] == job_id
    return job_id, worker


def _report(lines: list[tuple[float, str, str]]) -> bytes:
    segments = [{"index": n, "source_text": src, "target_text": tgt, "slot_start": start,
                 "slot_end": start + 1.0, "onset": start, "speed": 1.2 if n == 1 else 1.0,
                 "flags": ["sped_up"] if n == 1 else [], "engine": "kokoro",
                 "translation_engine": "apertium"} for n, (start, src, tgt) in enumerate(lines)]
    return json.dumps({"segments": segments}).encode()


def _vtt(lines: list[tuple[float, str]]) -> bytes:
    cues = "".join(f"\n{n + 1}\n00:00:0{int(s)}.000 --> 00:00:0{int(s) + 1}.000\n{t}\n"
                   for n, (s, t) in enumerate(lines))
    return ("WEBVTT\n" + cues).encode()


def test_progress_player_transcript_and_escaping(fleet, driver, tmp_path):
    key, _ = create_key(fleet, "bea")
    sign_in(driver, fleet.url, key)
    job_id, worker = _dub_job_with_artifacts(fleet, driver, tmp_path)
    driver.get(f"{fleet.url}/app/jobs/{job_id}")
    bar = lambda: driver.find_element(By.CSS_SELECTOR, '#live [data-field="progress"]')  # noqa: E731
    seen = []
    for stage, percent in (("transcribing", 20), ("translating", 45), ("synthesizing", 80)):
        worker.heartbeat(job_id, stage=stage, progress=percent, eta_seconds=42)
        progress = percent / 100
        wait_for(lambda: abs(float(bar().get_attribute("value")) - progress) < 1e-6,
                 what=f"progress {progress}")
        assert driver.find_element(By.CSS_SELECTOR, '#live [data-field="stage"]').text == stage
        seen.append(float(bar().get_attribute("value")))
    assert seen == sorted(seen) and driver.find_element(By.CSS_SELECTOR, '#live [data-field="eta"]').text == "42 s"

    lines = [(0.0, "Hello there.", "Hola."), (1.0, XSS, "Texto <b>no</b> HTML"), (2.5, "Bye.", "Adiós.")]
    video = make_video(tmp_path / "dubbed.mp4", 4.0, audio_tracks=2)
    worker.upload(job_id, "subtitles.en.vtt", _vtt([(s, a) for s, a, _ in lines]), "text/vtt")
    worker.upload(job_id, "subtitles.es.vtt", _vtt([(s, b) for s, _, b in lines]), "text/vtt")
    worker.upload(job_id, "dub_report.json", _report(lines), "application/json")
    worker.upload(job_id, "dubbed_video.mp4", video.read_bytes(), "video/mp4", final=True)

    player = wait_for(lambda: driver.find_element(By.ID, "player"), what="the player after completion")
    duration = wait_for(lambda: driver.execute_script(
        "const v = document.getElementById('player'); return v.readyState >= 1 && v.duration;"),
        what="the video's metadata")
    assert abs(duration - 4.0) < 0.3
    tracks = driver.execute_script("const v = document.getElementById('player');"
                                   "return [v.audioTracks ? v.audioTracks.length : null,"
                                   " Array.from(v.textTracks).map(t => t.language + ':' + t.mode)]")
    assert tracks[0] in (None, 2)  # Chromium exposes audio tracks behind a flag, which we pass
    assert sorted(tracks[1]) == ["en:disabled", "es:showing"]

    cells = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#lines tr"), what="transcript rows")
    assert len(cells) == 3
    source = cells[1].find_element(By.CSS_SELECTOR, "td.source").text
    assert source == XSS and "<b>no</b>" in cells[1].find_element(By.CSS_SELECTOR, "td.target").text
    assert "sped up ×1.20" in cells[1].text
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - nothing ran
    assert not driver.find_elements(By.CSS_SELECTOR, "#lines script, #lines b")

    cells[2].find_element(By.CSS_SELECTOR, "button.seek").click()
    wait_for(lambda: abs(player.get_property("currentTime") - 2.5) < 0.2, what="seek to the line")

    driver.find_element(By.CSS_SELECTOR, 'label[for="audio-original"]').click()
    wait_for(lambda: driver.execute_script("return document.getElementById('player').currentSrc")
             .endswith(f"/jobs/{job_id}/input"), what="the original input playing")
    wait_for(lambda: abs(driver.execute_script(
        "const v = document.getElementById('player'); return v.readyState >= 1 ? v.duration : -1") - 4.0) < 0.3,
        what="the original's metadata")
    screenshot(driver, "job_page")

    downloads = {a.text for a in driver.find_elements(By.CSS_SELECTOR, ".downloads a")}
    assert {"dubbed_video.mp4", "dub_report.json", "subtitles.es.vtt"} <= downloads


def test_refusals_and_friendly_pages(fleet, driver, tmp_path):
    key, link = create_key(fleet, "cy")
    other_key, _ = create_key(fleet, "dee")
    theirs = Api(fleet.url, other_key).submit_bytes(b"x" * 100, kind="echo")["job_id"]

    driver.get(f"{fleet.url}/app/upload")
    assert "/app/sign-in" in driver.current_url
    driver.get(link)  # the one-time link
    driver.find_element(By.ID, "continue").click()
    wait_for(lambda: driver.current_url.endswith("/app/jobs"), what="signed in by the link")
    assert "cy" in driver.find_element(By.CSS_SELECTOR, ".who").text

    refused = api_in_page(driver, "POST", "/jobs", {"source_url": "https://example.org/a.mp4"}, csrf=False)
    assert refused["status"] == 403 and refused["json"]["error"] == "forbidden"
    # a kind no worker here runs: nothing ever fetches the address
    accepted = api_in_page(driver, "POST", "/jobs", {"source_url": "https://example.org/a.mp4",
                                                      "kind": "transcribe"})
    assert accepted["status"] == 202

    for path in (f"/app/jobs/{theirs}", "/app/no-such-page", "/app/jobs/zzz/extra"):
        driver.get(fleet.url + path)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Page not found", path
        assert theirs not in driver.page_source
    assert api_in_page(driver, "GET", f"/jobs/{theirs}")["status"] == 404

    driver.get(f"{fleet.url}/app/fleet")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Admins only"

    driver.delete_cookie("dubfleet_session")
    driver.add_cookie({"name": "dubfleet_session", "value": "forged.value.sig", "path": "/"})
    driver.get(f"{fleet.url}/app/jobs")
    assert "/app/sign-in" in driver.current_url  # a bad or expired session: sign in again

    driver.get(link)  # the link worked once
    assert driver.find_element(By.TAG_NAME, "h1").text == "Link expired"


def test_keyboard_and_phone_width(fleet, driver, tmp_path):
    key, _ = create_key(fleet, "eve")
    sign_in(driver, fleet.url, key)
    Api(fleet.url, key).submit_bytes(b"y" * 100, kind="echo", filename="a very long file name " * 3 + ".mp4")
    driver.set_window_size(375, 800)
    for path in ("/app/jobs", "/app/upload"):
        driver.get(fleet.url + path)
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= driver.execute_script("return window.innerWidth"), (path, width)
    screenshot(driver, "upload_phone")
    driver.get(f"{fleet.url}/app/jobs")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    active = driver.switch_to.active_element
    assert active.text == "Skip to content"
    outline = driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", active)
    assert outline == "solid"  # focus is visible
    active.send_keys(Keys.ENTER)
    order = []
    for _ in range(4):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        order.append(driver.switch_to.active_element.get_attribute("id") or
                     driver.switch_to.active_element.text)
    assert order[0] == "Upload videos" or order[0] == "f-status", order
    unlabeled = driver.execute_script("""
      return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).length""")
    assert unlabeled == 0


def test_pages_poll_when_live_events_are_refused(tmp_path, driver):
    """Past MAX_EVENT_STREAMS (here 0) the streams answer 503: the pages poll instead."""
    from tests.integration.procs import Coordinator
    coord = Coordinator(tmp_path / "coord", env={"MAX_EVENT_STREAMS": "0", "WEB_POLL_SECONDS": "1"}).start()
    try:
        key, _ = create_key(coord, "fay")
        job_id = Api(coord.url, key).submit_bytes(b"z" * 100, kind="dub", filename="poll.mp4",
                                                  target_language="es")["job_id"]
        sign_in(driver, coord.url, key)
        note = driver.find_element(By.ID, "live-state")
        wait_for(lambda: note.text == "Updating every 1 s.", what="the jobs list polling")
        worker = HandWorker(coord.url)
        worker.claim()
        worker.heartbeat(job_id, stage="transcribing", progress=30)
        wait_for(lambda: _status(_row(driver, job_id)) == "running", what="running, by polling")
        driver.get(f"{coord.url}/app/jobs/{job_id}")
        wait_for(lambda: driver.find_element(By.ID, "live-state").text == "Updating every 1 s.",
                 what="the job page polling")
        worker.heartbeat(job_id, stage="synthesizing", progress=70)
        wait_for(lambda: driver.find_element(By.CSS_SELECTOR, '#live [data-field="percent"]').text == "70 %",
                 what="70 % by polling")
    finally:
        coord.kill()
