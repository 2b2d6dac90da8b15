"""Speech-onset refinement, TTS silence trimming and onset placement, on synthetic signals."""
from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
sf = pytest.importorskip("soundfile")
pytest.importorskip("scipy")

from worker.stages.audio import trim_silence  # noqa: E402
from worker.stages.fit import FitOptions, fit_segments  # noqa: E402
from worker.stages.onset import line_onset, onset_summary, speech_onsets  # noqa: E402
from worker.stages.types import SynthesizedSegment, TranslatedSegment, Word  # noqa: E402

SR = 16000


def _noise(seconds: float, db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * SR))) * 10 ** (db / 20)).astype(np.float32)


def _speech(seconds: float, db: float = -20.0) -> np.ndarray:
    """A voiced-like burst: 150 Hz harmonics under a 4 Hz syllable envelope (never silent)."""
    t = np.arange(int(round(seconds * SR))) / SR
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2 * t + np.pi / 2))
    x = tone * envelope
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (db / 20)).astype(np.float32)


def _wav(tmp_path, seconds: float, parts, name="src.wav", floor_db: float = -60.0):
    """Noise at floor_db with (start, audio) parts added; written as a 16 kHz wav."""
    audio = _noise(seconds, floor_db)
    for start, part in parts:
        at = int(round(start * SR))
        audio[at:at + len(part)] += part[:len(audio) - at]
    path = tmp_path / name
    sf.write(path, audio, SR, subtype="FLOAT")
    return path


def _seg(i: int, start: float, end: float) -> TranslatedSegment:
    return TranslatedSegment(i, start, end, "src", "tgt")


def _words(*spans) -> tuple[Word, ...]:
    return tuple(Word(a, b, f"w{i}") for i, (a, b) in enumerate(spans))


def test_onset_moves_an_early_start_onto_the_speech(tmp_path):
    wav = _wav(tmp_path, 5.0, [(2.30, _speech(1.5))])
    onset = line_onset(wav, _seg(0, 1.80, 3.80), _words((1.80, 2.50), (2.50, 2.80)), 0.0)
    assert onset.method == "energy" and onset.onset == pytest.approx(2.30, abs=0.02)
    assert onset.recognised == 1.80 and onset.word == 1.80
    assert onset.shift == pytest.approx(0.50, abs=0.02)


def test_a_late_word_start_is_moved_earlier_but_not_before_the_previous_line(tmp_path):
    wav = _wav(tmp_path, 5.0, [(2.00, _speech(1.5))])
    onset = line_onset(wav, _seg(1, 2.20, 3.50), _words((2.20, 2.60), (2.60, 2.90)), 1.0)
    assert onset.method == "energy" and onset.onset == pytest.approx(2.00, abs=0.02)
    capped = line_onset(wav, _seg(1, 2.20, 3.50), _words((2.20, 2.60), (2.60, 2.90)), 2.10)
    assert capped.onset >= 2.10  # speech already going at the previous line's end: no onset


def test_previous_line_still_sounding_at_the_window_start_is_not_an_onset(tmp_path):
    # the recogniser stretched the first word over the silence: it "starts" at 1.9
    wav = _wav(tmp_path, 6.0, [(0.50, _speech(1.50)), (3.00, _speech(1.5))])
    onset = line_onset(wav, _seg(1, 1.90, 5.00), _words((1.90, 2.60), (3.10, 3.40)), 1.90)
    assert onset.method == "energy" and onset.onset == pytest.approx(3.00, abs=0.02)


def test_the_stretch_after_the_longest_pause_wins(tmp_path):
    # the previous line's last word (1.75-2.0) sits after 0.2 s of pause inside the window;
    # the line itself starts at 3.0 after a whole second of silence
    wav = _wav(tmp_path, 6.0, [(0.50, _speech(1.05)), (1.75, _speech(0.25)), (3.00, _speech(1.5))])
    onset = line_onset(wav, _seg(1, 1.60, 5.00), _words((1.60, 2.90), (3.10, 3.40)), 1.60)
    assert onset.onset == pytest.approx(3.00, abs=0.02)


def test_a_click_is_not_speech(tmp_path):
    click = np.zeros(int(0.01 * SR), np.float32)
    click[::7] = 0.5
    wav = _wav(tmp_path, 5.0, [(2.00, click), (2.40, _speech(1.5))])
    onset = line_onset(wav, _seg(0, 1.90, 4.00), _words((1.90, 2.50), (2.50, 2.80)), 0.0)
    assert onset.onset == pytest.approx(2.40, abs=0.02)


def test_no_contrast_or_no_speech_falls_back_to_the_word_then_the_segment(tmp_path):
    steady = _wav(tmp_path, 5.0, [(0.0, _speech(5.0))], "steady.wav")
    onset = line_onset(steady, _seg(0, 1.80, 3.80), _words((2.00, 2.30), (2.30, 2.60)), 1.0)
    assert onset.method == "word" and onset.onset == 2.00
    quiet = _wav(tmp_path, 5.0, [], "quiet.wav")
    assert line_onset(quiet, _seg(0, 1.8, 3.8), (), 0.0).method == "segment"
    assert line_onset(quiet, _seg(0, 1.8, 3.8), (), 0.0).onset == 1.8


