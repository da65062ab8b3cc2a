"""Signed links in messages: confirm a subscription, unsubscribe, manage preferences.

Tokens are ``itsdangerous`` timed signatures with one salt per purpose, so a token made for one
purpose is worthless for another (GUARANTEES.md §4.6). They carry ids, never an address.
Several keys may be configured: the first signs, every one verifies, so keys rotate without
breaking the links already sent. Every failure reads the same to the person holding the link:
"invalid or expired" — no way to probe which ids exist.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.engine import make_url

from pushguard.exceptions import ConfigError
from pushguard.settings import Settings

#: RFC 8058 links must keep working for at least 30 days (CAN-SPAM); we give them 400.
UNSUBSCRIBE_MAX_AGE = 400 * 86400
PREFERENCES_MAX_AGE = 400 * 86400
#: a test send's stand-in links (``Links.test_url``): they only ever show what they stand for
TEST_LINK_MAX_AGE = 30 * 86400

SALTS = {"confirm": "pushguard.confirm-opt-in", "unsubscribe": "pushguard.unsubscribe",
         "preferences": "pushguard.preferences", "test": "pushguard.test-link"}


class BadLink(Exception):
    """Invalid, forged, expired or for another purpose: one answer for all."""


class Links:
    def __init__(self, keys: list[str], public_url: str) -> None:
        if not keys:
            raise ConfigError("no key to sign links with (PUSHGUARD_SECRET_KEY)")
        # itsdangerous signs with the last key and verifies with all of them
        self._keys = list(reversed(keys))
        self.base = public_url.rstrip("/")

    def _s(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._keys, salt=SALTS[purpose])

    def sign(self, purpose: str, payload: Any) -> str:
        return str(self._s(purpose).dumps(payload))

    def verify(self, purpose: str, token: str, max_age: int) -> Any:
        if len(token) > 2048:
            raise BadLink()
        try:
            return self._s(purpose).loads(token, max_age=max_age)
        except (SignatureExpired, BadSignature, ValueError, TypeError) as exc:
            raise BadLink() from exc

    def confirm_url(self, confirmation_id: str) -> str:
        return f"{self.base}/confirm/{self.sign('confirm', confirmation_id)}"

    def unsubscribe_url(self, contact_id: str, topic: str, channel: str) -> str:
        token = self.sign("unsubscribe", [contact_id, topic, channel])
        return f"{self.base}/unsubscribe/{token}"

    def preferences_url(self, contact_id: str) -> str:
        return f"{self.base}/preferences/{self.sign('preferences', contact_id)}"

    def test_url(self, kind: str, topic: str, channel: str) -> str:
        """What stands in for a contact's ``kind`` link ("unsubscribe" or "preferences") in a
        test send: a page that says what the real link does and changes nothing. A test send
        is rendered as a real contact, and that contact's own links must not go to
        internal addresses, where anyone clicking them would unsubscribe the contact."""
        return f"{self.base}/test-link/{self.sign('test', [kind, topic, channel])}"


def link_keys(settings: Settings, database_url: str | None = None) -> list[str]:
    """The configured keys, or one kept next to a SQLite database (created once, mode 0600)."""
    keys = [k.strip() for k in settings.secret_key.split(",") if k.strip()]
    if keys:
        return keys
    raw = database_url or settings.database_url
    url = make_url(raw.replace("postgres://", "postgresql://", 1))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ConfigError("PUSHGUARD_SECRET_KEY is not set; it signs the links in messages "
                          "and must be the same on every process")
    path = Path(url.database + ".secret")
    if not path.exists():
        _publish_key(path)
    _sweep_candidates(path)
    key = path.read_text().strip()
    if len(key) < 32:  # an empty or truncated file (an old race, a full disk): links forgeable
        raise ConfigError(f"{path} holds no usable key ({len(key)} characters); delete it to "
                          "have a new one made (links already sent stop working), or set "
                          "PUSHGUARD_SECRET_KEY")
    return [key]


def _publish_key(path: Path) -> None:
    """Create the key file once, even when several processes start on the same database at
    the same moment: each writes its candidate to a file of its own and links it into place.
    The link either appears whole or fails because another process's key is already there,
    which then is the key; nobody ever reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    key = secrets.token_urlsafe(32)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            _sync_dir(path.parent)  # the new name survives a power cut, not only its bytes
        except FileExistsError:
            pass  # another process's key is in place: that one is the key
        except OSError:
            # no hard links on this filesystem (FAT, some network mounts): an exclusive
            # create, which only the race above could catch half-written
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(key)
    finally:
        tmp.unlink(missing_ok=True)


#: a candidate key file older than this whose process is gone was left by a killed process
CANDIDATE_AGE = 600.0


def _sweep_candidates(path: Path) -> None:
    """Remove the candidate files of processes killed while publishing a key (SIGKILL between
    writing theirs and unlinking it): those older than :data:`CANDIDATE_AGE` whose process is
    gone. The age matters as much as the process: a process in another PID namespace (a
    container sharing the volume) looks gone, and may be publishing right now."""
    cutoff = time.time() - CANDIDATE_AGE
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 1:].split(".", 1)[0]
        try:
            fresh = tmp.stat().st_mtime > cutoff
        except OSError:
            continue
        if fresh or not pid.isdigit() or _running(int(pid)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or no way to tell: keep the file
    return True


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open a directory: nothing more to do
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def with_unsubscribe(content: Mapping[str, Any], links: Links, contact_id: str,
                     topic: str) -> dict[str, Any]:
    """A marketing email's content with its unsubscribe link: the List-Unsubscribe and
    List-Unsubscribe-Post headers (RFC 8058; the SMTP provider signs them with DKIM), and a
    visible link in the body (Gmail and Yahoo want both). ``{{unsubscribe_url}}`` and
    ``{{preferences_url}}`` in a body are replaced; a body without them gets a footer."""
    return add_links(content, links.unsubscribe_url(contact_id, topic, "email"),
                     links.preferences_url(contact_id))


def add_links(content: Mapping[str, Any], unsub: str, prefs: str) -> dict[str, Any]:
    """:func:`with_unsubscribe` with the two links given (a test send's stand-ins)."""
    out = dict(content)
    out["unsubscribe_url"] = unsub
    out["topic_kind"] = "marketing"
    for key, footer in (
        ("text", f"\n\n--\nUnsubscribe: {unsub}\nManage preferences: {prefs}\n"),
        ("html", f'<p style="font-size:12px;color:#666"><a href="{unsub}">Unsubscribe</a>'
                 f' · <a href="{prefs}">Manage preferences</a></p>'),
    ):
        body = out.get(key)
        if not isinstance(body, str) or not body:
            continue
        if "{{unsubscribe_url}}" in body or "{{preferences_url}}" in body:
            out[key] = body.replace("{{unsubscribe_url}}", unsub).replace(
                "{{preferences_url}}", prefs)
        elif key == "html" and "</body>" in body:
            out[key] = body.replace("</body>", footer + "</body>", 1)
        else:
            out[key] = body + footer
    return out
