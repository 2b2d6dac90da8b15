"""Probe an input file and decode its audio to 16 kHz mono float32 (PyAV, no subprocess)."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import av
import av.stream
import numpy as np
import soundfile as sf

from worker.errors import BadMedia
from worker.stages.ffmpeg import ffmpeg_exe
from worker.stages.types import DecodedAudio, MediaInfo

logger = logging.getLogger(__name__)

__all__ = ["probe", "decode_audio", "ffmpeg_exe"]

MAX_BAD_PACKETS = 50
# Leading bytes of containers we accept; a file that starts like one but fails to open is
# reported as truncated/corrupt rather than "not media".
_SIGNATURES = (b"\x1a\x45\xdf\xa3", b"RIFF", b"ID3", b"fLaC", b"OggS", b"FLV", b"FORM",
               b"\x30\x26\xb2\x75", b"\x00\x00\x01\xba", b"#!AMR")
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


def _looks_like_media(head: bytes) -> bool:
    """True if the first bytes carry a known container signature."""
    if head.startswith(_SIGNATURES) or head[4:8] in _MP4_BOXES:
        return True
    mpeg_audio_sync = len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    transport_stream = len(head) > 188 and head[0] == 0x47 and head[188] == 0x47
    return mpeg_audio_sync or transport_stream


def _check_file(path: Path) -> None:
    """Reject missing, unreadable and empty inputs with a clear reason."""
    if not path.is_file():
        raise BadMedia(f"input file not found: {path.name}")
    if path.stat().st_size == 0:
        raise BadMedia("input is empty (0 bytes)")


def _reason(exc: Exception) -> str:
    """FFmpeg's message without the errno and the local path."""
    return getattr(exc, "strerror", None) or str(exc)


def _open_error(path: Path, exc: Exception) -> BadMedia:
    """Explain why PyAV could not open `path`."""
    with open(path, "rb") as f:
        head = f.read(512)
    if _looks_like_media(head):
        return BadMedia(f"input is truncated or corrupt: {_reason(exc)}")
    return BadMedia("input is not a media file (could not read container)")


@contextmanager
def _open(path: Path) -> Iterator[av.container.InputContainer]:
    """Open `path` for reading, mapping PyAV errors to BadMedia."""
    _check_file(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise _open_error(path, exc) from exc
    try:
        yield container
    finally:
        container.close()


def _is_picture(stream: av.stream.Stream) -> bool:
    """True for a cover-art picture that is not real video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _duration(container: av.container.InputContainer) -> float:
    """Duration in seconds from the container, else from its longest stream."""
    if container.duration:
        return container.duration / av.time_base
    durations = [float(s.duration * s.time_base) for s in container.streams
                 if s.duration and s.time_base]
    return max(durations, default=0.0)


def _media_info(path: Path, container: av.container.InputContainer) -> MediaInfo:
    """Build MediaInfo from an open container."""
    audio = container.streams.audio[0] if container.streams.audio else None
    videos = [s for s in container.streams.video if not _is_picture(s)]
    video = videos[0] if videos else None
    if audio is None and video is None:
        raise BadMedia("input is not a media file (no audio or video stream)")
    return MediaInfo(
        path=path, container=container.format.name, duration=_duration(container),
        has_video=video is not None, has_audio=audio is not None,
        audio_codec=audio.codec_context.name if audio else None,
        video_codec=video.codec_context.name if video else None,
        sample_rate=audio.codec_context.sample_rate if audio else None,
        channels=audio.codec_context.channels if audio else None,
        width=video.codec_context.width if video else None,
        height=video.codec_context.height if video else None,
    )


def probe(path: str | Path) -> MediaInfo:
    """Describe the input's container and streams, or raise BadMedia with a reason."""
    path = Path(path)
    with _open(path) as container:
        return _media_info(path, container)


def _audio_frames(container: av.container.InputContainer) -> Iterator[av.AudioFrame]:
    """Decode the first audio stream, tolerating a few bad packets; stop at a broken demux."""
    stream = container.streams.audio[0]
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.FFmpegError as exc:
                bad += 1
                logger.debug("skipping undecodable audio packet: %s", exc)
                if bad > MAX_BAD_PACKETS:
                    raise BadMedia(f"input is truncated or corrupt: {_reason(exc)}") from exc
    except av.FFmpegError as exc:  # the demuxer hit broken data: keep what decoded so far
        logger.warning("audio demux stopped early: %s", exc)


def _write(wav: sf.SoundFile, frames: list[av.AudioFrame]) -> int:
    """Write resampled mono frames; return the number of samples written."""
    written = 0
    for frame in frames:
        samples = np.ascontiguousarray(frame.to_ndarray().reshape(-1), dtype=np.float32)
        wav.write(samples)
        written += samples.size
    return written


def _check_complete(decoded: float, declared: float) -> None:
    """Raise if far less audio decoded than the container declares (a cut-off file)."""
    if decoded <= 0:
        raise BadMedia("input's audio stream holds no decodable audio")
    if declared > 0 and decoded < 0.5 * declared and declared - decoded > 1.0:
        raise BadMedia(f"input is truncated or corrupt: decoded {decoded:.1f} s of audio "
                       f"but the container declares {declared:.1f} s")


def decode_audio(path: str | Path, out_wav: str | Path, sample_rate: int = 16000) -> DecodedAudio:
    """Decode the first audio stream to a mono float32 wav at `sample_rate`."""
    path, out_wav = Path(path), Path(out_wav)
    with _open(path) as container:
        info = _media_info(path, container)
        if not info.has_audio:
            raise BadMedia("input has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        with sf.SoundFile(out_wav, "w", sample_rate, 1, subtype="FLOAT") as wav:
            samples = sum(_write(wav, resampler.resample(f)) for f in _audio_frames(container))
            samples += _write(wav, resampler.resample(None))
    duration = samples / sample_rate
    try:
        _check_complete(duration, info.duration)
    except BadMedia:
        out_wav.unlink(missing_ok=True)
        raise
    logger.info("decoded %.1f s of audio from %s", duration, path.name)
    return DecodedAudio(wav_path=out_wav, sample_rate=sample_rate, duration=duration)


def load_samples(audio: DecodedAudio) -> np.ndarray:
    """Read decoded audio back as a float32 array."""
    samples, _ = sf.read(audio.wav_path, dtype="float32", always_2d=False)
    return samples
