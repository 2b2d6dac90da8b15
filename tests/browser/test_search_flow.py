"""Search in a real browser: the header's search box, the results page (escaped, highlighted),
and a result opening the job page with the player and the transcript at that moment."""
from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import (HandWorker, create_key, job_id_from, make_video, screenshot,
                                    sign_in, wait_for)
from tests.integration.procs import Api

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LINES = [(0.0, "Hello and welcome."), (2.5, "The <b>lighthouse</b> keeper was running late."),
         (4.0, "Goodbye.")]


def _finished_dub(fleet, key: str, tmp_path) -> str:
    """A dub job of `key` completed by hand with a transcript and a 6 s video."""
    source = make_video(tmp_path / "talk.mp4", 6.0, tone=330)
    job_id = Api(fleet.url, key).submit_bytes(source.read_bytes(), kind="dub", filename="keeper.mp4",
                                              source_language="en", target_language="es")["job_id"]
    worker = HandWorker(fleet.url, session="search-hand")
    assert worker.claim()["job_id"] == job_id
    transcript = {"language": "en", "segments": [
        {"index": n, "start": start, "end": start + 1.0, "text": text}
        for n, (start, text) in enumerate(LINES)], "translation": None}
    worker.upload(job_id, "transcript.json", json.dumps(transcript).encode(), "application/json")
    worker.upload(job_id, "dubbed_video.mp4", make_video(tmp_path / "dub.mp4", 6.0).read_bytes(),
                  "video/mp4", final=True)
    return job_id


def test_search_box_results_and_the_job_at_that_moment(fleet, driver, tmp_path):
    key, _ = create_key(fleet, "sam")
    other, _ = create_key(fleet, "olga")
    job_id = _finished_dub(fleet, key, tmp_path)
    sign_in(driver, fleet.url, other)  # another client finds nothing of it
    box = driver.find_element(By.ID, "header-search")
    box.send_keys("lighthouse", Keys.ENTER)
    wait_for(lambda: driver.find_element(By.ID, "no-results"), what="no results for another key")
    driver.delete_all_cookies()

    sign_in(driver, fleet.url, key)
    box = driver.find_element(By.ID, "header-search")
    assert box.get_attribute("placeholder") and driver.find_element(
        By.CSS_SELECTOR, 'label[for="header-search"]')
    box.send_keys("run lighthouse", Keys.ENTER)
    result = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#search-results a.result"),
                      what="a result")
    marks = [m.text for m in result.find_elements(By.TAG_NAME, "mark")]
    assert marks == ["lighthouse", "running"]
    assert "<b>" in result.find_element(By.CSS_SELECTOR, ".snippet").text  # text, not markup
    assert not result.find_elements(By.CSS_SELECTOR, ".snippet b")
    screenshot(driver, "search_results")

    result.send_keys(Keys.ENTER)  # keyboard: the result is a focusable link
    wait_for(lambda: job_id_from(driver.current_url) == job_id and "t=2.5" in driver.current_url,
             what="the job page at 2.5 s")
    at = wait_for(lambda: driver.execute_script(
        "const v = document.getElementById('player');"
        "return v && v.readyState >= 1 && v.currentTime > 0 ? v.currentTime : null;"),
        what="the player at the moment")
    assert abs(at - 2.5) < 0.3
    marked = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#transcript tr.moment"),
                      what="the transcript line of the moment")
    assert marked.get_attribute("data-index") == "1" and marked.get_attribute("aria-current") == "true"
    screenshot(driver, "search_job_moment")
