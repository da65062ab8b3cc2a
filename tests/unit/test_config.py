from __future__ import annotations

from pathlib import Path

import pytest

from pushguard import config
from pushguard.settings import Settings


def check(tmp_path: Path, text: str, **settings: object) -> list[str]:
    path = tmp_path / "pushguard.toml"
    path.write_text(text)
    _, problems = config.check(Settings(config=str(path), **settings))  # type: ignore[arg-type]
    return [str(p) for p in problems]


def test_defaults_without_a_file() -> None:
    cfg = config.load(Settings(config=""))
    assert dict(cfg.channels) == {"webhook": ("webhook",)}


def test_a_good_file_has_no_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TOKEN", "t0k")
    text = """
[channels.sms]
providers = ["a", "b"]
[providers.a]
type = "http"
url = "https://sms.example.com/send"
headers = { Authorization = "env:GW_TOKEN" }
timeout = 5
[providers.b]
type = "http"
url = "https://backup.example.com/send"
[breaker]
failure_ratio = 0.25
"""
    assert check(tmp_path, text) == []
    cfg = config.load(Settings(config=str(tmp_path / "pushguard.toml")))
    assert cfg.channels["sms"] == ("a", "b") and cfg.breaker.failure_ratio == 0.25


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    problems = check(tmp_path, """
[channels.pigeon]
providers = ["hook"]
[channels.sms]
providers = ["hook", "ghost", "slow"]
[providers.hook]
type = "webhook"
[providers.slow]
type = "http"
url = "https://x.example"
timeout = 50
[retry]
base = "fast"
""", lease_seconds=60.0)
    text = "\n".join(problems)
    assert "channels.pigeon: unknown channel 'pigeon'" in text
    assert "provider 'hook' (type webhook) cannot send on 'sms'" in text
    assert "provider 'ghost' is not defined" in text
    assert "timeout 50 s is more than half the lease" in text
    assert "retry.base: 'base' must be a number" in text


def test_env_references_resolve_inside_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLD_SECRET", "a")
    monkeypatch.setenv("NEW_SECRET", "b")
    assert config.resolve(["env:OLD_SECRET", "env:NEW_SECRET"], location="x") == ["a", "b"]
    with pytest.raises(Exception, match="MISSING_VAR is not set"):
        config.resolve({"k": ["env:MISSING_VAR"]}, location="x")


def test_zero_is_a_value_not_a_missing_setting(tmp_path: Path) -> None:
    path = tmp_path / "pushguard.toml"
    path.write_text('[breaker]\nfailure_ratio = 0.0\nopen_seconds = 0\n'
                    '[channels.webhook]\nproviders = ["webhook"]\n'
                    '[providers.webhook]\ntype = "webhook"\n')
    cfg = config.load(Settings(config=str(path)))
    assert cfg.breaker.failure_ratio == 0.0 and cfg.breaker.open_seconds == 0.0
