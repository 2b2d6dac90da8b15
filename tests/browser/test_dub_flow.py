"""A person's whole visit, with real models: sign in with a one-time link, upload a generated
English talk to dub into Spanish, watch it progress, play the result (duration, both audio
tracks), correct one translated line and re-dub: only that line is voiced again."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from dubfleet.sample import make_sample_video
from tests.browser.conftest import api_in_page, create_key, job_id_from, screenshot, wait_for
from tests.integration.procs import Coordinator, start_worker, stop_all

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.integration]

NEW_TEXT = "Esta frase fue corregida a mano."
DUB_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def dub_fleet(tmp_path_factory):
    """A coordinator and one real dubbing worker (models load once)."""
    root = tmp_path_factory.mktemp("webdub")
    coord = Coordinator(root / "coord").start()
    worker = start_worker(coord.url, root / "w", "dub-worker", "--claim-wait", "5")
    yield coord
    stop_all([worker])
    coord.kill()
    log = (root / "w" / "dub-worker.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The generated English talk (Piper speech over a test card) and its length."""
    path = tmp_path_factory.mktemp("sample") / "bread_talk.mp4"
    make_sample_video(path, pause=1.0)
    import av
    with av.open(str(path)) as container:
        return path, container.duration / 1e6


def _upload_dub(driver, base: str, path) -> str:
    driver.get(f"{base}/app/upload")
    Select(driver.find_element(By.ID, "kind")).select_by_value("dub")
    Select(driver.find_element(By.ID, "source_language")).select_by_value("en")
    Select(driver.find_element(By.ID, "target_language")).select_by_value("es")
    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    Select(driver.find_element(By.ID, "translation_engine")).select_by_value("llm")
    driver.find_element(By.ID, "files").send_keys(str(path))
    driver.find_element(By.ID, "start").click()
    link = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#uploads a.job-link"), what="the job link")
    job_id = job_id_from(link.get_attribute("href"))
    link.click()
    wait_for(lambda: driver.current_url.endswith(f"/app/jobs/{job_id}"), what="the job page")
    return job_id


def _watch(driver, timeout: float) -> list[tuple[str, float]]:
    """What the job page shows until the job ends: (stage, bar value) as they change."""
    seen: list[tuple[str, float]] = []

    def ended() -> bool:
        live = driver.find_element(By.ID, "live")
        state = (live.find_element(By.CSS_SELECTOR, '[data-field="stage"]').text,
                 float(live.find_element(By.CSS_SELECTOR, '[data-field="progress"]').get_attribute("value")))
        if not seen or seen[-1] != state:
            seen.append(state)
        return live.get_attribute("data-status") in ("completed", "failed", "cancelled")

    wait_for(ended, timeout=timeout, what="the job's end")
    return seen


def _video(driver) -> dict:
    return wait_for(lambda: driver.execute_script("""
        const v = document.getElementById('player');
        if (!v || v.readyState < 1) return null;
        return {duration: v.duration, audio: v.audioTracks ? v.audioTracks.length : null,
                src: v.currentSrc};"""), what="the player's metadata")


def test_dub_watch_play_correct_and_redub(dub_fleet, sample, driver):
    coord = dub_fleet
    video, length = sample
    _, link = create_key(coord, "gil")
    driver.get(link)
    driver.find_element(By.ID, "continue").click()
    wait_for(lambda: driver.current_url.endswith("/app/jobs"), what="signed in")

    job_id = _upload_dub(driver, coord.url, video)
    seen = _watch(driver, DUB_TIMEOUT)
    assert any(0 < value < 1 for _, value in seen), seen  # the bar moved while it ran
    assert len({stage for stage, _ in seen if stage != "—"}) >= 2, seen
    assert wait_for(lambda: driver.find_element(By.ID, "live").get_attribute("data-status")) == "completed"

    played = _video(driver)
    assert abs(played["duration"] - length) <= 0.5, (played, length)
    assert played["audio"] in (None, 2)  # the dub and the original, when Chromium exposes them
    driver.execute_script("document.getElementById('player').play()")
    wait_for(lambda: driver.execute_script("return document.getElementById('player').currentTime") > 0.3,
             what="the video playing")
    driver.execute_script("document.getElementById('player').pause()")
    rows = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#lines tr"), what="the transcript")
    assert len(rows) >= 3
    screenshot(driver, "dub_job_page", full=True)

    edited = rows[1]
    index = int(edited.get_attribute("data-index"))
    driver.find_element(By.ID, "edit-toggle").click()
    area = edited.find_element(By.CSS_SELECTOR, "td.target textarea")
    area.clear()
    area.send_keys(NEW_TEXT)
    assert driver.find_element(By.ID, "changed-count").text == "1 line changed"
    driver.find_element(By.ID, "redub").click()
    wait_for(lambda: f"/app/jobs/{job_id}" not in driver.current_url, what="the re-dub's page")
    redub_id = job_id_from(driver.current_url)
    _watch(driver, DUB_TIMEOUT)
    assert driver.find_element(By.ID, "live").get_attribute("data-status") == "completed"

    report = api_in_page(driver, "GET", f"/jobs/{redub_id}/artifacts/dub_report.json")["json"]
    assert report["revoiced"] == [index] and report["reused"] == len(rows) - 1
    new_rows = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#lines tr"), what="the new transcript")
    marked = [r.get_attribute("data-index") for r in new_rows if "re-voiced" in r.text]
    assert marked == [str(index)]
    changed = [r for r in new_rows if r.get_attribute("data-index") == str(index)][0]
    assert changed.find_element(By.CSS_SELECTOR, "td.target").text == NEW_TEXT
    assert abs(_video(driver)["duration"] - length) <= 0.5
    screenshot(driver, "redub_job_page", full=True)
    driver.get(f"{coord.url}/app/jobs")
    screenshot(driver, "dub_jobs_list")
