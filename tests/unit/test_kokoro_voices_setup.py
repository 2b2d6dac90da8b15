"""The native-voice installer on a small fake kokoro-js tarball, the pitch tracker, voice choice."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from worker import kokoro_voices as kv
from worker.stages.pitch import MALE_BELOW_HZ, median_f0, speaker_pitch
from worker.stages.tts import choose_voice


def _voice(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(kv.VOICE_SHAPE).astype(np.float32)


@pytest.fixture
def fake(tmp_path):
    """A tarball laid out like kokoro-js's (package/voices/NAME.bin), its pins and its voices."""
    voices = {"ef_dora": _voice(1), "em_alex": _voice(2)}
    path = tmp_path / "kokoro-js-1.2.1.tgz"
    with tarfile.open(path, "w:gz") as tar:
        files = {"package/package.json": b'{"name": "kokoro-js"}',
                 "package/voices/af_heart.bin": _voice(3).tobytes(),
                 **{f"package/voices/{n}.bin": a.tobytes() for n, a in voices.items()}}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pinned = {n: hashlib.sha256(a.tobytes()).hexdigest() for n, a in voices.items()}
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, pinned, sha, voices


def test_install_writes_a_kokoro_onnx_voices_file_with_manifest(fake, tmp_path):
    tarball, pinned, sha, voices = fake
    root = tmp_path / "models"
    message = kv.install(root, tarball, pinned=pinned, tarball_sha256=sha)
    assert message.startswith("installed 2 native Kokoro voices")
    with np.load(root / kv.VOICES_FILE) as data:  # what kokoro-onnx does with voices_path
        assert sorted(data.files) == ["ef_dora", "em_alex"]
        assert data["em_alex"].shape == (510, 1, 256) and data["em_alex"].dtype == np.float32
        assert np.array_equal(data["ef_dora"], voices["ef_dora"])
    manifest = json.loads((root / kv.MANIFEST_FILE).read_text())
    assert manifest["voices"] == pinned
    assert manifest["sha256"] == hashlib.sha256((root / kv.VOICES_FILE).read_bytes()).hexdigest()
    assert kv.installed_voices(root, pinned) == {"ef_dora", "em_alex"}
    assert kv.verify(root, pinned) == "2 voices, sha256 ok"
    assert sorted(p.name for p in root.iterdir()) == [kv.MANIFEST_FILE, kv.VOICES_FILE]


