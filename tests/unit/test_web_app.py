"""The web app on the Flask test client: signing in (key, one-time link), session auth of the JSON
API with its CSRF rule, expiry and revocation, cookie flags, HTML error pages, escaping, the
input download, and the pages' filters."""
from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from coordinator.auth import revoke_key
from coordinator.extensions import db
from coordinator.models import ApiKey, Job

CSRF_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


def form_token(client, path: str = "/app/sign-in") -> str:
    """The CSRF token of the form on `path`."""
    return CSRF_FORM.search(client.get(path).text).group(1)


def sign_in(client, key: str) -> str:
    """Sign `client` in with `key`; returns the page's CSRF token for API calls."""
    reply = client.post("/app/sign-in", data={"csrf_token": form_token(client), "api_key": key})
    assert reply.status_code == 302, reply.text
    return CSRF_META.search(client.get("/app/jobs").text).group(1)


def submit(client, headers: dict | None = None, name: str = "talk.mp4", kind: str = "echo"):
    """POST /jobs with a raw body."""
    return client.post("/jobs", data=b"video bytes", headers={"Content-Type": "application/octet-stream",
                                                             **(headers or {})},
                       query_string={"kind": kind, "filename": name})


@pytest.fixture
def key(make_key) -> str:
    return make_key("client", "alice")


def test_root_and_pages_redirect_to_sign_in_without_a_session(client):
    assert client.get("/").headers["Location"] == "/app/jobs"
    reply = client.get("/app/jobs?status=queued")
    assert reply.status_code == 302
    assert reply.headers["Location"].startswith("/app/sign-in?next=")
    for path in ("/app/upload", "/app/fleet", "/app/jobs/" + "a" * 32):
        assert client.get(path).headers["Location"].startswith("/app/sign-in")


def test_sign_in_with_key_then_pages_and_sign_out(client, key):
    reply = client.post("/app/sign-in", data={"csrf_token": form_token(client), "api_key": key,
                                              "next": "/app/upload"})
    assert reply.status_code == 302 and reply.headers["Location"] == "/app/upload"
    page = client.get("/app/jobs")
    assert page.status_code == 200 and "alice" in page.text and key not in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/app/upload").status_code == 200
    token = CSRF_FORM.search(page.text).group(1)
    out = client.post("/app/sign-out", data={"csrf_token": token})
    assert out.headers["Location"].startswith("/app/sign-in")
    assert client.get("/app/jobs").status_code == 302
    assert client.get("/jobs").status_code == 401


def test_wrong_key_worker_key_and_missing_form_token(client, make_key):
    assert client.post("/app/sign-in", data={"csrf_token": form_token(client),
                                             "api_key": "dfc_nope"}).status_code == 401
    worker = make_key("worker")
    reply = client.post("/app/sign-in", data={"csrf_token": form_token(client), "api_key": worker})
    assert reply.status_code == 403 and "worker key" in reply.text
    reply = client.post("/app/sign-in", data={"api_key": worker})
    assert reply.status_code == 403 and reply.mimetype == "text/html"
    assert client.get("/app/jobs").status_code == 302  # none of these signed in


@pytest.mark.parametrize("target", ["https://evil.example/app/jobs", "//evil.example/app/x",
                                    "/jobs", "/app\\..\\x", "javascript:alert(1)"])
def test_next_never_leaves_the_web_app(client, key, target):
    reply = client.post("/app/sign-in", data={"csrf_token": form_token(client), "api_key": key,
                                              "next": target})
    assert reply.headers["Location"] == "/app/jobs"


def test_session_calls_the_api_and_needs_csrf_for_changes(client, key):
    csrf = sign_in(client, key)
    assert client.get("/jobs").status_code == 200
    refused = submit(client)
    assert refused.status_code == 403 and refused.json["error"] == "forbidden"
    assert "X-CSRF-Token" in refused.json["message"]
    assert submit(client, {"X-CSRF-Token": "wrong"}).status_code == 403
    job_id = submit(client, {"X-CSRF-Token": csrf}).json["job_id"]
    assert client.delete(f"/jobs/{job_id}").status_code == 403
    assert client.get(f"/jobs/{job_id}").json["status"] == "queued"
    assert client.delete(f"/jobs/{job_id}", headers={"X-CSRF-Token": csrf}).json["status"] == "cancelled"


def test_api_key_requests_ignore_the_session(client, key, make_key):
    """An X-API-Key request is exactly what it was: the key decides, no CSRF header needed."""
    other = make_key("client", "bob")
    sign_in(client, key)
    reply = submit(client, {"X-API-Key": other})
    assert reply.status_code == 202
    job_id = reply.json["job_id"]
    assert client.get(f"/jobs/{job_id}").status_code == 404  # the session (alice) cannot see it
    assert client.get(f"/jobs/{job_id}", headers={"X-API-Key": other}).status_code == 200
    assert client.get("/jobs", headers={"X-API-Key": "dfc_bad"}).status_code == 401


