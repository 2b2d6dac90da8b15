"""Signed webhooks: signatures, sealed secrets, the backoff schedule, once per terminal state,
and the delivery loop's bookkeeping (with a fake sender; the real HTTP path is in
tests/integration/test_webhooks.py)."""
from __future__ import annotations

import json

import pytest

from coordinator import jobs, webhook_secrets, webhooks
from coordinator.auth import create_key
from coordinator.callbacks import Outcome
from coordinator.extensions import db
from coordinator.models import WebhookDelivery
from coordinator.state import get_state
from coordinator.validation import NewJob
from shared.protocol import KeyKind
from shared.webhooks import BadSignature, parse, sign, verify

SECRET = "whsec_test_secret"
BODY = b'{"job_id":"abc","status":"completed"}'
T = 1_800_000_000


# --- signatures -----------------------------------------------------------------------------

def test_signature_format_and_round_trip():
    header = sign(SECRET, BODY, T)
    t, v1 = header.split(",")
    assert t == f"t={T}" and v1.startswith("v1=") and len(v1) == 3 + 64
    assert parse(header) == (T, [v1[3:]])
    assert verify(SECRET, header, BODY, now=T + 10) == T


@pytest.mark.parametrize("secret, body, now", [
    ("whsec_other", BODY, T),  # wrong secret
    (SECRET, BODY + b" ", T),  # tampered body
    (SECRET, BODY, T + 301),  # stale: outside the 5-minute tolerance
    (SECRET, BODY, T - 301),  # from the future
])
def test_verify_refuses(secret, body, now):
    with pytest.raises(BadSignature):
        verify(secret, sign(SECRET, BODY, T), body, now=now)


@pytest.mark.parametrize("header", ["", "v1=abc", f"t={T}", "t=x,v1=abc", "nonsense"])
def test_malformed_headers_are_refused(header):
    with pytest.raises(BadSignature):
        verify(SECRET, header, BODY, now=T)


# --- sealed secrets ---------------------------------------------------------------------------

def test_sealed_secret_opens_only_with_its_secret_key():
    sealed = webhook_secrets.seal("k" * 32, SECRET)
    assert SECRET not in sealed and sealed != webhook_secrets.seal("k" * 32, SECRET)  # random nonce
    assert webhook_secrets.unseal("k" * 32, sealed) == SECRET
    with pytest.raises(webhook_secrets.SecretUnreadable):
        webhook_secrets.unseal("j" * 32, sealed)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(webhook_secrets.SecretUnreadable):
        webhook_secrets.unseal("k" * 32, tampered)
    with pytest.raises(webhook_secrets.SecretUnreadable):
        webhook_secrets.unseal("k" * 32, "v1:!!")


# --- backoff ------------------------------------------------------------------------------------

def test_backoff_doubles_with_jitter_and_is_capped():
    for attempts in range(1, 40):
        full = min(600.0, 10.0 * 2 ** (attempts - 1))
        low = webhooks.backoff(attempts, 10.0, 600.0, rand=lambda: 0.0)
        high = webhooks.backoff(attempts, 10.0, 600.0, rand=lambda: 1.0)
        assert low == full / 2 and high == full <= 600.0
    assert [webhooks.backoff(n, 10.0, 600.0, rand=lambda: 1.0) for n in (1, 2, 3)] == [10, 20, 40]


SETTINGS = webhooks.WebhookSettings(timeout=5, max_attempts=3, backoff=1, backoff_cap=10,
                                    concurrency=2, poll=1, allow_private=True)


def test_outcomes_map_to_delivered_retry_and_failed():
    done = webhooks._outcome_values(Outcome(True, 204), 1, SETTINGS, 100.0)
    assert done["status"] == "delivered" and done["delivered_at"] == 100.0
    retry = webhooks._outcome_values(Outcome(False, 500, "HTTP 500"), 2, SETTINGS, 100.0)
    assert "status" not in retry and 100.0 + 1 <= retry["next_attempt_at"] <= 100.0 + 2
    last = webhooks._outcome_values(Outcome(False, 500, "HTTP 500"), 3, SETTINGS, 100.0)
    assert last["status"] == "failed" and last["last_error"] == "HTTP 500"
    refused = webhooks._outcome_values(Outcome(False, error="refused", final=True), 1, SETTINGS, 1.0)
    assert refused["status"] == "failed"


# --- rows and the loop (a real SQLite app, a fake sender) -------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def hook_app(request, app_factory, pg_app_factory):
    """An app that records deliveries (callbacks on, private addresses allowed), on SQLite and
    on PostgreSQL (skipped when the test server is unreachable)."""
    settings = {"CALLBACKS_ENABLED": True, "ALLOW_PRIVATE_CALLBACKS": True,
                "WEBHOOK_MAX_ATTEMPTS": 3, "WEBHOOK_BACKOFF_SECONDS": 0.0}
    return (app_factory if request.param == "sqlite" else pg_app_factory)(**settings)