def test_onset_never_goes_past_the_segment_end(tmp_path):
    wav = _wav(tmp_path, 6.0, [(4.00, _speech(1.5))])
    onset = line_onset(wav, _seg(0, 1.00, 3.00), _words((1.00, 1.40), (1.40, 1.80)), 0.0)
    assert onset.onset <= 3.00 and onset.method == "word"


def test_speech_onsets_chain_previous_ends_and_summarise(tmp_path):
    wav = _wav(tmp_path, 8.0, [(1.30, _speech(1.5)), (4.40, _speech(2.0))])
    timeline = [_seg(0, 1.00, 2.90), _seg(1, 4.00, 6.50)]
    words = {0: _words((1.00, 1.60), (1.60, 1.90)), 1: _words((4.00, 4.70), (4.70, 5.00))}
    onsets = speech_onsets(timeline, words, wav)
    assert onsets[0].onset == pytest.approx(1.30, abs=0.02)
    assert onsets[1].onset == pytest.approx(4.40, abs=0.02)
    summary = onset_summary(onsets)
    assert summary["methods"] == {"energy": 2}
    assert summary["mean_shift"] == pytest.approx(0.35, abs=0.02)
    assert summary["max_shift"] == pytest.approx(0.40, abs=0.02)


def test_trim_drops_tts_padding_and_engine_noise_but_keeps_the_voice():
    sr = 24000
    t = np.arange(sr) / sr
    voice = (0.9 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # 1 s at about -4 dBFS
    rng = np.random.default_rng(3)

    def hiss(seconds: float, db: float = -47.0) -> np.ndarray:  # engine noise above -50 dBFS
        return (rng.standard_normal(int(seconds * sr)) * 10 ** (db / 20)).astype(np.float32)

    clip = np.concatenate([hiss(0.4), voice, hiss(0.6)])
    clip[int(0.1 * sr)] = 0.9  # a lone click in the leading padding
    out = trim_silence(clip, sr, threshold_db=-50.0, below_peak_db=40.0, pad=0.01)
    assert len(out) == pytest.approx(sr * 1.02, abs=sr * 0.012)
    assert np.flatnonzero(np.abs(out) > 0.05)[0] / sr <= 0.012  # the voice opens the clip
    assert len(trim_silence(np.zeros(sr, np.float32), sr)) == 0
    assert len(trim_silence(hiss(0.5, -85.0), sr)) == 0  # below the absolute floor: silence
    assert len(trim_silence(clip, sr, below_peak_db=80.0)) > 1.3 * sr  # hiss kept when asked


def _clip(tmp_path, index: int, seconds: float, lead: float = 0.3) -> SynthesizedSegment:
    sr = 24000
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
    audio = np.concatenate([np.zeros(int(lead * sr), np.float32), tone,
                            np.zeros(sr // 5, np.float32)])
    path = tmp_path / f"clip{index}.wav"
    sf.write(path, audio, sr)
    return SynthesizedSegment(index, path, len(audio) / sr, "tone", sr)


def test_fit_places_clips_on_their_onsets_without_their_padding(tmp_path):
    timeline = [_seg(0, 1.00, 3.00), _seg(1, 3.20, 5.00), _seg(2, 5.50, 6.50)]
    clips = [_clip(tmp_path, 0, 2.2), _clip(tmp_path, 1, 1.0), _clip(tmp_path, 2, 0.5)]
    # 1: onset 3.6; 2: an onset past its segment's end is ignored
    fit = fit_segments(clips, timeline, 8.0, FitOptions(sample_rate=48000),
                       onsets={0: 1.30, 1: 3.60, 2: 7.00})
    p0, p1, p2 = fit.placed
    assert p0.slot_start == 1.00 and p0.placed_start == pytest.approx(1.30, abs=1e-3)
    assert p1.slot_start == 3.20 and p1.placed_start == pytest.approx(3.60, abs=1e-3)
    assert p2.placed_start == pytest.approx(5.50, abs=1e-3)
    # the previous clip may run until the next onset (less the gap), not the next segment start
    assert p0.placed_end == pytest.approx(3.52, abs=0.012) and p0.speed == 1.0
    assert p0.flags == ("borrowed_gap",)  # limited by segment 1's start it would be sped up
    voice, sr = fit.voice, fit.sample_rate
    first = np.flatnonzero(np.abs(voice) > 0.01)[0] / sr
    assert first == pytest.approx(1.30, abs=0.015)  # the tone, not the clip's 0.3 s padding
    assert p0.synth_duration == pytest.approx(2.22, abs=0.015)


def test_a_short_pause_after_the_first_word_does_not_move_the_line(tmp_path):
    # a segment split mid-sentence: "...than he | was." - "he" runs on from the previous words,
    # then a 0.25 s gap before "was": the line keeps its first word's start
    wav = _wav(tmp_path, 4.0, [(0.00, _speech(1.25)), (1.50, _speech(0.7))])
    onset = line_onset(wav, _seg(1, 1.00, 2.20), _words((1.00, 1.20), (1.50, 2.20)), 1.00)
    assert onset.method == "word" and onset.onset == 1.00
