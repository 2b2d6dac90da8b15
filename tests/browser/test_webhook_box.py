"""The job page's Webhook box in a real browser: a job with a callback_url to a receiver in this
test; the box appears when the job ends and follows the delivery (pending while the receiver
fails, then delivered) with its attempts and last reply."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import HandWorker, create_key, sign_in, wait_for
from tests.integration.procs import Api, Coordinator
from tests.integration.test_webhooks import receiver

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Private callbacks allowed (the receiver is on 127.0.0.1), quick retries, the page polls each second.
FAST = {"ALLOW_PRIVATE_CALLBACKS": "1", "WEBHOOK_BACKOFF_SECONDS": "0.3",
        "WEBHOOK_BACKOFF_CAP_SECONDS": "0.6", "WEBHOOK_POLL_SECONDS": "0.2",
        "WEBHOOK_MAX_ATTEMPTS": "30", "CALLBACK_TIMEOUT": "2", "WEB_POLL_SECONDS": "1"}
COLUMNS = ("event", "status", "attempts", "reply", "error", "updated")


@pytest.fixture
def hook():
    """A receiver that answers 503 until the test clears its `statuses`."""
    httpd = receiver(statuses=[503] * 1000)
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def coord(chromium, tmp_path):
    """A coordinator of its own: the hand worker claims exactly this test's job."""
    coordinator = Coordinator(tmp_path / "coord", env=FAST).start()
    yield coordinator
    coordinator.kill()


def _rows(driver) -> list[dict[str, str]]:
    """The Webhook box's rows, by column."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#webhook-rows tr")
    return [dict(zip(COLUMNS, (td.text for td in row.find_elements(By.TAG_NAME, "td"))))
            for row in rows]


def _row_when(driver, check) -> dict[str, str] | None:
    """The one delivery row once `check(row)` holds."""
    rows = _rows(driver)
    return rows[0] if len(rows) == 1 and check(rows[0]) else None


def test_webhook_box_follows_the_delivery(coord, hook, driver):
    key, _ = create_key(coord, "wes")
    job_id = Api(coord.url, key).submit_bytes(b"a talk", kind="dub", filename="talk.mp4",
                                              target_language="es",
                                              callback_url=hook.url)["job_id"]
    worker = HandWorker(coord.url)
    assert worker.claim()["job_id"] == job_id
    sign_in(driver, coord.url, key)
    driver.get(f"{coord.url}/app/jobs/{job_id}")
    wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "[data-field=stage]").is_displayed(),
             what="the running job's page")
    assert not driver.find_element(By.ID, "webhook").is_displayed()  # no delivery yet

    worker.upload(job_id, "result.txt", b"done", "text/plain", final=True)  # the page reloads
    failing = wait_for(lambda: _row_when(driver, lambda r: r["status"] == "pending"
                                         and int(r["attempts"]) >= 2), what="a retried delivery")
    assert failing["event"] == "job.completed"
    assert (failing["reply"], failing["error"]) == ("503", "HTTP 503")
    assert driver.find_element(By.ID, "webhook").is_displayed()
    assert driver.find_element(By.ID, "webhook-state").text.startswith("Delivering")

    with hook.lock:  # the receiver recovers: the next retry is delivered
        hook.statuses.clear()
    done = wait_for(lambda: _row_when(driver, lambda r: r["status"] == "delivered"),
                    what="the delivered row")
    with hook.lock:
        sent = len(hook.seen)
    assert int(done["attempts"]) == sent >= 3  # two refused tries, at least, then the good one
    assert (done["reply"], done["error"]) == ("200", "—")
    assert done["updated"] != "—"
    assert driver.find_element(By.ID, "webhook-state").text == ""
    rows = driver.find_element(By.ID, "webhook-rows")
    assert rows.find_element(By.TAG_NAME, "tr").get_attribute("class") == "delivery-delivered"
