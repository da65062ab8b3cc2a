"""The link-signing key kept next to a SQLite database, created by whichever process needs it
first. Workers start together (``make bench`` starts one per core at once): a second process
used to find the file created but not yet written, or crash on ``O_EXCL``."""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from pushguard.audience.links import link_keys
from pushguard.exceptions import ConfigError
from pushguard.settings import Settings


def _settings(db: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{db}", secret_key="")


def _key_at_barrier(db: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    out.put(link_keys(_settings(Path(db))))


def test_processes_starting_together_share_one_whole_key(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # no fork of a process that may hold threads
    for round_ in range(4):
        db = tmp_path / f"r{round_}" / "p.db"
        n = 6
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_key_at_barrier, args=(str(db), barrier, out))
                 for _ in range(n)]
        for p in procs:
            p.start()
        keys = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert len({tuple(k) for k in keys}) == 1, keys
        (key,) = keys[0]
        assert len(key) >= 40  # token_urlsafe(32): never an empty or half-written read
        secret = db.with_name("p.db.secret")
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert [p.name for p in secret.parent.iterdir()] == ["p.db.secret"]  # no temp files


def test_the_key_is_kept_across_calls(tmp_path: Path) -> None:
    first = link_keys(_settings(tmp_path / "p.db"))
    assert link_keys(_settings(tmp_path / "p.db")) == first


def test_an_empty_or_truncated_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.db.secret").write_text("\n")
    with pytest.raises(ConfigError, match="no usable key"):
        link_keys(_settings(tmp_path / "p.db"))


def test_without_hard_links_the_key_is_still_made_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # what FAT or SMB answers

    monkeypatch.setattr("os.link", no_links)
    first = link_keys(_settings(tmp_path / "p.db"))
    assert len(first[0]) >= 40 and link_keys(_settings(tmp_path / "p.db")) == first
    assert [p.name for p in tmp_path.iterdir()] == ["p.db.secret"]


def test_configured_keys_win_and_postgres_needs_one(tmp_path: Path) -> None:
    s = Settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", secret_key="new, old")
    assert link_keys(s) == ["new", "old"]
    assert not (tmp_path / "p.db.secret").exists()
    with pytest.raises(ConfigError, match="PUSHGUARD_SECRET_KEY"):
        link_keys(Settings(database_url="postgresql://127.0.0.1/test", secret_key=""))


def test_a_candidate_left_by_a_killed_process_is_swept(tmp_path: Path) -> None:
    """SIGKILL between writing a candidate key and unlinking it left the file for good. The
    next process removes it, unless the process that wrote it still runs."""
    ctx = mp.get_context("spawn")
    gone = ctx.Process(target=int)
    gone.start()
    gone.join(timeout=30)
    assert gone.pid is not None
    dead = tmp_path / f"p.db.secret.{gone.pid}.0badc0de.tmp"
    live = tmp_path / f"p.db.secret.{os.getpid()}.0badc0de.tmp"
    other = tmp_path / "q.db.secret.1.0badc0de.tmp"  # another database's
    young = tmp_path / f"p.db.secret.{gone.pid}.0badc0df.tmp"  # another container's, now
    long_ago = time.time() - 3600
    for f in (dead, live, other, young):
        f.write_text("candidate")
        if f is not young:
            os.utime(f, (long_ago, long_ago))
    first = link_keys(_settings(tmp_path / "p.db"))
    assert not dead.exists() and live.exists() and other.exists() and young.exists()
    dead.write_text("candidate")  # also once the key exists
    os.utime(dead, (long_ago, long_ago))
    assert link_keys(_settings(tmp_path / "p.db")) == first
    assert not dead.exists()
