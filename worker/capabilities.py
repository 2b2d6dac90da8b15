"""What a worker advertises when it claims: identity, device, memory, kinds and models."""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterable

from shared.protocol import WorkerInfo

logger = logging.getLogger(__name__)


def memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Total RAM in MiB from /proc/meminfo (0 when unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cuda_device_count() -> int:
    """CUDA devices visible to CTranslate2 (0 when it is not installed)."""
    try:
        import ctranslate2
        return int(ctranslate2.get_cuda_device_count())
    except Exception as exc:  # not installed, or a broken CUDA setup
        logger.debug("no CUDA via ctranslate2: %s", exc)
        return 0


def gpu_memory_mb() -> int:
    """Memory of the first GPU in MiB according to nvidia-smi (0 when unknown)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(float(out.splitlines()[0]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def advertised_models() -> dict[str, tuple[str, ...]]:
    """asr_models / target_languages / engines from `worker.models.advertise()` if present."""
    try:
        from worker.models import advertise
    except ImportError:
        return {}
    except Exception:
        logger.exception("worker.models failed to import; advertising no models")
        return {}
    try:
        found = advertise() or {}
    except Exception:
        logger.exception("worker.models.advertise() failed; advertising no models")
        return {}
    return {key: tuple(str(v) for v in found.get(key, ()))
            for key in ("asr_models", "target_languages", "engines")}


def build_worker_info(worker_id: str, session_id: str, kinds: Iterable[str]) -> WorkerInfo:
    """Describe this worker; the device is probed only when a media kind is advertised."""
    kinds = tuple(kinds)
    media = any(k != "echo" for k in kinds)
    gpus = cuda_device_count() if media else 0
    return WorkerInfo(worker_id=worker_id, session_id=session_id, hostname=socket.gethostname(),
                      device="cuda" if gpus else "cpu", memory_mb=memory_mb(),
                      gpu_memory_mb=gpu_memory_mb() if gpus else 0, kinds=kinds,
                      **(advertised_models() if media else {}))
