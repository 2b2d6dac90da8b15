"""Make Coqui TTS importable next to a CPU-only torch build (run by scripts/setup.sh).

coqui-tts imports torchaudio, and checks that torchcodec is installed. PyPI only has CUDA builds
of torchaudio/torchcodec, and on a machine with the CPU build of torch their native extensions
fail to load (libc10_cuda.so / libnvrtc.so missing). torchaudio works without its extension
(pure-Python fallback; dubfleet uses Coqui only for synthesis, which never calls it), so when the
extension cannot load we install the packages without dependencies and disable the extension.
Nothing is done where torchaudio already imports (GPU machines with matching wheels).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PY = sys.executable


def _imports(module: str) -> tuple[bool, str]:
    proc = subprocess.run([PY, "-c", f"import {module}"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else ""


def _pip(*args: str) -> None:
    subprocess.run([PY, "-m", "pip", "install", "-q", *args], check=True)


def main() -> int:
    """Install and patch as needed; exit non-zero if Coqui still cannot be imported."""
    ok, err = _imports("TTS.api")
    if ok:
        return 0
    _pip("six")
    if not _imports("torchaudio")[0]:
        _pip("--no-deps", "torchaudio==2.11.0", "torchcodec")
        ok, err = _imports("torchaudio")
        if not ok and "Could not load this library" in err:
            import importlib.util

            spec = importlib.util.find_spec("torchaudio")
            lib = Path(spec.origin).parent / "lib"
            for so in lib.glob("*.so"):
                so.rename(so.with_name(so.name + ".disabled"))
            print(f"coqui: disabled torchaudio's CUDA-linked extension in {lib} (CPU torch)")
    ok, err = _imports("TTS.api")
    if not ok:
        print(f"coqui: Coqui TTS is not importable: {err}", file=sys.stderr)
        return 1
    print("coqui: Coqui TTS importable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
