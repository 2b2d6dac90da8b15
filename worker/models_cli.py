"""`worker models`: list, install, import and verify the models this worker can use."""
from __future__ import annotations

import json
import re
from pathlib import Path

import click

from worker import models as registry
from worker.errors import UnsupportedJob
from worker.models import ModelEntry

_PAIR_RE = re.compile(r"^(?:argos:)?([a-z]{2,3})[-_]([a-z]{2,3})$")


def _asr_entries() -> list[ModelEntry]:
    """Rows for the speech recognition models."""
    offline = registry.offline_asr_models()
    base_joined = (registry.cached_model_dir("base") / "model.bin").is_file()
    rows = [
        ModelEntry("asr", "tiny.en", "faster-whisper", "package",
                   "ready" if "tiny.en" in offline else "not installed"),
        ModelEntry("asr", "base", "faster-whisper", "package",
                   "not installed" if "base" not in offline else
                   "ready" if base_joined else "ready (joined on first use)"),
    ]
    rows += [ModelEntry("asr", name, "faster-whisper", "cache", "ready",
                        str(registry.cached_model_dir(name)))
             for name in offline if name not in ("tiny.en", "base")]
    return rows


def _translation_entries() -> list[ModelEntry]:
    """Rows for the translation engines and their language pairs."""
    from worker.stages.translate_apertium import apertium_pairs
    from worker.stages.translate_argos import argos_packages

    from worker import llm_model
    from worker.stages.translate_llm import LLM_LANGUAGES, llm_available

    rows = [ModelEntry("translation", f"{llm_model.MODEL_NAME} ({'/'.join(sorted(LLM_LANGUAGES))})",
                       "llm", "package", "ready (default)" if llm_available() else
                       "not installed: make setup", str(llm_model.model_path()))]
    rows += [ModelEntry("translation", f"{p.from_code}-{p.to_code}", "argos", "argos", "ready",
                        str(p.path)) for p in argos_packages()]
    rows += [ModelEntry("translation", f"{a}-{b}", "apertium", "apertium", "ready")
             for a, b in apertium_pairs()]
    multilingual = [m for m in registry.offline_asr_models() if registry.is_multilingual(m)]
    rows.append(ModelEntry("translation", "*-en", "whisper-translate", "package",
                           f"ready ({multilingual[0]})" if multilingual else "not installed"))
    return rows


def _tts_entries() -> list[ModelEntry]:
    """Rows for the speech synthesis engines."""
    engines = registry.tts_engines()
    kokoro_joined = (registry.model_dir() / registry.KOKORO_FILE).is_file()
    kokoro = ("not installed" if "kokoro" not in engines else
              "ready" if kokoro_joined else "ready (joined on first use)")
    return [
        ModelEntry("tts", "kokoro-v1.0-int8", "kokoro", "package", kokoro),
        *_kokoro_voice_entries(),
        ModelEntry("tts", registry.PIPER_VOICE, "piper", "package",
                   "ready" if "piper" in engines else "not installed"),
        ModelEntry("tts", "espeak-ng", "espeak-ng", "system",
                   "ready" if "espeak-ng" in engines else "not installed"),
        ModelEntry("tts", "coqui", "coqui", "package",
                   "runtime installed" if "coqui" in engines else "not installed"),
    ]


def _kokoro_voice_entries() -> list[ModelEntry]:
    """One row per native Kokoro voice (installed by `make setup` from npm kokoro-js)."""
    from worker import kokoro_voices

    installed = kokoro_voices.installed_voices()
    path = str(registry.model_dir() / kokoro_voices.VOICES_FILE)
    rows = []
    for name in kokoro_voices.VOICES:
        lang = kokoro_voices.voice_language(name)
        if lang is None:
            continue  # jm_kumo: also in the Japanese pack
        ready = name in installed
        what = f"({lang}, {kokoro_voices.voice_gender(name)})"
        rows.append(ModelEntry(
            "tts", f"kokoro:{name}", "kokoro", f"npm:{kokoro_voices.NPM_SPEC}",
            f"ready {what}" if ready else f"not installed {what}: make setup",
            path if ready else ""))
    return rows


def _summary_entries() -> list[ModelEntry]:
    """The sentence-embedding model of job summaries."""
    path = registry.summary_model_path()
    return [ModelEntry("summary", registry.SUMMARY_MODEL, "sentence-transformers", "package",
                       "ready" if path else "not installed: make setup", str(path or ""))]


def collect_entries() -> list[ModelEntry]:
    """Every model and engine this worker knows about, installed or not."""
    return _asr_entries() + _translation_entries() + _tts_entries() + _summary_entries()


