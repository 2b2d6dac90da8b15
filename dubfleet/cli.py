"""`dubfleet`: submit videos to a coordinator, follow their jobs and download the results."""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from dubfleet.api import ApiError, DubfleetApi
from shared.protocol import JobKind, JobStatus

TERMINAL = {s.value for s in JobStatus if s.terminal}
KINDS = [k.value for k in JobKind]
STATUSES = [s.value for s in JobStatus]


def with_api(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --api-url/--api-key, pass a DubfleetApi, and turn API errors into clean exits."""
    @click.option("--api-key", envvar="DUBFLEET_API_KEY", required=True,
                  help="Client (dfc_...) or admin API key.")
    @click.option("--api-url", envvar="DUBFLEET_API_URL", required=True,
                  help="Coordinator base URL, e.g. http://127.0.0.1:8000.")
    @functools.wraps(fn)
    def wrapper(api_url: str, api_key: str, **kwargs: Any) -> Any:
        with DubfleetApi(api_url, api_key) as api:
            try:
                return fn(api, **kwargs)
            except ApiError as exc:
                raise click.ClickException(str(exc)) from exc
    return wrapper


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` pairs to a dict; values are JSON when they parse (numbers, booleans), else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def print_json(data: Any) -> None:
    """Pretty JSON on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def progress_line(view: dict) -> str:
    """One line: status, stage, progress, eta and message."""
    status = view.get("status", "?")
    parts = [status]
    if status == "queued" and view.get("queue_position"):
        parts.append(f"position {view['queue_position']}")
    if status != "running":
        return " ".join(parts)
    if view.get("stage"):
        parts.append(str(view["stage"]))
    if view.get("progress") is not None:
        parts.append(f"{float(view['progress']):.0f}%")
    if view.get("eta_seconds"):
        parts.append(f"eta {float(view['eta_seconds']):.0f}s")
    if view.get("message"):
        parts.append(f"- {view['message']}")
    return " ".join(parts)


def human_size(size: Any) -> str:
    """Bytes as a short human string."""
    value = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def describe(view: dict) -> list[str]:
    """The human form of a job view."""
    lines = [f"job {view.get('job_id')}  {view.get('kind')}  {progress_line(view)}",
             f"languages: {view.get('source_language')} -> {view.get('target_language')}"
             + (f" (detected {view['detected_language']})" if view.get("detected_language")
                else ""),
             f"attempts: {view.get('attempts')}/{view.get('max_attempts')}"
             + (f"  worker: {view['worker_id']}" if view.get("worker_id") else ""),
             f"input: {view.get('input_name') or '-'} ({human_size(view.get('input_size'))})",
             f"created: {view.get('created_at_iso') or view.get('created_at')}"]
    if view.get("error"):
        lines.append(f"error: {view['error']}")
    for art in view.get("artifacts") or []:
        main = " (main)" if art.get("name") == view.get("main_artifact") else ""
        lines.append(f"  artifact {art.get('name')}{main}  {human_size(art.get('size'))}")
    return lines


def wait_for(api: DubfleetApi, job_id: str, poll: float) -> dict:
    """Poll a job until it ends, showing progress on stderr; return the final view."""
    last, failures = "", 0
    while True:
        try:
            view = api.job(job_id)
            failures = 0
        except ApiError as exc:
            failures += 1
            if exc.status or failures > 30:
                raise
            time.sleep(poll)
            continue
        line = progress_line(view)
        if line != last:
            click.echo(line, err=True)
            last = line
        if view.get("status") in TERMINAL:
            return view
        time.sleep(poll)


def download_all(api: DubfleetApi, view: dict, out_dir: Path) -> list[Path]:
    """Download every listed artifact of a job (or the main one if none are listed)."""
    job_id = view["job_id"]
    artifacts = view.get("artifacts") or []
    if not artifacts:
        return [api.download(job_id, out_dir, filename=view.get("main_artifact"))]
    return [api.download(job_id, out_dir, name=a["name"], sha256=a.get("sha256"))
            for a in artifacts]


@click.group()
def main() -> None:
    """Submit videos to a dubfleet coordinator, follow their jobs and fetch the results."""


def _wait_options(job: str, reply: str) -> Callable:
    """The --wait/--output/--poll/--json options of a command that creates a job."""
    options = [
        click.option("--wait", is_flag=True, help=f"Follow {job} and download its results at the end."),
        click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                     show_default=True, help="Where --wait puts the results."),
        click.option("--poll", type=click.FloatRange(0.1), default=1.0, show_default=True,
                     help="Seconds between status checks with --wait."),
        click.option("--json", "as_json", is_flag=True, help=f"Print {reply} as JSON."),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


@main.command()
@click.argument("source")
@click.option("--kind", type=click.Choice(KINDS), default="dub", show_default=True,
              help="What to produce.")
@click.option("--to", "target_language", default="es", show_default=True,
              help="Target language (ISO 639-1).")
@click.option("--from", "source_language", default="auto", show_default=True,
              help="Source language (ISO 639-1) or auto.")
@click.option("--priority", type=click.IntRange(-100, 100), help="Higher runs first (default 0).")
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Job option (repeatable); values are parsed as JSON when possible.")
@click.option("--subtitles", "subtitles", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own subtitles (SRT or WebVTT, source or target language) for a dub: "
                   "recognition, and for target-language ones translation, is skipped.")
@click.option("--subtitles-language", help="Language of --subtitles (ISO 639-1); default: "
                                           "from a name like talk.es.srt, else guessed.")
@click.option("--asr-model", help="Speech recognition model to require.")
@click.option("--callback-url", help="URL POSTed the job view when the job ends.")
@click.option("--max-attempts", type=click.IntRange(1, 10), help="Attempts before failing.")
@click.option("--idempotency-key", help="Submitting again with the same key returns the same job.")
@_wait_options("the job", "the server's reply")
@with_api
def submit(api: DubfleetApi, source: str, option_pairs: tuple[str, ...], idempotency_key: str,
           wait: bool, output: Path, poll: float, as_json: bool, subtitles: Path | None,
           **fields: Any) -> None:
    """Submit SOURCE (a local file, streamed; or an http(s) URL the worker fetches).

    Prints the job id on stdout. With --subtitles a dub uses your subtitles' text and timings:
    `dubfleet submit talk.mp4 --subtitles talk.es.srt`.
    """
    fields["options"] = parse_options(option_pairs) or None
    path = Path(source)
    if fields.get("subtitles_language") and subtitles is None:
        raise click.BadParameter("needs --subtitles", param_hint="--subtitles-language")
    if subtitles is not None and not path.is_file():
        raise click.BadParameter("--subtitles needs SOURCE to be a local file", param_hint="--subtitles")
    if subtitles is not None:
        reply = api.submit_with_subtitles(path, subtitles, fields, idempotency_key)
    elif path.is_file():
        reply = api.submit_file(path, fields, idempotency_key)
    elif source.startswith(("http://", "https://")):
        reply = api.submit_url(source, fields, idempotency_key)
    else:
        raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    job_id = reply["job_id"]
    if as_json:
        print_json(reply)
    else:
        click.echo(job_id)
        click.echo(f"submitted: {reply.get('status')} (position {reply.get('queue_position')})",
                   err=True)
    if wait:
        _finish(api, job_id, output, poll)


def _finish(api: DubfleetApi, job_id: str, output: Path, poll: float) -> None:
    """Wait for the job; download its results or fail with its error."""
    try:
        view = wait_for(api, job_id, poll)
    except KeyboardInterrupt:
        raise click.ClickException(f"stopped waiting; the job goes on: dubfleet status {job_id}")
    if view["status"] != JobStatus.COMPLETED.value:
        raise click.ClickException(f"job {job_id} {view['status']}: {view.get('error') or '-'}")
    for path in download_all(api, view, output):
        click.echo(f"saved {path}", err=True)


def follow(api: DubfleetApi, job_id: str, as_json: bool, poll: float) -> None:
    """Print a line at every change of the job (live events) until it ends; fail unless it
    completed, like `submit --wait`."""
    last, data = "", {}
    try:
        for data in api.follow(job_id, poll):
            line = (json.dumps(data, sort_keys=True) if as_json
                    else progress_line({**data, "progress": float(data.get("progress") or 0) * 100}))
            if line != last:
                click.echo(line)
                last = line
    except KeyboardInterrupt:
        raise click.ClickException(f"stopped following; the job goes on: dubfleet status {job_id}")
    if data.get("status") != JobStatus.COMPLETED.value:
        raise click.ClickException(f"job {job_id} {data.get('status')}: {data.get('error') or '-'}")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job view as JSON (with --follow: "
                                                      "each event's data, one per line).")
@click.option("--follow", "follow_job", is_flag=True,
              help="Print a line at every change until the job ends (live events); exit 1 "
                   "unless it completed.")
@click.option("--poll", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="With --follow: seconds between status checks when live events are refused "
                   "(503), and before reconnecting a dropped stream.")
@with_api
def status(api: DubfleetApi, job_id: str, as_json: bool, follow_job: bool, poll: float) -> None:
    """Show a job's status, progress and artifacts (--follow: every change until it ends)."""
    if follow_job:
        follow(api, job_id, as_json, poll)
        return
    view = api.job(job_id)
    if as_json:
        print_json(view)
        return
    for line in describe(view):
        click.echo(line)


@main.command()
@click.argument("job_id")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory to save into.")
@click.option("--all", "all_artifacts", is_flag=True,
              help="Every artifact (also the partial ones of a running job), not just the main.")
@with_api
def download(api: DubfleetApi, job_id: str, output: Path, all_artifacts: bool) -> None:
    """Download a job's main result (or all its artifacts)."""
    view = api.job(job_id)
    if all_artifacts:
        paths = download_all(api, view, output)
    else:
        main_name = view.get("main_artifact")
        sha = next((a.get("sha256") for a in view.get("artifacts") or []
                    if a.get("name") == main_name), None)
        paths = [api.download(job_id, output, sha256=sha, filename=main_name)]
    for path in paths:
        click.echo(str(path))


@main.command()
@click.option("--status", "status_filter", type=click.Choice(STATUSES), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many jobs.")
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@with_api
def jobs(api: DubfleetApi, status_filter: str | None, limit: int, offset: int,
         as_json: bool) -> None:
    """List jobs, newest first."""
    page = api.jobs(status_filter, limit, offset)
    if as_json:
        print_json(page)
        return
    for view in page.get("jobs", []):
        click.echo(f"{view.get('job_id')}  {view.get('kind', ''):<10} {progress_line(view):<40}"
                   f"  {view.get('input_name') or ''}")
    click.echo(f"{len(page.get('jobs', []))} of {page.get('total')} job(s)", err=True)


def timestamp(seconds: Any) -> str:
    """12.5 -> "0:12.5"; 3725 -> "1:02:05.0"."""
    total = max(float(seconds or 0), 0.0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}" if hours
            else f"{int(minutes)}:{secs:04.1f}")


def highlighted(hit: dict) -> str:
    """The hit's snippet with its matches in bold (plain text when not on a terminal)."""
    text, out, at = hit.get("snippet") or "", [], 0
    for start, end in hit.get("highlights") or []:
        out += [text[at:start], click.style(text[start:end], bold=True)]
        at = end
    return "".join(out) + text[at:]


@main.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many results.")
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many.")
@click.option("--language", default=None, help="Only lines in this language (e.g. en).")
@click.option("--kind", type=click.Choice(["source", "translation"]), default=None,
              help="Only transcript (source) or translated lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@with_api
def search(api: DubfleetApi, query: str, limit: int, offset: int, language: str | None,
           kind: str | None, as_json: bool) -> None:
    """Search the transcripts and translations of your jobs: words, "a phrase", a or b,
    -excluded (a query that starts with - goes after --)."""
    page = api.search(query, limit, offset, language, kind)
    if as_json:
        print_json(page)
        return
    for hit in page.get("results", []):
        span = f"{timestamp(hit.get('start'))}-{timestamp(hit.get('end'))}"
        click.echo(f"{hit.get('job_id')}  {span:<17} {hit.get('kind', ''):<11} "
                   f"{hit.get('input_name') or ''}\n    {highlighted(hit)}")
    click.echo(f"{len(page.get('results', []))} of {page.get('total')} result(s)", err=True)


@main.command()
@click.argument("job_id")
@with_api
def cancel(api: DubfleetApi, job_id: str) -> None:
    """Cancel a job (a running one stops at its worker's next heartbeat)."""
    view = api.cancel(job_id)
    if view.get("status") == JobStatus.CANCELLED.value:
        click.echo(f"{job_id}: cancelled")
    else:
        click.echo(f"{job_id}: cancel requested ({view.get('status')})")


@main.command()
@click.argument("job_id")
@with_api
def retry(api: DubfleetApi, job_id: str) -> None:
    """Queue a failed or cancelled job again."""
    view = api.retry(job_id)
    click.echo(f"{job_id}: {view.get('status')}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@with_api
def queue(api: DubfleetApi, as_json: bool) -> None:
    """Show queue counters: queued, running, workers online, throughput."""
    info = api.queue_info()
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")


def read_edits(path: Path) -> list[dict]:
    """The edited lines of an edits file: {"segments": [...]} or the bare list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--edits") from None
    segments = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(segments, list) or not segments:
        raise click.BadParameter('expected {"segments": [{"index": 3, "text": "..."}, ...]}',
                                 param_hint="--edits")
    return segments


@main.command()
@click.argument("job_id")
@click.option("--edits", "edits_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='JSON file: {"segments": [{"index": 3, "text": "new line"}, '
                   '{"index": 7, "source_text": "corrected source, translated again"}]}.')
@click.option("--idempotency-key", help="Sending again with the same key returns the same job.")
@_wait_options("the re-dub", "the new job's view")
@with_api
def redub(api: DubfleetApi, job_id: str, edits_path: Path, idempotency_key: str | None,
          wait: bool, output: Path, poll: float, as_json: bool) -> None:
    """Correct lines of the completed dub JOB_ID: a new job re-voices only those lines and
    re-uses every other line's audio. Prints the new job's id on stdout.

    The indices are those of the dub's transcript.json / dub_report.json lines.
    """
    view = api.redub(job_id, read_edits(edits_path), idempotency_key)
    if as_json:
        print_json(view)
    else:
        click.echo(view["job_id"])
        click.echo(f"re-dub of {job_id}: {view.get('status')} "
                   f"(position {view.get('queue_position')})", err=True)
    if wait:
        _finish(api, view["job_id"], output, poll)


if __name__ == "__main__":
    sys.exit(main())
