"""The job page's summary in a real browser: shown (escaped), a chapter seeks the player, the owner
edits and saves it, the export link then gives the edited Markdown; a dub's translated summary has
its own tab, editor and export."""
from __future__ import annotations

import json

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import (HandWorker, create_key, make_video, screenshot, sign_in,
                                    wait_for)
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
SPANISH = {**SUMMARY, "title": "Ríos " + XSS, "language": "es",
           "key_points": [{"text": "La lluvia alimenta los ríos.", "start": 0.5, "end": 1.0},
                          {"text": "Las ciudades se inundan.", "start": 1.5, "end": 2.0},
                          {"text": "El retardo ayuda.", "start": 3.0, "end": 3.5}],
           "chapters": [{"start": 0.0, "end": 2.5, "title": "De dónde viene el agua"},
                        {"start": 2.5, "end": 4.0, "title": "Inundaciones"}]}


@pytest.fixture
def coord(chromium, tmp_path):
    """A coordinator of its own: the hand worker claims exactly this test's job."""
    coordinator = Coordinator(tmp_path / "coord").start()
    yield coordinator
    coordinator.kill()


def _dub_with_summaries(coord, tmp_path, key: str, translated: bool = False) -> str:
    """A completed dub whose hand worker left summary.json/.md (and summary.es.json/.md)."""
    video = make_video(tmp_path / "talk.mp4", 4.0)
    job_id = Api(coord.url, key).submit_bytes(video.read_bytes(), kind="dub", filename="talk.mp4",
                                              source_language="en", target_language="es")["job_id"]
    worker = HandWorker(coord.url)
    assert worker.claim()["job_id"] == job_id
    worker.upload(job_id, "summary.json", json.dumps(SUMMARY).encode(), "application/json")
    worker.upload(job_id, "summary.md", b"# Rivers\n", "text/markdown")
    if translated:
        worker.upload(job_id, "summary.es.json", json.dumps(SPANISH).encode(), "application/json")
        worker.upload(job_id, "summary.es.md", "# Ríos\n".encode(), "text/markdown")
    worker.upload(job_id, "dubbed_video.mp4", video.read_bytes(), "video/mp4", final=True)
    return job_id


def test_summary_shows_seeks_and_saves_an_edit(coord, driver, tmp_path):
    key, _ = create_key(coord, "sam")
    job_id = _dub_with_summaries(coord, tmp_path, key)

    sign_in(driver, coord.url, key)
    driver.get(f"{coord.url}/app/jobs/{job_id}")
    title = wait_for(lambda: driver.find_element(By.ID, "summary-title").text, what="the summary")
    assert title == SUMMARY["title"]  # shown as text, not markup
    points = driver.find_elements(By.CSS_SELECTOR, "#summary-points li")
    assert [p.text.split(" ", 1)[1] for p in points] == [p["text"] for p in SUMMARY["key_points"]]
    assert not driver.find_elements(By.CSS_SELECTOR, "#summary img")
    chapters = driver.find_elements(By.CSS_SELECTOR, "#summary-chapters li")
    assert [c.text for c in chapters] == ["0:00 Where water comes from", "0:02 Floods"]
    assert not driver.find_element(By.ID, "summary-tabs").is_displayed()  # one summary: no tabs

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


def _shown(driver) -> tuple[str, list[str]]:
    """The summary panel's title and key points as shown."""
    points = driver.find_elements(By.CSS_SELECTOR, "#summary-points li span")
    return driver.find_element(By.ID, "summary-title").text, [p.text for p in points]


def test_translated_summary_has_its_own_tab_edit_and_export(coord, driver, tmp_path):
    key, _ = create_key(coord, "ana")
    job_id = _dub_with_summaries(coord, tmp_path, key, translated=True)
    sign_in(driver, coord.url, key)
    driver.get(f"{coord.url}/app/jobs/{job_id}")
    wait_for(lambda: _shown(driver)[0] == SUMMARY["title"], what="the source summary")
    tabs = driver.find_elements(By.CSS_SELECTOR, "#summary-tabs [role=tab]")
    assert [t.text for t in tabs] == ["English (original)", "Spanish (translation)"]
    assert [t.get_attribute("aria-selected") for t in tabs] == ["true", "false"]

    tabs[0].send_keys(Keys.ARROW_RIGHT)  # the keyboard moves to the translation's tab
    wait_for(lambda: _shown(driver)[0] == SPANISH["title"], what="the translated summary")
    assert driver.switch_to.active_element == tabs[1]
    assert tabs[1].get_attribute("aria-selected") == "true"
    assert _shown(driver)[1] == [p["text"] for p in SPANISH["key_points"]]
    assert driver.find_element(By.ID, "summary-panel").get_attribute("lang") == "es"
    assert not driver.find_elements(By.CSS_SELECTOR, "#summary img")
    chapters = driver.find_elements(By.CSS_SELECTOR, "#summary-chapters li")
    assert [c.text for c in chapters] == ["0:00 De dónde viene el agua", "0:02 Inundaciones"]
    export = driver.find_element(By.ID, "summary-export").get_attribute("href")
    assert export.endswith("/summary.es.md")
    screenshot(driver, "summary_translated_tab")

    driver.find_element(By.ID, "summary-edit").click()
    field = driver.find_element(By.ID, "summary-title-input")
    field.clear()
    field.send_keys("Cómo funcionan los ríos")
    driver.find_element(By.ID, "summary-save").click()
    wait_for(lambda: _shown(driver)[0] == "Cómo funcionan los ríos", what="the saved translation")
    export = driver.find_element(By.ID, "summary-export").get_attribute("href")
    assert export.endswith(f"/jobs/{job_id}/artifacts/summary.es.edited.md")
    markdown = requests.get(export, headers={"X-API-Key": key}, timeout=10).content.decode()
    assert markdown.startswith("# Cómo funcionan los ríos\n") and "Inundaciones" in markdown

    tabs[0].click()  # the source summary is untouched, its export still the worker's
    wait_for(lambda: _shown(driver)[0] == SUMMARY["title"], what="the source summary again")
    assert driver.find_element(By.ID, "summary-export").get_attribute("href").endswith("/summary.md")
    driver.refresh()
    tab = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#summary-tabs [role=tab]")[1],
                   what="the tabs after a reload")
    tab.click()
    wait_for(lambda: _shown(driver)[0] == "Cómo funcionan los ríos", what="the edit after a reload")
    names = {a.text for a in driver.find_elements(By.CSS_SELECTOR, ".downloads a")}
    assert {"summary.es.json", "summary.es.edited.json", "summary.es.edited.md"} <= names
    assert "summary.edited.json" not in names