def _job_with_key(app) -> tuple[str, str, str]:
    """A queued job with a callback_url owned by a client key that has a secret: (job id,
    secret, key)."""
    with app.app_context():
        row, plain = create_key(db.session, KeyKind.CLIENT, "alice")
        secret = webhook_secrets.rotate(db.session, row.id, app.config["SECRET_KEY"])
        job, _ = jobs.submit(db.session, NewJob(kind="echo", callback_url="http://127.0.0.1:9/h"),
                             owner_key_id=row.id, input_size=3, input_sha256="0" * 64)
        job_id = job.id
        db.session.remove()
    return job_id, secret, plain


def _rows(app, job_id: str) -> list[WebhookDelivery]:
    with app.app_context():
        rows = list(db.session.scalars(db.select(WebhookDelivery).filter_by(job_id=job_id)
                                       .order_by(WebhookDelivery.created_at)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def test_each_terminal_state_is_recorded_once(hook_app):
    job_id, _, _ = _job_with_key(hook_app)
    events = get_state(hook_app).events
    with hook_app.app_context():
        jobs.cancel(db.session, job_id, events=events)
        get_state(hook_app).callbacks.stage(db.session, job_id, "http://127.0.0.1:9/h", "cancelled")
        db.session.commit()  # a repeat of the same ending adds nothing
        assert len(_rows(hook_app, job_id)) == 1
        jobs.retry(db.session, job_id, events=events, now=2e9)
        jobs.cancel(db.session, job_id, events=events, now=2e9 + 1)  # ends again: a new state
        db.session.remove()
    rows = _rows(hook_app, job_id)
    assert [(r.event, r.status, r.attempts) for r in rows] == [("job.cancelled", "pending", 0)] * 2
    assert len({r.id for r in rows}) == 2 and rows[1].finished_at == 2e9 + 1
    assert json.loads(rows[0].payload)["status"] == "cancelled"


class _DiesAfterCommit:
    """The app's events, but the process "dies" right after each commit: nothing after it runs."""

    def __init__(self, events):
        self.events = events

    def job_ending(self, session, job_id, callback_url, status):
        self.events.job_ending(session, job_id, callback_url, status)

    def job_available(self, *args):
        raise SystemExit("killed after the commit")

    job_changed = job_finished = job_available


def _running(app, job_id: str) -> str:
    """Claim the job for a worker; its lease token."""
    from shared.protocol import WorkerInfo
    with app.app_context():
        claimed = jobs.claim_specific(db.session, job_id, WorkerInfo(worker_id="w", session_id="s"),
                                      get_state(app).policy)
        db.session.remove()
    return claimed.lease_token


def test_ending_and_its_delivery_commit_together(hook_app):
    """A crash right after a terminal commit cannot lose the delivery: the row is written by
    the ending's own transaction, not by a hook after it."""
    job_id, _, _ = _job_with_key(hook_app)
    token = _running(hook_app, job_id)
    dying = _DiesAfterCommit(get_state(hook_app).events)
    with hook_app.app_context():
        with pytest.raises(SystemExit):
            jobs.fail(db.session, job_id, token, "boom", False, get_state(hook_app).policy, events=dying)
        db.session.remove()
    rows = _rows(hook_app, job_id)
    assert [(r.event, r.status) for r in rows] == [("job.failed", "pending")]
    assert json.loads(rows[0].payload)["status"] == "failed"


def test_a_completing_upload_commits_its_delivery_with_it(hook_app):
    """A job with a callback_url completed by its final upload takes the ORM session's path, so
    the delivery row commits in the completing transaction (a crash right after loses nothing)."""
    from shared.protocol import ArtifactInfo
    job_id, _, _ = _job_with_key(hook_app)
    token = _running(hook_app, job_id)
    dying = _DiesAfterCommit(get_state(hook_app).events)
    info = ArtifactInfo(name="result", size=3, sha256="1" * 64, content_type="text/plain", attempt=1)
    with hook_app.app_context():
        with pytest.raises(SystemExit):
            jobs.add_artifact(db.session, job_id, token, info, lambda: f"artifacts/{job_id}/a1/result~x",
                              final=True, events=dying)
        db.session.remove()
        assert db.session.get(jobs.Job, job_id).status == "completed"
        db.session.remove()
    rows = _rows(hook_app, job_id)
    assert [(r.event, r.status) for r in rows] == [("job.completed", "pending")]


def test_a_delivery_that_cannot_be_written_rolls_the_ending_back(hook_app, monkeypatch):
    job_id, _, _ = _job_with_key(hook_app)
    token = _running(hook_app, job_id)

    def broken_view(session, job):
        raise RuntimeError("view failed")

    monkeypatch.setattr(get_state(hook_app).callbacks, "build_view", broken_view)
    with hook_app.app_context():
        with pytest.raises(RuntimeError):
            jobs.fail(db.session, job_id, token, "boom", False, get_state(hook_app).policy,
                      events=get_state(hook_app).events)
        db.session.remove()
        assert db.session.get(jobs.Job, job_id).status == "running"  # neither committed
        db.session.remove()
    assert _rows(hook_app, job_id) == []


def test_loop_retries_then_delivers_signed(hook_app, monkeypatch):
    job_id, secret, _ = _job_with_key(hook_app)
    with hook_app.app_context():
        jobs.cancel(db.session, job_id, events=get_state(hook_app).events)
        db.session.remove()
    sent: list[tuple[str, str, str | None]] = []
    replies = iter([Outcome(False, 500, "HTTP 500"), Outcome(True, 200)])

    def fake_post(guard, url, delivery_id, event, body, secret_, timeout):
        sent.append((delivery_id, event, secret_))
        return next(replies)

    monkeypatch.setattr(webhooks, "post_delivery", fake_post)
    loop = webhooks.DeliveryLoop(hook_app, get_state(hook_app).callbacks.wake,
                                 webhooks.WebhookSettings.from_config(hook_app.config))
    try:
        assert loop.run_once() == 1 and loop.run_once() == 1 and loop.run_once() == 0
    finally:
        loop._pool.shutdown()
    [row] = _rows(hook_app, job_id)
    assert (row.status, row.attempts, row.last_http_status, row.signed) == ("delivered", 2, 200, True)
    assert sent == [(row.id, "job.cancelled", secret)] * 2


def test_loop_gives_up_after_max_attempts(hook_app, monkeypatch):
    job_id, _, _ = _job_with_key(hook_app)
    with hook_app.app_context():
        jobs.cancel(db.session, job_id, events=get_state(hook_app).events)
        db.session.remove()
    monkeypatch.setattr(webhooks, "post_delivery",
                        lambda *a: Outcome(False, error="ConnectionError: refused"))
    loop = webhooks.DeliveryLoop(hook_app, get_state(hook_app).callbacks.wake,
                                 webhooks.WebhookSettings.from_config(hook_app.config))
    try:
        assert [loop.run_once() for _ in range(5)] == [1, 1, 1, 0, 0]
    finally:
        loop._pool.shutdown()
    [row] = _rows(hook_app, job_id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "ConnectionError: refused")


def test_rotate_replaces_the_secret(hook_app):
    with hook_app.app_context():
        row, _ = create_key(db.session, KeyKind.CLIENT, "bob")
        key = hook_app.config["SECRET_KEY"]
        assert webhook_secrets.secret_of(db.session, row.id, key) is None
        first = webhook_secrets.rotate(db.session, row.id, key)
        second = webhook_secrets.rotate(db.session, row.id, key)
        assert first != second and webhook_secrets.secret_of(db.session, row.id, key) == second
        assert webhook_secrets.rotate(db.session, 9999, key) is None
        db.session.remove()


# --- the API and the job page -----------------------------------------------------------------------

def test_delivery_log_api_and_job_page_box(hook_app):
    from tests.unit.test_web_app import sign_in
    job_id, _, owner_key = _job_with_key(hook_app)
    with hook_app.app_context():
        jobs.cancel(db.session, job_id, events=get_state(hook_app).events)
        _, other_key = create_key(db.session, KeyKind.CLIENT, "mallory")
        db.session.remove()
    client = hook_app.test_client()
    assert client.get(f"/jobs/{job_id}/deliveries", headers={"X-API-Key": other_key}).status_code == 404
    reply = client.get(f"/jobs/{job_id}/deliveries", headers={"X-API-Key": owner_key})
    assert reply.status_code == 200 and reply.json["job_id"] == job_id
    [entry] = reply.json["deliveries"]
    assert (entry["event"], entry["status"], entry["attempts"]) == ("job.cancelled", "pending", 0)
    assert "payload" not in entry
    sign_in(client, owner_key)
    page = client.get(f"/app/jobs/{job_id}").text
    assert 'id="webhook"' in page and f'data-deliveries-url="/jobs/{job_id}/deliveries"' in page
    script = client.get("/app/static/webhooks.js").text
    assert "textContent" in script and "innerHTML" not in script


def test_cli_prints_the_secret_once_and_rotates_it(tmp_path):
    from click.testing import CliRunner

    from coordinator.cli import main
    data_dir = str(tmp_path / "data")

    def run(*args: str):
        result = CliRunner().invoke(main, [args[0], "--data-dir", data_dir, *args[1:]],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout.split()

    key, secret = run("create-key", "--kind", "client", "--name", "alice")
    assert key.startswith("dfc_") and secret.startswith("whsec_")
    assert run("create-key", "--kind", "worker", "--name", "w")[1:] == []  # workers own no jobs
    listing = " ".join(run("list-keys"))
    assert secret not in listing and "no webhook secret" not in listing
    [new] = run("rotate-webhook-secret", "--id", "1")
    assert new.startswith("whsec_") and new != secret
    failed = CliRunner().invoke(main, ["rotate-webhook-secret", "--data-dir", data_dir, "--id", "2"])
    assert failed.exit_code != 0 and "no active client or admin key" in failed.output
