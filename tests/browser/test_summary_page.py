"""The job page's summary in a real browser: shown (escaped), a chapter seeks the player, the owner
edits and saves it, the export link then gives the edited Markdown."""
from __future__ import annotations

import json

import pytest
import requests
from selenium.webdriver.common.by import By

from tests.browser.conftest import HandWorker, create_key, make_video, sign_in, wait_for
from tests.integration.procs import Api, Coordinator

pytestmark = [pytest.mark.browser, pytest.mark.integration]

XSS = "<img src=x onerror=alert(1)>"
SUMMARY = {"version": 1, "title": "Rivers " + XSS, "language": "en", "duration": 4.0,
           "method": "extractive", "notes": [],
           "key_points": [{"text": "Rain feeds rivers.", "start": 0.5, "end": 1.0},
                          {"text": "Cities flood " + XSS, "start": 1.5, "end": 2.0},
                          {"text": "Lag time helps.", "start": 3.0, "end": 3.5}],
           "chapters": [{"start": 0.0, "end": 2.5, "title": "Where water comes from"},
                        {"start": 2.5, "end": 4.0, "title": "Floods"}]}


@pytest.fixture
def coord(chromium, tmp_path):
    """A coordinator of its own: the hand worker claims exactly this test's job."""
    coordinator = Coordinator(tmp_path / "coord").start()
    yield coordinator
    coordinator.kill()


def test_summary_shows_seeks_and_saves_an_edit(coord, driver, tmp_path):
    key, _ = create_key(coord, "sam")
    video = make_video(tmp_path / "talk.mp4", 4.0)
    job_id = Api(coord.url, key).submit_bytes(video.read_bytes(), kind="dub", filename="talk.mp4",
                                              target_language="es")["job_id"]
    worker = HandWorker(coord.url)
    assert worker.claim()["job_id"] == job_id
    worker.upload(job_id, "summary.json", json.dumps(SUMMARY).encode(), "application/json")
    worker.upload(job_id, "summary.md", b"# Rivers\n", "text/markdown")
    worker.upload(job_id, "dubbed_video.mp4", video.read_bytes(), "video/mp4", final=True)

    sign_in(driver, coord.url, key)
    driver.get(f"{coord.url}/app/jobs/{job_id}")
    title = wait_for(lambda: driver.find_element(By.ID, "summary-title").text, what="the summary")
    assert title == SUMMARY["title"]  # shown as text, not markup
    points = driver.find_elements(By.CSS_SELECTOR, "#summary-points li")
    assert [p.text.split(" ", 1)[1] for p in points] == [p["text"] for p in SUMMARY["key_points"]]
    assert not driver.find_elements(By.CSS_SELECTOR, "#summary img")
    chapters = driver.find_elements(By.CSS_SELECTOR, "#summary-chapters li")
    assert [c.text for c in chapters] == ["0:00 Where water comes from", "0:02 Floods"]

    wait_for(lambda: driver.execute_script("return document.getElementById('player').readyState >= 1"),
             what="the video's metadata")
    chapters[1].find_element(By.CSS_SELECTOR, "button.seek").click()
    player = driver.find_element(By.ID, "player")
    wait_for(lambda: abs(player.get_property("currentTime") - 2.5) < 0.2, what="seek to the chapter")

    driver.find_element(By.ID, "summary-edit").click()
    field = driver.find_element(By.ID, "summary-title-input")
    assert driver.switch_to.active_element == field  # the keyboard lands in the editor
    field.clear()
    field.send_keys("How rivers work")
    driver.find_element(By.ID, "summary-point-1").clear()  # an emptied point is dropped
    chapter = driver.find_element(By.ID, "summary-chapter-1")
    chapter.clear()
    chapter.send_keys("Floods & lag time")
    driver.find_element(By.ID, "summary-save").click()
    wait_for(lambda: driver.find_element(By.ID, "summary-title").text == "How rivers work",
             what="the saved title")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#summary-points li")) == 2
    assert driver.find_element(By.ID, "summary-state").text == "Saved."

    export = driver.find_element(By.ID, "summary-export").get_attribute("href")
    assert export.endswith(f"/jobs/{job_id}/artifacts/summary.edited.md")
    markdown = requests.get(export, headers={"X-API-Key": key}, timeout=10).text
    assert markdown.startswith("# How rivers work\n") and "Floods & lag time" in markdown

    driver.refresh()  # the edit is what the page shows from now on; the original is kept
    wait_for(lambda: driver.find_element(By.ID, "summary-title").text == "How rivers work",
             what="the edit after a reload")
    names = {a.text for a in driver.find_elements(By.CSS_SELECTOR, ".downloads a")}
    assert {"summary.json", "summary.edited.json", "summary.edited.md"} <= names
