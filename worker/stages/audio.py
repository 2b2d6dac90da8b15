"""Audio helpers for the dub stages: wav I/O, decoding, resampling, stretching, loudness, limiting.

Arrays are float32 in [-1, 1], shaped (n,) for mono or (n, channels). Loudness follows
ITU-R BS.1770-4 (K-weighting, 400 ms blocks, absolute -70 LUFS and relative -10 LU gates).
"""
from __future__ import annotations

import logging
import os
import subprocess
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from worker.errors import JobFailed
from worker.stages.ffmpeg import ffmpeg_exe

logger = logging.getLogger(__name__)

_BLOCK_S = 0.4
_ABS_GATE = -70.0
_REL_GATE = -10.0
_CHUNK_S = 30.0


def run_ffmpeg(args: list[str], *, stdin: bytes | None = None, what: str = "ffmpeg") -> bytes:
    """Run ffmpeg with `args`; return stdout or raise JobFailed with stderr's last lines."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    if stdin is not None:
        cmd.remove("-nostdin")
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.decode("utf-8", "replace").strip().splitlines()[-8:])
        raise JobFailed(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def read_wav(path: Path | str, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a sound file as float32; mono=True averages the channels."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if mono:
        return audio.mean(axis=1).astype(np.float32), sr
    return (audio[:, 0] if audio.shape[1] == 1 else audio), sr


def write_wav(path: Path | str, audio: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM wav atomically (temp file then replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
    return path


def duration_of(path: Path | str) -> float:
    """Duration of a sound file in seconds."""
    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


def load_audio(path: Path | str, sample_rate: int, channels: int | None = None) -> np.ndarray:
    """Decode the first audio stream of any media file to float32 at `sample_rate`.

    channels=None keeps mono as mono and downmixes anything wider to stereo.
    """
    if channels is None:
        channels = min(2, _source_channels(path))
    raw = run_ffmpeg(["-i", str(path), "-vn", "-map", "0:a:0", "-ac", str(channels),
                      "-ar", str(sample_rate), "-f", "f32le", "-"], what="audio decode")
    audio = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return audio if channels == 1 else audio.reshape(-1, channels)


def has_audio(path: Path | str) -> bool:
    """Whether the media file has at least one audio stream."""
    import av

    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def _source_channels(path: Path | str) -> int:
    """Channel count of the first audio stream (1 if unknown)."""
    import av

    with av.open(str(path)) as container:
        streams = container.streams.audio
        if not streams:
            raise JobFailed(f"no audio stream in {Path(path).name}")
        return max(1, int(streams[0].codec_context.channels or 1))


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resample along axis 0."""
    if sr_from == sr_to or len(audio) == 0:
        return audio.astype(np.float32, copy=False)
    g = gcd(sr_from, sr_to)
    out = signal.resample_poly(audio, sr_to // g, sr_from // g, axis=0)
    return out.astype(np.float32)


def time_stretch(audio: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Change tempo by `speed` (>1 is faster) without changing pitch (ffmpeg atempo)."""
    if abs(speed - 1.0) < 1e-3 or len(audio) == 0:
        return audio
    filters = ",".join(f"atempo={f:.6f}" for f in _atempo_factors(speed))
    raw = run_ffmpeg(["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
                      "-filter:a", filters, "-f", "f32le", "pipe:1"],
                     stdin=np.ascontiguousarray(audio, dtype="<f4").tobytes(), what="atempo")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _atempo_factors(speed: float) -> list[float]:
    """Split a tempo factor into atempo stages within [0.5, 2.0] (older ffmpeg limits)."""
    factors = []
    while speed > 2.0:
        factors.append(2.0)
        speed /= 2.0
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    return [*factors, speed]


def fade_edges(audio: np.ndarray, sample_rate: int, fade_in: float = 0.0,
               fade_out: float = 0.0) -> np.ndarray:
    """Apply linear fades at the start and/or end (in place on a copy)."""
    out = np.array(audio, dtype=np.float32, copy=True)
    for seconds, at_end in ((fade_in, False), (fade_out, True)):
        n = min(len(out), int(round(seconds * sample_rate)))
        if n <= 0:
            continue
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        ramp = ramp[::-1] if at_end else ramp
        if out.ndim == 2:
            ramp = ramp[:, None]
        if at_end:
            out[-n:] *= ramp
        else:
            out[:n] *= ramp
    return out


def trim_silence(audio: np.ndarray, sample_rate: int, threshold_db: float = -50.0,
                 below_peak_db: float = 40.0, pad: float = 0.01, frame: float = 0.01) -> np.ndarray:
    """Drop leading/trailing silence (a TTS engine's padding), keeping `pad` s next to the sound.

    Silence is 10 ms frames whose RMS is below max(threshold_db, loudest frame - below_peak_db)
    dBFS; a lone loud frame (a click) is not sound. All silence gives an empty array.
    """
    hop = max(1, int(round(frame * sample_rate)))
    n = len(audio) // hop
    if n == 0:
        return audio[:0]
    frames = np.asarray(audio[:n * hop], dtype=np.float64).reshape(n, hop)
    level = 20.0 * np.log10(np.maximum(np.sqrt(np.mean(frames * frames, axis=1)), 1e-9))
    loud = level > max(threshold_db, float(level.max()) - below_peak_db)
    neighbour = np.zeros(n, bool)
    neighbour[1:] |= loud[:-1]
    neighbour[:-1] |= loud[1:]
    sound = loud & neighbour if n > 1 else loud
    idx = np.flatnonzero(sound)
    if len(idx) == 0:
        return audio[:0]
    keep = int(round(pad * sample_rate))
    return audio[max(0, idx[0] * hop - keep):min(len(audio), (idx[-1] + 1) * hop + keep)]


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad along axis 0 to exactly n samples."""
    if len(audio) >= n:
        return audio[:n]
    pad = [(0, n - len(audio))] + [(0, 0)] * (audio.ndim - 1)
    return np.pad(audio, pad)


def _k_weighting(sample_rate: int) -> np.ndarray:
    """BS.1770 K-weighting (shelf + high-pass) as second-order sections for any rate."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = np.tan(np.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0,
             (vh - vb * k / q + k * k) / a0,
             1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = np.tan(np.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def _block_powers(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean-square K-weighted power of 400 ms blocks with 75 % overlap (channels summed)."""
    x = audio[:, None] if audio.ndim == 1 else audio
    sos = _k_weighting(sample_rate)
    zi = np.zeros((len(sos), 2, x.shape[1]))
    hop = int(round(_BLOCK_S * sample_rate / 4))
    chunk = max(hop, int(_CHUNK_S * sample_rate) // hop * hop)
    hop_energy = []
    for start in range(0, len(x), chunk):
        y, zi = signal.sosfilt(sos, x[start:start + chunk].astype(np.float64), axis=0, zi=zi)
        e = (y * y).sum(axis=1)
        whole = len(e) // hop * hop
        hop_energy.append(e[:whole].reshape(-1, hop).sum(axis=1))
    hops = np.concatenate(hop_energy) if hop_energy else np.zeros(0)
    if len(hops) < 4:
        return np.zeros(0)
    return np.convolve(hops, np.ones(4), mode="valid") / (4 * hop)


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (-inf for silence or audio shorter than one block)."""
    powers = _block_powers(audio, sample_rate)
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10.0 * np.log10(powers)
    gated = powers[levels > _ABS_GATE]
    if len(gated) == 0:
        return float("-inf")
    relative = -0.691 + 10.0 * np.log10(gated.mean()) + _REL_GATE
    gated = powers[(levels > _ABS_GATE) & (levels > relative)]
    return float(-0.691 + 10.0 * np.log10(gated.mean()))


def loudness_gain(audio: np.ndarray, sample_rate: int, target_lufs: float = -16.0,
                  max_gain_db: float = 30.0) -> float:
    """Linear gain that brings the audio to the target loudness (1.0 for silence; boost capped)."""
    current = integrated_loudness(audio, sample_rate)
    if not np.isfinite(current):
        return 1.0
    return float(10.0 ** (min(max_gain_db, target_lufs - current) / 20.0))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float = -16.0,
                       max_gain_db: float = 30.0) -> np.ndarray:
    """A copy scaled to the target integrated loudness (gain capped; silence unchanged)."""
    gain = loudness_gain(audio, sample_rate, target_lufs, max_gain_db)
    return (audio * np.float32(gain)).astype(np.float32, copy=False)


def limit_peaks(audio: np.ndarray, sample_rate: int, ceiling_db: float = -1.0,
                window_s: float = 0.005, in_place: bool = False) -> np.ndarray:
    """Look-ahead peak limiter: smooth gain reduction so no sample exceeds the ceiling.

    Only the stretches around over-ceiling samples are touched, so long tracks stay cheap.
    """
    ceiling = 10.0 ** (ceiling_db / 20.0)
    over = _samples_over(audio, ceiling)
    if len(over) == 0:
        return audio
    out = audio if in_place else audio.copy()
    width = max(1, int(window_s * sample_rate)) | 1
    for lo, hi in _regions(over, width, len(out)):
        _limit_region(out[lo:hi], ceiling, width)
    return out


def _samples_over(audio: np.ndarray, ceiling: float, block: int = 1 << 22) -> np.ndarray:
    """Indices of samples (any channel) whose magnitude exceeds the ceiling, found blockwise."""
    found = []
    for start in range(0, len(audio), block):
        chunk = np.abs(audio[start:start + block])
        peak = chunk if chunk.ndim == 1 else chunk.max(axis=1)
        found.append(np.flatnonzero(peak > ceiling) + start)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _regions(indices: np.ndarray, width: int, n: int) -> list[tuple[int, int]]:
    """Merge over-ceiling indices into [lo, hi) stretches padded by two filter widths."""
    pad = 2 * width
    breaks = np.flatnonzero(np.diff(indices) > 2 * pad)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]])
    return [(max(0, int(a) - pad), min(n, int(b) + pad + 1)) for a, b in zip(starts, ends)]


def _limit_region(region: np.ndarray, ceiling: float, width: int) -> None:
    """Apply smoothed gain reduction to one stretch, in place."""
    peak = np.abs(region) if region.ndim == 1 else np.abs(region).max(axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12)).astype(np.float32)
    # a min-filter then a box average of the same odd width never exceeds the needed gain
    gain = uniform_filter1d(minimum_filter1d(need, width, mode="nearest"), width, mode="nearest")
    region *= gain if region.ndim == 1 else gain[:, None]
    np.clip(region, -ceiling, ceiling, out=region)
