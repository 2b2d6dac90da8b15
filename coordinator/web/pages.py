"""The pages: jobs list, upload, job (player, transcript, corrections), fleet, and 404s."""
from __future__ import annotations

from typing import Any

from flask import current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response

from shared.languages import LANGUAGES
from shared.protocol import JobKind, JobStatus, Routes
from shared.summary import ROUTE as SUMMARY_ROUTE
from shared.summary import SummaryFiles, translated_language

from .. import queries
from ..api.common import read_view, visible_job
from ..auth import session_principal
from ..extensions import db
from ..serializers import job_view, job_views
from ..workers import workers_online
from . import PREFIX, bp, listing
from .common import PageError, page, principal, signed_in

TERMINAL = tuple(s.value for s in JobStatus if s.terminal)
# Friendly names of the report's flags that a person acts on (the others are timing detail).
FLAG_LABELS = {"sped_up": "sped up", "shortened": "shortened", "overflow": "overflow",
               "mt_fallback": "translation fallback", "mt_retried": "translation retried",
               "tts_fallback": "voice fallback", "tts_failed": "voice failed", "tts_retried": "voice retried"}


@bp.get("/")
def root() -> Response:
    """The coordinator's address in a browser: the web app."""
    return redirect(url_for("web.jobs"))


@bp.get(f"{PREFIX}/")
def home() -> Response:
    """The web app's start page is the jobs list."""
    return redirect(url_for("web.jobs"))


def _settings() -> dict[str, Any]:
    """Settings the pages' scripts need."""
    return {"poll_seconds": float(current_app.config["WEB_POLL_SECONDS"])}


@bp.get(f"{PREFIX}/jobs")
@signed_in
@read_view
def jobs() -> Response:
    """The caller's jobs (an admin's: everyone's), filtered, sorted and paged from the URL."""
    filters = listing.Filters.from_args(request.args)
    owner = None if principal().is_admin else principal().key_id
    rows, total = listing.job_page(db.session, owner, filters)
    views = job_views(db.session, rows)
    pages = max(1, -(-total // listing.PER_PAGE))
    return page("jobs.html", jobs=views, total=total, filters=filters, pages=pages,
                statuses=[s.value for s in JobStatus], kinds=[k.value for k in JobKind],
                sorts=list(listing.SORTS), terminal=TERMINAL, settings=_settings())


@bp.get(f"{PREFIX}/upload")
@signed_in
def upload() -> Response:
    """Submit files or a URL."""
    kinds = [k.value for k in JobKind]
    return page("upload.html", kinds=kinds, languages=sorted(LANGUAGES.items(), key=lambda kv: kv[1]),
                submit_url=Routes.JOBS)


def _player(view: dict[str, Any], has_input: bool) -> dict[str, Any] | None:
    """What the video player needs: the dubbed video, the original's URL, the subtitle tracks."""
    artifacts = {a["name"]: a for a in view["artifacts"]}
    main = artifacts.get(view.get("main_artifact") or "")
    if view["status"] != JobStatus.COMPLETED.value or not main or \
            not main["content_type"].startswith("video/"):
        return None
    tracks = []
    for name, artifact in artifacts.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "subtitles" and parts[2] == "vtt":
            lang = parts[1]
            role = "dub" if lang == view["target_language"] else "original"
            tracks.append({"src": artifact["url"], "lang": lang, "default": role == "dub",
                           "label": f"{LANGUAGES.get(lang, lang)} ({role})"})
    original = Routes.fill(Routes.JOB_INPUT, job_id=view["job_id"]) if has_input else None
    return {"src": main["url"], "original": original, "tracks": tracks}


def _summary_tab(view: dict[str, Any], urls: dict[str, str], translation: str) -> dict[str, Any]:
    """One summary of the job page (the source's when `translation` is ""): what its tab loads,
    where an edit is saved and what *Export Markdown* downloads."""
    files = SummaryFiles.of(translation)
    source = view.get("detected_language") or view.get("source_language") or ""
    code = translation or (source if source in LANGUAGES else "")  # not "auto": unknown
    role = "translation" if translation else "original"
    label = f"{LANGUAGES.get(code, code)} ({role})" if code else "Original"
    save = Routes.fill(SUMMARY_ROUTE, job_id=view["job_id"])
    return {"language": code, "label": label,
            "url": urls.get(files.edited_json) or urls[files.json],
            "md_url": urls.get(files.edited_md) or urls.get(files.md) or "",
            "save_url": f"{save}?language={translation}" if translation else save,
            "export_url": Routes.fill(Routes.JOB_ARTIFACT, job_id=view["job_id"],
                                      name=files.edited_md)}


def _summaries(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's summaries: the source's first, then each translation's (`summary.<xx>.json`)."""
    urls = {a["name"]: a["url"] for a in view["artifacts"]}
    if SummaryFiles.of().json not in urls:
        return []
    translations = sorted(filter(None, map(translated_language, urls)))
    return [_summary_tab(view, urls, language) for language in ["", *translations]]


@bp.get(f"{PREFIX}/jobs/<job_id>")
@signed_in
@read_view
def job(job_id: str) -> Response:
    """One job: live progress, then the player, the transcript and its corrections."""
    row = visible_job(job_id, principal())
    view = job_view(db.session, row)
    has_input = row.input_size is not None and bool(row.input_sha256)
    artifacts = {a["name"]: a["url"] for a in view["artifacts"]}
    return page("job.html", job=view, player=_player(view, has_input), terminal=TERMINAL,
                transcript_url=artifacts.get("transcript.json"),
                report_url=artifacts.get("dub_report.json"), flag_labels=FLAG_LABELS,
                summaries=_summaries(view),
                redub_url=Routes.fill(Routes.JOB_REDUB, job_id=row.id),
                can_edit=view["status"] == JobStatus.COMPLETED.value and "dub_report.json" in artifacts,
                settings=_settings())


@bp.get(f"{PREFIX}/fleet")
@signed_in
@read_view
def fleet() -> Response:
    """Workers online and the queue's counters (admin keys)."""
    if not principal().is_admin:
        raise PageError(403, "Admins only", "The fleet page needs an admin key.")
    window = float(current_app.config["WORKER_ONLINE_SECONDS"])
    info = queries.queue_info(db.session)
    info["workers_online"] = workers_online(db.session, window)
    return page("fleet.html", workers=listing.fleet(db.session, window), info=info,
                window=int(window), settings=_settings())


@bp.route(f"{PREFIX}/<path:rest>", methods=["GET", "POST"])
def unknown(rest: str) -> Response:
    """Anything else under the web app: the friendly 404 page (with the menu when signed in)."""
    g.principal = session_principal(db.session, current_app.config)
    raise PageError(404, "Page not found", "")


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """Seconds as '45 s', '3 min 05 s' or '1 h 02 min' ('—' when unknown)."""
    if seconds is None or seconds < 0:
        return "—"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