def test_revoked_key_signs_the_browser_out_at_once(app, client, key):
    sign_in(client, key)
    with app.app_context():
        row = db.session.scalar(db.select(ApiKey).where(ApiKey.name == "alice"))
        assert revoke_key(db.session, row.id)
    assert client.get("/jobs").status_code == 401
    assert client.get("/app/jobs").headers["Location"].startswith("/app/sign-in")


def test_sign_in_expires_after_the_session_lifetime(app_factory, monkeypatch):
    app = app_factory(WEB_SESSION_HOURS=1.0)
    from coordinator.auth import create_key
    from shared.protocol import KeyKind
    with app.app_context():
        _, plain = create_key(db.session, KeyKind.CLIENT, "carol")
    client = app.test_client()
    sign_in(client, plain)
    later = time.time() + 3601
    monkeypatch.setattr("coordinator.auth.time.time", lambda: later)
    assert client.get("/app/jobs").status_code == 302
    assert client.get("/jobs").status_code == 401


def test_cookie_flags_and_secure_behind_https(app, client, key):
    reply = client.get("/app/sign-in")
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    token = CSRF_FORM.search(reply.text).group(1)
    signed = client.post("/app/sign-in", data={"csrf_token": token, "api_key": key},
                         headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in signed.headers["Set-Cookie"] and "Expires=" in signed.headers["Set-Cookie"]
    fresh = app.test_client()
    assert "Secure" in fresh.get("/app/sign-in", base_url="https://localhost").headers["Set-Cookie"]


def test_api_key_replies_set_no_cookie(client, key):
    reply = client.get("/jobs", headers={"X-API-Key": key})
    assert reply.status_code == 200 and "Set-Cookie" not in reply.headers


def test_secret_key_is_generated_once_and_kept(app_factory, tmp_path):
    first = app_factory(DATA_DIR=str(tmp_path / "same"))
    second = app_factory(DATA_DIR=str(tmp_path / "same"))
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert (tmp_path / "same" / "secret_key").stat().st_mode & 0o077 == 0
    assert app_factory(SECRET_KEY="s" * 32).secret_key == "s" * 32


@pytest.mark.parametrize("bad", [{"SESSION_COOKIE_SECURE_MODE": "maybe"}, {"WEB_SESSION_HOURS": 0},
                                 {"SIGN_IN_LINK_MINUTES": -1}, {"SECRET_KEY": "short"}])
def test_bad_web_settings_are_refused(app_factory, bad):
    with pytest.raises(ValueError):
        app_factory(**bad)


def test_sign_in_link_works_once(app, client):
    runner = CliRunner()
    from coordinator.cli import main
    out = runner.invoke(main, ["create-key", "--kind", "client", "--name", "dana", "--sign-in-link",
                               "--url", "http://example.test:9000", "--data-dir", app.config["DATA_DIR"]],
                        catch_exceptions=False)
    key, link = out.stdout.split()[:2]
    assert link.startswith("http://example.test:9000/app/sign-in/") and key not in link
    path = link.removeprefix("http://example.test:9000")
    page = client.get(path)  # a GET (link preview) does not spend it
    assert page.status_code == 200 and client.get(path).status_code == 200
    token = CSRF_FORM.search(page.text).group(1)
    assert client.post(path, data={"csrf_token": token}).headers["Location"] == "/app/jobs"
    assert "dana" in client.get("/app/jobs").text
    other = app.test_client()
    assert other.get(path).status_code == 410
    assert other.post(path, data={"csrf_token": form_token(other)}).status_code in (403, 410)


def test_sign_in_link_expires_and_dies_with_its_key(app, client, key):
    from coordinator.web import tokens
    with app.app_context():
        row = db.session.scalar(db.select(ApiKey).where(ApiKey.name == "alice"))
        old = tokens.create_token(db.session, row.id, 60, now=time.time() - 120)
        fresh = tokens.create_token(db.session, row.id, 60)
        revoke_key(db.session, row.id)
    assert client.get(f"/app/sign-in/{old}").status_code == 410
    token = form_token(client)
    assert client.post(f"/app/sign-in/{fresh}", data={"csrf_token": token}).status_code == 410
    assert client.get("/app/jobs").status_code == 302


def test_cli_sign_in_link_for_existing_key(app, key):
    from coordinator.cli import main
    runner = CliRunner()
    base = ["--data-dir", app.config["DATA_DIR"]]
    ok = runner.invoke(main, ["sign-in-link", "--id", "1", *base], catch_exceptions=False)
    assert ok.exit_code == 0 and "/app/sign-in/" in ok.stdout
    bad = runner.invoke(main, ["create-key", "--kind", "worker", "--name", "w", "--sign-in-link", *base])
    assert bad.exit_code == 2
    assert runner.invoke(main, ["sign-in-link", "--id", "99", *base]).exit_code == 1


def test_env_admin_key_signs_in_and_a_changed_key_signs_out(app_factory):
    app = app_factory(ADMIN_API_KEY="dfa_env_admin_key_0123456789")
    client = app.test_client()
    sign_in(client, "dfa_env_admin_key_0123456789")
    assert client.get("/app/fleet").status_code == 200
    app.config["ADMIN_API_KEY"] = "dfa_rotated_key_0123456789"
    assert client.get("/app/fleet").status_code == 302


def test_error_pages_are_html_and_the_api_stays_json(client, key, make_key):
    other = make_key("client", "bob")
    theirs = submit(client, {"X-API-Key": other}).json["job_id"]
    sign_in(client, key)
    for path in (f"/app/jobs/{theirs}", "/app/jobs/nope", "/app/no/such/page"):
        reply = client.get(path)
        assert reply.status_code == 404 and reply.mimetype == "text/html", path
        assert "Page not found" in reply.text and theirs not in reply.text
    fleet = client.get("/app/fleet")
    assert fleet.status_code == 403 and fleet.mimetype == "text/html"
    api = client.get(f"/jobs/{theirs}")
    assert api.status_code == 404 and api.json["error"] == "not_found"
    assert client.get("/no/such/route").json["error"] == "not_found"


def test_everything_shown_is_escaped(app, client, key):
    csrf = sign_in(client, key)
    job_id = submit(client, {"X-CSRF-Token": csrf}).json["job_id"]
    with app.app_context():
        job = db.session.get(Job, job_id)
        job.message = "<script>alert(1)</script>"
        job.input_name = '<img src=x onerror="alert(2)">'
        db.session.commit()
    for path in (f"/app/jobs/{job_id}", "/app/jobs"):
        html = client.get(path).text
        assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/app/jobs/{job_id}").text


def test_owner_downloads_the_input_others_get_404(client, key, make_key):
    csrf = sign_in(client, key)
    job_id = submit(client, {"X-CSRF-Token": csrf}).json["job_id"]
    reply = client.get(f"/jobs/{job_id}/input")
    assert reply.status_code == 200 and reply.data == b"video bytes"
    assert reply.mimetype == "video/mp4" and "attachment" in reply.headers["Content-Disposition"]
    assert client.get(f"/jobs/{job_id}/input", headers={"X-API-Key": make_key("client", "bob")}).status_code == 404
    url_job = client.post("/jobs", json={"source_url": "https://example.org/v.mp4", "kind": "echo"},
                          headers={"X-CSRF-Token": csrf}).json["job_id"]
    assert client.get(f"/jobs/{url_job}/input").status_code == 404
    html_name = submit(client, {"X-CSRF-Token": csrf}, name="page.html").json["job_id"]
    assert client.get(f"/jobs/{html_name}/input").mimetype == "application/octet-stream"


def test_jobs_list_filters_sort_and_pages(client, key):
    csrf = sign_in(client, key)
    ids = [submit(client, {"X-CSRF-Token": csrf}, name=f"clip{i:02d}.mp4").json["job_id"] for i in range(27)]
    submit(client, {"X-CSRF-Token": csrf}, name="dubme.mp4", kind="dub")
    client.delete(f"/jobs/{ids[0]}", headers={"X-CSRF-Token": csrf})
    first = client.get("/app/jobs").text
    assert "dubme.mp4" in first and "Page 1 of 2" in first and "clip00.mp4" not in first
    assert "clip00.mp4" in client.get("/app/jobs?page=2").text
    oldest = client.get("/app/jobs?sort=oldest").text
    assert oldest.index("clip00.mp4") < oldest.index("clip01.mp4")
    cancelled = client.get("/app/jobs?status=cancelled").text
    assert "clip00.mp4" in cancelled and "clip01.mp4" not in cancelled
    dubs = client.get("/app/jobs?kind=dub").text
    assert "dubme.mp4" in dubs and "clip05.mp4" not in dubs and "no online worker can run" in dubs
    assert client.get("/app/jobs?status=bogus&page=-3&sort=x").status_code == 200


def test_fleet_page_for_admins(client, make_key, app):
    from shared.protocol import WorkerInfo
    from coordinator.state import get_state
    with app.app_context():
        get_state(app).workers.touch(db.session, "s1", WorkerInfo(worker_id="gpu-box", session_id="s1",
                                                                  device="cuda", kinds=("dub",)))
    sign_in(client, make_key("admin"))
    html = client.get("/app/fleet").text
    assert "gpu-box" in html and "cuda" in html and "idle" in html
