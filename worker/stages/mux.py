"""Mux stage: put the dubbed audio next to the source video (video stream copied, never re-encoded).

The dub is the first, default audio track; the original follows as the second track. The
container fits the codecs: mp4 when the video is H.264/HEVC/MPEG-4/AV1, Matroska otherwise
(VP8/VP9 webm sources, exotic codecs). Audio-only sources give just the dubbed audio (m4a).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from worker.errors import BadMedia
from worker.stages.audio import run_ffmpeg
from worker.stages.tts_engines.base import normalize_lang

logger = logging.getLogger(__name__)

_MP4_VIDEO = frozenset({"h264", "hevc", "mpeg4", "av1"})
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
_ISO2_TO_3 = {
    "en": "eng", "es": "spa", "fr": "fre", "de": "ger", "it": "ita", "pt": "por", "ru": "rus",
    "ja": "jpn", "zh": "chi", "ko": "kor", "ar": "ara", "hi": "hin", "nl": "dut", "pl": "pol",
    "tr": "tur", "cs": "cze", "hu": "hun", "ca": "cat", "uk": "ukr", "sv": "swe",
}
_AUDIO_FORMATS = {  # suffix -> (ffmpeg muxer, codec args)
    ".m4a": ("ipod", ["-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]),
    ".mp4": ("mp4", ["-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]),
    ".aac": ("adts", ["-c:a", "aac", "-b:a", "192k"]),
    ".mp3": ("mp3", ["-c:a", "libmp3lame", "-q:a", "2"]),
    ".opus": ("opus", ["-c:a", "libopus", "-b:a", "128k"]),
    ".ogg": ("ogg", ["-c:a", "libopus", "-b:a", "128k"]),
    ".flac": ("flac", ["-c:a", "flac"]),
    ".wav": ("wav", ["-c:a", "pcm_s16le"]),
}


@dataclass(frozen=True)
class SourceStreams:
    """What the muxer needs to know about the source's streams."""

    video_index: int | None
    video_codec: str | None
    audio_codec: str | None


def iso639_2(lang: str) -> str:
    """Language tag for container metadata: 'es' -> 'spa' (3-letter codes pass through)."""
    code = (lang or "").strip().lower()
    if len(code) == 3:
        return code
    return _ISO2_TO_3.get(normalize_lang(code), "und")


def probe_streams(path: Path) -> SourceStreams:
    """Find the main video stream (not cover art) and the first audio codec."""
    import av

    try:
        with av.open(str(path)) as container:
            videos = [s for s in container.streams.video
                      if not (s.disposition & av.stream.Disposition.attached_pic)]
            audios = container.streams.audio
            audio = audios[0].codec_context.name if audios else None
            if not videos:
                return SourceStreams(None, None, audio)
            return SourceStreams(videos[0].index, videos[0].codec_context.name, audio)
    except av.error.FFmpegError as exc:
        raise BadMedia(f"cannot read {path.name}: {exc}") from exc


def choose_container(video_codec: str | None, audio_codec: str | None = None) -> tuple[str, str]:
    """(suffix, ffmpeg muxer) that can hold the copied video: mp4 where it can, else mkv."""
    if video_codec is None:
        return ".m4a", "ipod"
    if video_codec in _MP4_VIDEO:
        return ".mp4", "mp4"
    return ".mkv", "matroska"


def mux_dubbed_video(source_video: Path, dubbed_audio_wav: Path, out_path: Path, *,
                     original_keep: bool = True, language: str = "spa",
                     original_language: str = "eng") -> Path:
    """Mux the dub (track 1, default) and the original audio (track 2) with the copied video.

    The dub is a wav (encoded to AAC here) or an AAC file (.m4a/.aac, copied as it is).

    `out_path`'s suffix is replaced by the container chosen; the written path is returned.
    """
    streams = probe_streams(Path(source_video))
    if streams.video_index is None:
        return encode_audio(dubbed_audio_wav, Path(out_path).with_suffix(".m4a"), language=language)
    suffix, muxer = choose_container(streams.video_codec, streams.audio_codec)
    out = Path(out_path).with_suffix(suffix)
    keep = original_keep and streams.audio_codec is not None
    args = ["-i", str(source_video), "-i", str(dubbed_audio_wav),
            "-map", f"0:{streams.video_index}", "-map", "1:a:0"]
    args += ["-map", "0:a:0"] if keep else []
    args += ["-c:v", "copy", *_dub_codec_args(Path(dubbed_audio_wav))]
    args += _dub_track_args(language)
    if keep:
        args += _original_track_args(streams.audio_codec, muxer, original_language)
    args += ["-movflags", "+faststart"] if muxer == "mp4" else []
    _write(args, out, muxer, "mux")
    logger.info("muxed %s (video %s copied, %d audio tracks)", out.name, streams.video_codec,
                1 + keep)
    return out


def _dub_codec_args(dub: Path) -> list[str]:
    """The dub track is copied when it is already AAC (the dubbed_audio.m4a artifact: one encode
    serves both outputs), else encoded."""
    if dub.suffix.lower() in (".m4a", ".aac"):
        return ["-c:a:0", "copy"]
    return ["-c:a:0", "aac", "-b:a:0", "192k"]


def _dub_track_args(language: str) -> list[str]:
    """Metadata and disposition of the dubbed track (first audio track)."""
    lang = iso639_2(language)
    return ["-disposition:a:0", "default", "-metadata:s:a:0", f"language={lang}",
            "-metadata:s:a:0", f"title=Dub ({lang})"]


def _original_track_args(codec: str | None, muxer: str, language: str) -> list[str]:
    """Codec, metadata and disposition of the original track: copied when the container allows."""
    copy = muxer != "mp4" or codec in _MP4_AUDIO
    codec_args = ["-c:a:1", "copy"] if copy else ["-c:a:1", "aac", "-b:a:1", "192k"]
    return codec_args + ["-disposition:a:1", "0",
                         "-metadata:s:a:1", f"language={iso639_2(language)}",
                         "-metadata:s:a:1", "title=Original"]


def encode_audio(wav: Path, out: Path, *, language: str | None = None) -> Path:
    """Encode a wav to the format its suffix names (m4a/AAC by default for unknown suffixes)."""
    out = Path(out)
    if out.suffix.lower() not in _AUDIO_FORMATS:
        out = out.with_suffix(".m4a")
    muxer, codec_args = _AUDIO_FORMATS[out.suffix.lower()]
    args = ["-i", str(wav), "-map", "0:a:0", "-vn", *codec_args]
    if language:
        args += ["-metadata:s:a:0", f"language={iso639_2(language)}"]
    _write(args, out, muxer, "audio encode")
    return out


def _write(args: list[str], out: Path, muxer: str, what: str) -> None:
    """Run ffmpeg into a temp file next to `out`, then move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.part")
    try:
        run_ffmpeg([*args, "-f", muxer, str(tmp)], what=what)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
