"""The `coordinator` command line: keys and pruning, run in-process with CliRunner."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from coordinator.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Invoke the CLI against a temporary data directory."""
    for name in ("DATABASE_URL", "WORKER_API_KEY", "ADMIN_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    data_dir = str(tmp_path / "data")

    def invoke(*args: str):
        return CliRunner().invoke(main, [*args[:1], "--data-dir", data_dir, *args[1:]], catch_exceptions=False)

    return invoke


def test_create_list_and_revoke_keys(run):
    created = run("create-key", "--kind", "client", "--name", "alice")
    assert created.exit_code == 0
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("dfc_") and len(key) > 40
    listing = run("list-keys")
    assert "alice" in listing.stdout and "client" in listing.stdout and key not in listing.stdout
    key_id = listing.stdout.split()[0]
    assert run("revoke-key", "--id", key_id).exit_code == 0
    assert "revoked" in run("list-keys").stdout
    assert run("revoke-key", "--id", key_id).exit_code != 0


def test_key_prefixes_follow_kind(run):
    for kind, prefix in (("worker", "dfw_"), ("admin", "dfa_")):
        assert run("create-key", "--kind", kind, "--name", kind).stdout.startswith(prefix)


def test_bad_kind_is_rejected(run):
    assert run("create-key", "--kind", "root", "--name", "x").exit_code == 2


def test_prune_reports_counts(run):
    result = run("prune", "--days", "7")
    assert result.exit_code == 0 and "pruned 0 jobs" in result.stdout


def test_serve_help_lists_env_vars():
    text = CliRunner().invoke(main, ["serve", "--help"]).stdout
    for word in ("--host", "--port", "--threads", "--data-dir", "PORT", "DUBFLEET_DATA_DIR"):
        assert word in text