def _table(rows: list[ModelEntry]) -> str:
    """Render rows as an aligned text table."""
    header = ("KIND", "NAME", "ENGINE", "SOURCE", "STATUS")
    cells = [header] + [(r.kind, r.name, r.engine, r.source, r.status) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


@click.group("models")
def models() -> None:
    """Manage the offline models this worker can use."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """List speech recognition, translation and TTS models and their status."""
    rows = collect_entries()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        click.echo(_table(rows))


@models.command("install")
@click.argument("name")
def install_command(name: str) -> None:
    """Download a model (online machines only): a whisper model name, an Argos pair (en-es) or
    kokoro-voices (Kokoro's es/fr/it/pt voices, via npm)."""
    try:
        click.echo(_install(name))
    except UnsupportedJob as exc:
        raise click.ClickException(str(exc)) from exc
    registry.refresh()


def _install(name: str) -> str:
    """Install `name` and describe what happened."""
    pair = _PAIR_RE.match(name)
    if pair:
        from worker.stages.translate_argos import install_argos_pair

        info = install_argos_pair(pair.group(1), pair.group(2))
        return f"installed Argos package {info.from_code}→{info.to_code} at {info.path}"
    if name == "kokoro-voices":
        from worker import kokoro_voices

        try:
            return kokoro_voices.install()
        except (kokoro_voices.VoiceInstallError, OSError) as exc:
            raise UnsupportedJob(str(exc)) from exc
    if name in ("tiny.en", "base") and name in registry.offline_asr_models():
        return f"model '{name}' ships in a package; ready at {registry.resolve_asr_model(name)}"
    return f"downloaded model '{name}' to {registry.resolve_asr_model(name, allow_download=True)}"


@models.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(file: Path) -> None:
    """Install an Argos Translate package from a .argosmodel file (no network needed)."""
    from worker.stages.translate_argos import import_argos_package

    try:
        info = import_argos_package(file)
    except UnsupportedJob as exc:
        raise click.ClickException(str(exc)) from exc
    registry.refresh()
    click.echo(f"imported Argos package {info.from_code}→{info.to_code} into {info.path}")


def _verify_asr(name: str) -> str:
    """Load an ASR model and decode one second of silence through it."""
    import numpy as np

    from worker.stages.transcribe import load_model

    model = load_model(name)
    # No VAD so the decoder really runs; one temperature so silence cannot trigger fallbacks.
    segments, info = model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=1,
                                      vad_filter=False, temperature=0.0, max_new_tokens=32)
    list(segments)
    return f"loaded and decoded 1 s of silence (language {info.language})"


def _verify_files() -> list[tuple[str, callable]]:
    """Checks of joined and bundled model files."""
    checks = []
    if "base" in registry.offline_asr_models():
        checks.append(("asr base model.bin size", _verify_base_size))
    if registry.kokoro_available():
        checks.append(("kokoro model sha256", _verify_kokoro))
    from worker import kokoro_voices

    if any((registry.model_dir() / f).exists()  # verify what setup installed, if it did
           for f in (kokoro_voices.VOICES_FILE, kokoro_voices.MANIFEST_FILE)):
        checks.append(("kokoro native voices", kokoro_voices.verify))
    if registry.piper_available():
        checks.append(("piper voice files", _verify_piper))
    from worker import llm_model

    if llm_model.installed():
        checks.append(("translation llm sha256", llm_model.verify))
    if registry.summary_model_path() is not None:
        checks.append(("summary model", _verify_summary))
    return checks


def _verify_summary() -> str:
    """The sentence-embedding model loads offline and tells related sentences apart."""
    from worker.stages.summary_model import shared_embedder

    vectors = shared_embedder().encode(["The river floods in spring.",
                                        "In spring the river overflows.", "I like green tea."])
    close, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    if not close > far:
        raise UnsupportedJob(f"embeddings look wrong (similar {close:.2f} <= unrelated {far:.2f})")
    return f"{vectors.shape[1]} dimensions, similar {close:.2f} > unrelated {far:.2f}"


def _verify_base_size() -> str:
    """The joined base model has the published size."""
    path = registry.ensure_base_model() / "model.bin"
    size = path.stat().st_size
    if size != registry.BASE_SIZE:
        raise UnsupportedJob(f"{path} has {size} bytes, expected {registry.BASE_SIZE}")
    return f"{size:,} bytes"


def _verify_kokoro() -> str:
    """The joined Kokoro model matches its published sha256."""
    paths = registry.kokoro_model_paths()
    if registry.file_sha256(paths.model) != paths.sha256:
        raise UnsupportedJob(f"{paths.model} does not match its sha256; delete it to rejoin")
    return f"{paths.model.stat().st_size:,} bytes, sha256 ok"


def _verify_piper() -> str:
    """The Piper voice and its config are present and readable."""
    paths = registry.piper_voice_paths()
    config = json.loads(paths.config.read_text())
    return f"{paths.model.stat().st_size:,} bytes, {config.get('audio', {}).get('sample_rate')} Hz"


@models.command("verify")
def verify_command() -> None:
    """Load every offline ASR model on 1 s of silence and check joined files' sizes and digests."""
    checks = [(f"asr {name}", lambda n=name: _verify_asr(n))
              for name in registry.offline_asr_models()] + _verify_files()
    failed = 0
    for label, check in checks:
        try:
            click.echo(f"ok    {label}: {check()}")
        except Exception as exc:  # report every failure, not just the first
            failed += 1
            click.echo(f"FAIL  {label}: {exc}")
    if failed:
        raise click.ClickException(f"{failed} of {len(checks)} checks failed")
    click.echo(f"all {len(checks)} checks passed")


if __name__ == "__main__":
    models()
