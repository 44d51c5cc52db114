"""Settings precedence: CLI flags > HOLOFS_* env > settings file > defaults."""

from __future__ import annotations

import json
import os

import pytest

from holofs.config import default_workers, load_settings
from holofs.errors import UsageError


@pytest.fixture
def settings_file(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('strategy = "copy"\nverify = "always"\nworkers = 3\ncopy_patterns = ["*.so", "bin/*"]\n')
    return path


def test_precedence(tmp_path, settings_file):
    defaults = load_settings({}, environ={}, config_file=tmp_path / "absent.toml")
    assert (defaults.strategy, defaults.verify, defaults.workers) == ("auto", "trusted", default_workers())
    assert set(defaults.source.values()) == {"default"}

    from_file = load_settings({}, environ={}, config_file=settings_file)
    assert (from_file.strategy, from_file.verify, from_file.workers) == ("copy", "always", 3)
    assert from_file.copy_patterns == ("*.so", "bin/*")
    assert from_file.source["strategy"] == f"file {settings_file}" and from_file.source["compression"] == "default"

    env = {"HOLOFS_STRATEGY": "reflink", "HOLOFS_WORKERS": "7", "HOLOFS_COPY_PATTERNS": "a/*,b/*"}
    from_env = load_settings({}, environ=env, config_file=settings_file)
    assert (from_env.strategy, from_env.verify, from_env.workers) == ("reflink", "always", 7)
    assert from_env.copy_patterns == ("a/*", "b/*")
    assert from_env.source["strategy"] == "env HOLOFS_STRATEGY" and from_env.source["verify"].startswith("file ")

    from_cli = load_settings({"strategy": "hardlink", "workers": None, "verify": "skip"}, environ=env,
                             config_file=settings_file)
    assert (from_cli.strategy, from_cli.verify, from_cli.workers) == ("hardlink", "skip", 7)
    assert from_cli.source["strategy"] == "cli" and from_cli.source["workers"] == "env HOLOFS_WORKERS"


def test_fast_and_bad_values(tmp_path, settings_file):
    fast = load_settings({"fast": True}, environ={}, config_file=settings_file)
    assert (fast.strategy, fast.verify) == ("reflink", "trusted") and fast.source["verify"] == "fast (cli)"
    # An explicit flag beats --fast.
    fast = load_settings({"fast": True, "verify": "always"}, environ={}, config_file=settings_file)
    assert fast.verify == "always" and fast.strategy == "reflink"
    with pytest.raises(UsageError, match="HOLOFS_VERIFY"):
        load_settings({}, environ={"HOLOFS_VERIFY": "sometimes"}, config_file=settings_file)
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'red'\n")
    with pytest.raises(UsageError, match="colour"):
        load_settings({}, environ={}, config_file=bad)
    bad.write_text("workers = [\n")
    with pytest.raises(UsageError, match="unreadable"):
        load_settings({}, environ={}, config_file=bad)


def test_config_cli_json(tmp_path, settings_file, holofs_cli):
    env = {"HOLOFS_CONFIG": str(settings_file), "HOLOFS_VERIFY": "skip", "HOLOFS_CACHE_DIR": str(tmp_path / "c")}
    proc = holofs_cli("config", "--json", env=env, check=True)
    out = json.loads(proc.stdout)
    s = out["settings"]
    assert out["config_file"] == str(settings_file)
    assert s["strategy"] == {"value": "copy", "source": f"file {settings_file}"}
    assert s["verify"] == {"value": "skip", "source": "env HOLOFS_VERIFY"}
    assert s["cache_dir"] == {"value": str(tmp_path / "c"), "source": "env HOLOFS_CACHE_DIR"}
    assert s["compression"]["source"] == "default"
    text = holofs_cli("config", env=env, check=True).stdout
    assert "env HOLOFS_VERIFY" in text and "skip" in text
    proc = holofs_cli("config", env={**env, "HOLOFS_WORKERS": "many"})
    assert proc.returncode == 2 and "HOLOFS_WORKERS" in proc.stderr and "Traceback" not in proc.stderr


def test_materialize_uses_settings(tmp_path, rcc_catalog, holofs_cli):
    """A settings-file strategy reaches materialize, and a flag overrides it."""
    settings = tmp_path / "s.toml"
    settings.write_text('strategy = "copy"\nverify = "always"\n')
    env = {"HOLOFS_CONFIG": str(settings), "HOLOFS_CACHE": str(tmp_path / "cache")}
    (tmp_path / "a").mkdir()
    target = tmp_path / "a" / "h0000000_0000000000aaaat"
    proc = holofs_cli("materialize", "--json", "--relocate-name-only", rcc_catalog, target, env=env, check=True)
    report = json.loads(proc.stdout)
    assert report["verified_blobs"] == report["files_written"] == 9
    proc = holofs_cli("materialize", "--json", "--verify", "skip", "--relocate-name-only", rcc_catalog,
                      tmp_path / "a" / "h0000000_0000000000bbbbt", env=env, check=True)
    assert json.loads(proc.stdout)["verified_blobs"] == 0


@pytest.mark.parametrize("xdg", [None, "", "   ", "/abs/dir", "relative/dir", "/abs/with space "])
def test_default_dirs_follow_platformdirs(monkeypatch, xdg):
    """On Linux holofs computes its default cache and settings paths itself (platformdirs takes
    ~4 ms to import): the result must be platformdirs' for every kind of XDG value."""
    import platformdirs

    from holofs.paths import default_cache_dir, default_config_file

    monkeypatch.delenv("HOLOFS_CACHE", raising=False)
    monkeypatch.delenv("HOLOFS_CONFIG", raising=False)
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        if xdg is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, xdg)
    assert str(default_cache_dir()) == platformdirs.user_cache_dir("holofs")
    assert str(default_config_file()) == os.path.join(platformdirs.user_config_dir("holofs"), "settings.toml")
