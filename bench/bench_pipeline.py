"""Media pipeline benchmark: a ~5-minute English talk dubbed into Spanish, in one process.

Run on demand: `.venv/bin/python bench/bench_pipeline.py [--sentences N] [--asr-model base]`.
Jobs 1-2 are `dub` en→es with overlap (1 pays the model loads, 2 is warm), job 3 is `dub` with
overlap off and job 4 `transcribe` alone (both warm); then each stage is timed on its own.
The talk (bench/talk_sentences.txt) is spoken once by Piper and cached under bench/results/media/.
Figures are printed and written to bench/results/pipeline.json.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.protocol import ClaimedJob, Stage  # noqa: E402
from worker.context import OutputFile  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MEDIA = RESULTS / "media"
PAUSE = 1.15  # seconds of silence between sentences

# the talk: one sentence a line (lecture-style English, ~60 sentences)
SENTENCES = tuple(line.strip() for line in (ROOT / "bench" / "talk_sentences.txt")
                  .read_text(encoding="utf-8").splitlines() if line.strip())


@dataclass
class BenchContext:
    """A JobContext that only records: stages and progress are kept, check() never raises."""

    job: ClaimedJob
    work_dir: Path
    stages: list[str] = field(default_factory=list)
    percent: float = 0.0
    published: list[str] = field(default_factory=list)

    def stage(self, stage: Stage, message: str | None = None) -> None:
        """Record the stage entered."""
        self.stages.append(Stage(stage).value)

    def progress(self, percent: float, message: str | None = None,
                 eta_seconds: float | None = None) -> None:
        """Record the latest overall progress."""
        self.percent = max(self.percent, float(percent))

    def check(self) -> None:
        """Never cancelled."""

    def publish(self, output: OutputFile) -> None:
        """Partial artifacts are only counted."""
        self.published.append(output.name)


def sample_video(count: int, regenerate: bool = False) -> tuple[Path, float]:
    """The cached talk video (first `count` sentences) and its duration in seconds."""
    from dubfleet.sample import make_sample_video
    from worker.stages.probe import probe

    sentences = SENTENCES[:count]
    key = hashlib.sha256(json.dumps([sentences, PAUSE]).encode()).hexdigest()[:10]
    path = MEDIA / f"talk-{count}-{key}.mp4"
    if regenerate or not path.exists():
        click.echo(f"generating {path.name} ({len(sentences)} sentences, Piper)...")
        t0 = time.perf_counter()
        make_sample_video(path, sentences, pause=PAUSE)
        click.echo(f"  made in {time.perf_counter() - t0:.0f} s")
    return path, probe(path).duration


def rss_mb() -> dict:
    """RSS in MB: process peak so far (ru_maxrss), peak since reset_peak() (VmHWM), current."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kb = {key: int(status.get(key, "0 kB").split()[0]) for key in ("VmHWM", "VmRSS")}
    return {"process_peak_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "since_reset_peak_MB": round(kb["VmHWM"] / 1024, 1),
            "current_MB": round(kb["VmRSS"] / 1024, 1)}