def test_install_is_idempotent_and_fetches_nothing_when_valid(fake, tmp_path):
    tarball, pinned, sha, _ = fake
    root = tmp_path / "models"
    kv.install(root, tarball, pinned=pinned, tarball_sha256=sha)
    before = (root / kv.VOICES_FILE).stat()
    # no tarball and no npm: a second run must not need either
    message = kv.install(root, None, npm="no-such-npm-here", pinned=pinned, tarball_sha256=sha)
    assert message.startswith("native Kokoro voices already installed")
    after = (root / kv.VOICES_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_damaged_voices_file_is_not_used_and_is_reinstalled(fake, tmp_path):
    tarball, pinned, sha, _ = fake
    root = tmp_path / "models"
    kv.install(root, tarball, pinned=pinned, tarball_sha256=sha)
    raw = bytearray((root / kv.VOICES_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (root / kv.VOICES_FILE).write_bytes(bytes(raw))
    assert kv.installed_voices(root, pinned) == frozenset()
    with pytest.raises(kv.VoiceInstallError):
        kv.verify(root, pinned)
    assert kv.install(root, tarball, pinned=pinned, tarball_sha256=sha).startswith("installed")
    assert kv.installed_voices(root, pinned) == {"ef_dora", "em_alex"}


def test_tarball_sha256_mismatch_installs_nothing(fake, tmp_path):
    tarball, pinned, _, _ = fake
    root = tmp_path / "models"
    with pytest.raises(kv.VoiceInstallError, match="expected 0000"):
        kv.install(root, tarball, pinned=pinned, tarball_sha256="0" * 64)
    assert not root.exists() or not list(root.iterdir())


def test_voice_not_matching_its_pin_installs_nothing(fake, tmp_path):
    tarball, pinned, sha, _ = fake
    root = tmp_path / "models"
    with pytest.raises(kv.VoiceInstallError, match="em_alex"):
        kv.install(root, tarball, pinned={**pinned, "em_alex": "f" * 64}, tarball_sha256=sha)
    with pytest.raises(kv.VoiceInstallError, match="no package/voices/pm_alex.bin"):
        kv.install(root, tarball, pinned={**pinned, "pm_alex": "f" * 64}, tarball_sha256=sha)
    assert not root.exists() or not list(root.iterdir())


def test_missing_npm_is_a_clear_error(tmp_path):
    with pytest.raises(kv.VoiceInstallError, match="npm is not installed"):
        kv.fetch_tarball(tmp_path, npm="no-such-npm-here")


def test_setup_entry_point_warns_and_fails_softly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DUBFLEET_MODEL_DIR", str(tmp_path / "models"))
    bad = tmp_path / "kokoro-js-1.2.1.tgz"
    bad.write_bytes(b"not a tarball")
    assert kv.main(["--tarball", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "warning: native Kokoro voices not installed" in err and "Japanese voice pack" in err


def test_pinned_real_voices_and_their_languages():
    assert kv.TARBALL_SHA256 == "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
    assert {kv.voice_language(n) for n in kv.VOICES} == {"es", "fr", "it", "pt", None}
    assert kv.voice_language("jm_kumo") is None and kv.voice_gender("em_alex") == "male"
    assert kv.voice_gender("pf_dora") == "female"


# --- pitch ---------------------------------------------------------------------------------

def _voiced(f0: float, seconds: float = 4.0, sr: int = 16000) -> np.ndarray:
    """A harmonic-rich tone at f0 with 200 ms gaps every second (like speech with pauses)."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    x[(t % 1.0) > 0.8] = 0.0
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("f0", [95.0, 120.0, 210.0, 250.0])
def test_median_f0_of_harmonic_tones(f0):
    assert median_f0(_voiced(f0), 16000) == pytest.approx(f0, rel=0.02)


def test_noise_and_silence_have_no_pitch():
    rng = np.random.default_rng(0)
    assert median_f0(rng.standard_normal(32000).astype(np.float32) * 0.1, 16000) is None
    assert median_f0(np.zeros(32000, np.float32), 16000) is None


def test_speaker_pitch_reads_only_the_given_spans(tmp_path):
    wav = tmp_path / "two.wav"
    sf.write(wav, np.concatenate([_voiced(110.0), _voiced(230.0)]), 16000)
    assert speaker_pitch(wav, [(0.0, 4.0)]) == pytest.approx(110.0, rel=0.02)
    assert speaker_pitch(wav, [(4.0, 8.0)]) == pytest.approx(230.0, rel=0.02)
    # under 3 s of spans: the start of the file is measured instead
    assert speaker_pitch(wav, [(5.0, 6.0)], fallback_seconds=4.0) == pytest.approx(110, rel=0.02)


# --- choosing the voice --------------------------------------------------------------------

class _TwoVoices:
    """An engine with a male and a female voice for Spanish."""

    name = "fake"

    def voice_for(self, lang, gender):
        return {"male": "em_alex", "female": "ef_dora"}[gender] if lang == "es" else None

    def default_voice_for(self, lang):
        return "jm_kumo", "fallback"


class _NoChoice:
    name = "plain"


@pytest.mark.parametrize(("f0", "voice", "gender"), [(110.0, "em_alex", "male"),
                                                      (220.0, "ef_dora", "female")])
def test_voice_follows_source_pitch(tmp_path, f0, voice, gender):
    wav = tmp_path / "src.wav"
    sf.write(wav, _voiced(f0), 16000)
    chosen, report = choose_voice(_TwoVoices(), "es", None, wav, [(0.0, 4.0)])
    assert chosen == voice and report == {
        "voice": voice, "voice_reason": f"source median pitch {f0:.0f} Hz → {gender}"}
    assert (f0 < MALE_BELOW_HZ) == (gender == "male")


def test_voice_option_and_engine_defaults(tmp_path):
    wav = tmp_path / "src.wav"
    sf.write(wav, _voiced(110.0), 16000)
    assert choose_voice(_TwoVoices(), "es", "em_santa", wav) == (
        "em_santa", {"voice": "em_santa", "voice_reason": "job option voice"})
    assert choose_voice(_TwoVoices(), "fr", None, wav) == (
        None, {"voice": "jm_kumo", "voice_reason": "fallback"})
    assert choose_voice(_NoChoice(), "es", None, wav) == (
        None, {"voice": None, "voice_reason": "plain default"})
    sf.write(wav, np.zeros(16000 * 4, np.float32), 16000)  # nothing voiced to measure
    assert choose_voice(_TwoVoices(), "es", None, wav) == (
        "ef_dora", {"voice": "ef_dora", "voice_reason": "source pitch not measurable"})
