"""Argos Translate (neural, offline once its language packages are installed)."""
from __future__ import annotations

import json
import logging
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from worker.errors import UnsupportedJob

logger = logging.getLogger(__name__)

_SENTENCE_END_RE = re.compile(r"(?<=[.!?…。！？])\s+")
_lock = threading.Lock()
_translations: dict[tuple[str, str], object] = {}


@dataclass(frozen=True)
class ArgosPackageInfo:
    """An installed Argos language package."""

    from_code: str
    to_code: str
    version: str
    path: Path


def argos_packages() -> list[ArgosPackageInfo]:
    """Installed Argos translation packages (reads metadata only; loads no model)."""
    try:
        from argostranslate import package
        installed = package.get_installed_packages()
    except Exception as exc:  # a broken package dir must not take the worker down
        logger.warning("cannot list Argos packages: %s", exc)
        return []
    return [ArgosPackageInfo(p.from_code, p.to_code, p.package_version, p.package_path)
            for p in installed if p.type == "translate" and p.from_code and p.to_code]


def argos_pairs() -> list[tuple[str, str]]:
    """Direct (from, to) pairs of the installed Argos packages."""
    return sorted({(p.from_code, p.to_code) for p in argos_packages()})


def argos_reachable(source: str, pairs: list[tuple[str, str]] | None = None) -> set[str]:
    """Languages reachable from `source` through installed packages, pivots included (as Argos)."""
    pairs = argos_pairs() if pairs is None else pairs
    seen, frontier = {source}, [source]
    while frontier:
        lang = frontier.pop()
        for src, dst in pairs:
            if src == lang and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    return seen - {source}


def _package_root(names: list[str]) -> str:
    """Return the single top-level folder of a package zip, rejecting unsafe layouts."""
    roots = set()
    for name in names:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts:
            raise UnsupportedJob(f"unsafe path in Argos package: {name!r}")
        roots.add(parts[0])
    if len(roots) != 1:
        raise UnsupportedJob("an .argosmodel must hold exactly one top-level folder")
    return roots.pop()


def read_argos_metadata(path: Path) -> dict:
    """Validate an .argosmodel file and return its metadata.json."""
    if not zipfile.is_zipfile(path):
        raise UnsupportedJob(f"{path} is not an Argos package (not a zip archive)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = _package_root(names)
        if f"{root}/metadata.json" not in names:
            raise UnsupportedJob(f"{path} has no {root}/metadata.json")
        if not any(n.startswith(f"{root}/model/") for n in names):
            raise UnsupportedJob(f"{path} has no CTranslate2 model/ folder")
        metadata = json.loads(zf.read(f"{root}/metadata.json"))
    if not metadata.get("from_code") or not metadata.get("to_code"):
        raise UnsupportedJob(f"{path}: metadata.json lacks from_code/to_code")
    return metadata


def import_argos_package(path: Path) -> ArgosPackageInfo:
    """Install an .argosmodel file through Argos's own installer; return what was installed."""
    metadata = read_argos_metadata(Path(path))
    from argostranslate import package

    package.install_from_path(Path(path))
    with _lock:
        _translations.clear()
    for info in argos_packages():
        if (info.from_code, info.to_code) == (metadata["from_code"], metadata["to_code"]):
            return info
    raise UnsupportedJob(f"Argos did not list {metadata['from_code']}→{metadata['to_code']} "
                         "after installing it")


class _PunctuationSentencizer:
    """Offline sentence splitter handed to Argos in place of its default.

    Argos 1.11 falls back to MiniSBD for packages without a packaged stanza/minisbd model, and
    MiniSBD downloads its ONNX model from GitHub on first use, which fails offline. dubfleet
    already hands Argos sentence units, so splitting on final punctuation is enough.
    """

    def split_sentences(self, text: str) -> list[str]:
        """Split on sentence-final punctuation."""
        return [s for s in _SENTENCE_END_RE.split(text.strip()) if s]


def _use_offline_sentencizer(translation: object) -> None:
    """Give every package translation inside `translation` (cached, pivoted) our sentencizer."""
    if hasattr(translation, "sentencizer"):
        translation.sentencizer = _PunctuationSentencizer()  # type: ignore[attr-defined]
    for attr in ("underlying", "t1", "t2"):
        inner = getattr(translation, attr, None)
        if inner is not None:
            _use_offline_sentencizer(inner)


def _get_translation(source: str, target: str):
    """Return Argos's (cached) translation object for the pair; models stay loaded (argos #199)."""
    key = (source, target)
    if key not in _translations:
        from argostranslate import translate

        langs = {lang.code: lang for lang in translate.get_installed_languages()}
        src, dst = langs.get(source), langs.get(target)
        translation = src.get_translation(dst) if src and dst else None
        if translation is None:
            raise UnsupportedJob(f"no Argos package covers {source}→{target}")
        _use_offline_sentencizer(translation)
        _translations[key] = translation
    return _translations[key]


class ArgosEngine:
    """Text translation with installed Argos packages (direct or pivoting through English)."""

    name = "argos"

    def supports(self, source: str, target: str) -> bool:
        """True if installed packages reach target from source."""
        return target in argos_reachable(source)

    def translate_texts(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text (one sentence unit each)."""
        with _lock:
            translation = _get_translation(source, target)
            return [translation.translate(" ".join(t.split())) if t.strip() else ""
                    for t in texts]


def install_argos_pair(source: str, target: str) -> ArgosPackageInfo:
    """Download and install source→target from the Argos package index (online machines only)."""
    from urllib.parse import urlparse

    from argostranslate import package, settings

    from worker.models import require_online

    require_online(urlparse(settings.remote_package_index).hostname or "")
    package.update_package_index()
    if not Path(settings.local_package_index).is_file():  # Argos logs and swallows the error
        raise UnsupportedJob("could not fetch the Argos package index")
    for available in package.get_available_packages():
        if (available.from_code, available.to_code) == (source, target):
            return import_argos_package(available.download())
    raise UnsupportedJob(f"the Argos package index has no {source}→{target} package")