def reset_peak() -> None:
    """Reset the kernel's VmHWM so the next job's own peak can be read (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def cpu_s() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat), to spot other load."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def claimed(n: int, kind: str, overlap: bool, video: Path, asr_model: str) -> ClaimedJob:
    """A job as a worker would receive it: en→es, with the overlap option."""
    return ClaimedJob(job_id=f"bench-{n}", kind=kind, lease_token="bench",
                      lease_expires_at=time.time() + 86400, attempt=1, max_attempts=1,
                      heartbeat_interval=30.0, source_language="en", target_language="es",
                      options={"overlap": overlap}, input_name=video.name, asr_model=asr_model)


def with_rtf(timings: dict, duration: float) -> dict:
    """{stage: {"s": seconds, "rtf": seconds / source seconds}}."""
    return {k: {"s": round(v, 2), "rtf": round(v / duration, 3)} for k, v in timings.items()}


def run_job(n: int, kind: str, overlap: bool, video: Path, duration: float, tmp: Path,
            asr_model: str) -> dict:
    """Run one job through MediaPipeline in this process and measure it."""
    from worker.stages.pipeline import MediaPipeline

    ctx = BenchContext(claimed(n, kind, overlap, video, asr_model), tmp / f"job{n}")
    ctx.work_dir.mkdir(parents=True)
    reset_peak()
    cpu0, busy0, t0 = cpu_s(), machine_busy_s(), time.perf_counter()
    result = MediaPipeline(kind).run(ctx, video)
    wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    out = {"job": n, "kind": kind, "overlap": overlap, "wall_s": round(wall, 2),
           "rtf": round(wall / duration, 3), "cpu_s": round(cpu, 1),
           "other_procs_cpu_s": round(machine_busy_s() - busy0 - cpu, 1),
           "stages": with_rtf(result.info.get("timings", {}), duration), "rss": rss_mb(),
           "published": len(ctx.published)}
    summary = result.info.get("summary")
    if summary:
        out["segments"] = summary["segments"]
        out["dub_summary"] = {k: summary.get(k) for k in ("voiced", "flags", "max_speed",
                                                          "mean_speed", "onsets")}
    else:
        path = next(o.path for o in result.outputs if o.name == "transcript.json")
        out["segments"] = len(json.loads(Path(path).read_text())["segments"])
    return out


def timed(fn, *args, cpu: dict | None = None, name: str = "", **kw):
    """(result, seconds) of one call; its CPU seconds (process + children) go to cpu[name]."""
    c0, t0 = cpu_s(), time.perf_counter()
    value = fn(*args, **kw)
    if cpu is not None:
        cpu[name] = round(cpu_s() - c0, 1)
    return value, time.perf_counter() - t0


def stage_breakdown(video: Path, duration: float, tmp: Path, asr_model: str) -> dict:
    """Each stage alone, warm, one after the other (no overlap): seconds and RTF."""
    from worker.stages import tts
    from worker.stages.adapt import shorten_to_fit
    from worker.stages.fit import FitOptions, fit_segments, fit_summary, mix_dub
    from worker.stages.mux import encode_audio, mux_dubbed_video
    from worker.stages.probe import decode_audio
    from worker.stages.transcribe import Transcriber
    from worker.stages.translate import choose_engine

    out = tmp / "stages"
    out.mkdir(parents=True)
    t, cpu = {}, {}
    audio, t["decode"] = timed(decode_audio, video, out / "audio16k.wav", cpu=cpu, name="decode")
    transcript, t["asr"] = timed(Transcriber(asr_model).transcribe, audio, "en", cpu=cpu,
                                 name="asr")
    translator = choose_engine("en", "es")
    translation, t["translate"] = timed(translator.translate, transcript.segments, "en", "es",
                                        cpu=cpu, name="translate")
    chain = tts.default_chain("es")
    voice = lambda segs, where="tts": tts.synthesize_segments(  # noqa: E731
        segs, "es", chain, out / where)
    voiced, t["tts"] = timed(voice, translation.segments, cpu=cpu, name="tts")
    (timeline, voiced, shortened), t["shorten"] = timed(
        shorten_to_fit, translator, translation.segments, voiced, duration, FitOptions(), None,
        "en", "es", lambda segs: voice(segs, "tts-short"), cpu=cpu, name="shorten")
    c0, t0 = cpu_s(), time.perf_counter()
    fit = fit_segments(voiced, timeline, duration, FitOptions())
    wav = mix_dub(fit, video, out / "mix.wav")
    t["fit_mix"], cpu["fit_mix"] = time.perf_counter() - t0, round(cpu_s() - c0, 1)
    c0, t0 = cpu_s(), time.perf_counter()
    encode_audio(wav, out / "dub.m4a", language="es")
    mux_dubbed_video(video, wav, out / "dub.mp4", original_keep=True, language="es",
                     original_language="en")
    t["mux"], cpu["mux"] = time.perf_counter() - t0, round(cpu_s() - c0, 1)
    t["total"], cpu["total"] = sum(t.values()), round(sum(cpu.values()), 1)
    stages = with_rtf(t, duration)
    for name, seconds in cpu.items():
        stages[name]["cpu_s"] = seconds
    return {"translator": translator.name, "tts_chain": [e.name for e in chain],
            "segments": len(transcript.segments), "shortened": shortened,
            "fit": fit_summary(fit.placed), "stages": stages}


def print_report(res: dict) -> None:
    """A readable summary of the figures."""
    click.echo(f"\nsource: {res['source_s']:.1f} s, {res['sentences']} sentences; "
               f"load avg before {res['loadavg_before']} after {res['loadavg_after']}")
    click.echo(f"{'job':<26}{'wall s':>9}{'RTF':>7}{'cpu s':>7}{'others':>7}{'segs':>5}"
               f"{'peak MB':>8}  stages (s)")
    click.echo("(cpu s: this process + ffmpeg; others: CPU seconds other processes used meanwhile;"
               " peak MB: this job's own RSS peak)")
    for job in res["jobs"]:
        name = f"{job['job']}: {job['kind']} overlap={'on' if job['overlap'] else 'off'}"
        name += " (cold)" if job["job"] == 1 else ""
        stages = ", ".join(f"{k} {v['s']:.1f}" for k, v in job["stages"].items())
        click.echo(f"{name:<26}{job['wall_s']:>9.1f}{job['rtf']:>7.2f}{job['cpu_s']:>7.0f}"
                   f"{job['other_procs_cpu_s']:>7.0f}{job['segments']:>5}"
                   f"{job['rss']['since_reset_peak_MB']:>8.0f}  {stages}")
        if "dub_summary" in job:
            click.echo(f"{'':<26}dub report: {job['dub_summary']}")
    if "breakdown" in res:
        b = res["breakdown"]
        click.echo(f"\nstages alone (warm; {b['translator']}, TTS {b['tts_chain']}, "
                   f"{b['segments']} segments):")
        for name, v in b["stages"].items():
            click.echo(f"  {name:<10}{v['s']:>9.1f} s   RTF {v['rtf']:.3f}   "
                       f"CPU {v.get('cpu_s', 0):.1f} s")
        click.echo(f"  shortened {b['shortened']} lines; fit {b['fit']}")
    click.echo(f"\nprocess peak RSS {res['rss']['process_peak_MB']:.0f} MB, "
               f"{res['rss']['current_MB']:.0f} MB at the end (ffmpeg subprocesses not counted)")


@click.command()
@click.option("--sentences", "count", default=len(SENTENCES), show_default=True,
              help="How many of the talk's sentences to use (fewer for a quick try).")
@click.option("--asr-model", default="base", show_default=True)
@click.option("--breakdown/--no-breakdown", default=True, help="Also time each stage alone.")
@click.option("--plan", default="dub:on,dub:on,dub:off,transcribe:on", show_default=True,
              help="Jobs to run in order, KIND:on|off (overlap); the first pays model loading.")
@click.option("--out", default="pipeline.json", show_default=True, help="File in bench/results/.")
@click.option("--regenerate", is_flag=True, help="Remake the cached sample video.")
@click.option("-v", "--verbose", is_flag=True, help="Log the pipeline at INFO level.")
def main(count: int, asr_model: str, breakdown: bool, plan: str, out: str, regenerate: bool,
         verbose: bool) -> None:
    """Time dub/transcribe jobs and each stage on a ~5-minute talk; record the figures."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    video, duration = sample_video(count, regenerate)
    res = {"source_s": round(duration, 2), "sentences": count, "asr_model": asr_model,
           "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
           "jobs": []}
    jobs = [(n, *item.split(":")) for n, item in enumerate(plan.split(","), start=1)]
    with tempfile.TemporaryDirectory(prefix="dubfleet-bench-pipeline-") as tmp:
        for n, kind, overlap in [(n, k, o == "on") for n, k, o in jobs]:
            click.echo(f"job {n}: {kind} overlap={overlap} ...")
            res["jobs"].append(run_job(n, kind, overlap, video, duration, Path(tmp), asr_model))
            click.echo(f"  {res['jobs'][-1]['wall_s']} s")
        if breakdown:
            click.echo("stages alone ...")
            res["breakdown"] = stage_breakdown(video, duration, Path(tmp), asr_model)
    res["rss"] = rss_mb()
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / out).write_text(json.dumps(res, indent=2))
    print_report(res)


if __name__ == "__main__":
    main()
