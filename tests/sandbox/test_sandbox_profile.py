"""FaultProfile: determinism, outage windows, address rules, rates, file formats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pushguard.sandbox import Fault, FaultProfile, Profiles


def _run(profile: FaultProfile, n: int, address: str = "user-1") -> list[Fault]:
    return [profile.decide(address, now=profile.started_at) for _ in range(n)]


def test_same_seed_same_sequence() -> None:
    spec = {"seed": 42, "rates": {"503": 0.3, "timeout": 0.1, "reset": 0.1}, "latency_ms": [1, 9]}
    first, second = FaultProfile.from_dict(spec), FaultProfile.from_dict(spec)
    assert _run(first, 300) == _run(second, 300)
    other = FaultProfile.from_dict({**spec, "seed": 43})
    assert _run(other, 300) != _run(FaultProfile.from_dict(spec), 300)


def test_restart_replays_the_sequence() -> None:
    profile = FaultProfile(seed=3, rates={"429": 0.5})
    before = _run(profile, 50)
    profile.restart()
    assert _run(profile, 50) == before


def test_latency_is_within_bounds() -> None:
    profile = FaultProfile(seed=1, latency_ms=(5.0, 10.0))
    delays = [f.delay for f in _run(profile, 200)]
    assert all(0.005 <= d <= 0.010 for d in delays)
    assert len(set(delays)) > 100


def test_outage_windows_follow_the_clock() -> None:
    profile = FaultProfile.from_dict(
        {
            "retry_after": 7,
            "outages": [
                {"start": 1, "end": 2, "status": 503},
                {"start": 3, "end": 4, "status": "reset"},
                {"start": 5, "end": 6, "status": "timeout"},
            ],
            "timeout_s": 2.5,
        }
    )
    profile.restart(now=100.0)
    assert profile.decide("a", now=100.5).kind == "ok"
    outage = profile.decide("a", now=101.5)
    assert (outage.kind, outage.status, outage.retry_after, outage.reason) == (
        "status",
        503,
        7.0,
        "outage",
    )
    assert profile.decide("a", now=102.0).kind == "ok"  # end is exclusive
    assert profile.decide("a", now=103.2).kind == "reset"
    hang = profile.decide("a", now=105.9)
    assert (hang.kind, hang.hang) == ("timeout", 2.5)
    assert profile.decide("a", now=106.0).kind == "ok"


def test_outage_beats_address_rules() -> None:
    profile = FaultProfile.from_dict({"outages": [{"start": 0, "end": 10, "status": 500}]})
    assert profile.decide("dead-1", now=profile.started_at + 1).status == 500


def test_address_rules() -> None:
    profile = FaultProfile(timeout_s=4.0)
    dead = profile.decide("dead-token")
    assert (dead.kind, dead.status, dead.reason, dead.outcome) == ("status", 410, "gone", "410")
    invalid = profile.decide("an-invalid-token")
    assert (invalid.status, invalid.reason) == (400, "invalid")
    slow = profile.decide("slow@example.com")
    assert (slow.kind, slow.hang, slow.outcome) == ("timeout", 4.0, "timeout")
    flaky = [profile.decide("flaky-1") for _ in range(3)]
    assert [f.outcome for f in flaky] == ["503", "200", "200"]
    assert flaky[0].retry_after == 1.0
    assert profile.decide("flaky-2").outcome == "503"  # first request per address
    assert FaultProfile(address_rules=False).decide("dead-x").kind == "ok"


def test_rates_are_roughly_respected() -> None:
    rates = {"503": 0.2, "429": 0.1, "reset": 0.05, "html": 0.05, "invalid": 0.05}
    profile = FaultProfile(seed=11, rates=rates)
    counts: Counter[str] = Counter()
    for i in range(2000):
        fault = profile.decide(f"user-{i}")
        counts[fault.reason if fault.reason in ("html", "invalid") else fault.outcome] += 1
    assert 300 <= counts["503"] <= 500
    assert 130 <= counts["429"] <= 270
    for kind in ("reset", "html", "invalid"):
        assert 50 <= counts[kind] <= 150, kind
    assert 900 <= counts["200"] <= 1200


def test_fault_shapes_from_rates() -> None:
    def only(kind: str) -> Fault:
        return FaultProfile(rates={kind: 1.0}, retry_after=2.0, timeout_s=9).decide("x")

    assert only("429").retry_after == 2.0
    assert only("500").retry_after is None
    assert only("410").reason == "gone"
    assert (only("html").status, only("html").reason) == (502, "html")
    assert (only("timeout").kind, only("timeout").hang) == ("timeout", 9)
    assert only("reset").kind == "reset"


@pytest.mark.parametrize(
    "spec",
    [
        {"rates": {"503": 0.7, "429": 0.5}},
        {"rates": {"418": 0.1}},
        {"rates": {"503": -0.1}},
        {"colour": "red"},
        {"latency_ms": [10, 1]},
        {"outages": [{"start": 5, "end": 1}]},
        {"outages": [{"start": 0, "end": 1, "status": "teapot"}]},
    ],
)
def test_invalid_profiles_are_rejected(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultProfile.from_dict(spec)


def test_dict_round_trip() -> None:
    profile = FaultProfile.from_dict(
        {
            "seed": 5,
            "latency_ms": 3,
            "rates": {"timeout": 0.1},
            "retry_after": None,
            "outages": [{"start": 1, "end": 2, "status": "timeout"}],
            "timeout_s": 1.5,
        }
    )
    assert profile.latency_ms == (3.0, 3.0)
    again = FaultProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile


def test_load_json_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text(
        'seed = 9\nretry_after = false\nrates = { "503" = 0.25 }\n'
        "[[outages]]\nstart = 0\nend = 5\nstatus = 429\n"
    )
    profile = FaultProfile.load(toml)
    assert (profile.seed, profile.retry_after, profile.rates) == (9, None, {"503": 0.25})
    assert profile.outages[0].status == 429
    js = tmp_path / "p.json"
    js.write_text(json.dumps(profile.to_dict()))
    assert FaultProfile.load(js) == profile
    with pytest.raises(ValueError):
        FaultProfile.load(tmp_path / "p.yaml")


def test_profiles_layout(tmp_path: Path) -> None:
    path = tmp_path / "all.toml"
    path.write_text('[default]\nseed = 1\n[fcm]\nrates = { "503" = 1.0 }\n')
    profiles = Profiles.load(path)
    assert profiles.get("fcm").rates == {"503": 1.0}
    assert profiles.get("apns") is profiles.default
    assert Profiles.from_obj({"seed": 4}).get("sms").seed == 4
    profiles.set({"rates": {"429": 1.0}}, "sms")
    assert profiles.get("sms").decide("x").status == 429
    profiles.replace({"seed": 2})
    assert profiles.get("fcm").seed == 2
    with pytest.raises(ValueError):
        profiles.set({}, "pigeon")
