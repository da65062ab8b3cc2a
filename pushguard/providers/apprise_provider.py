"""Any service apprise supports, on the ``chat`` channel: ``to`` is an apprise URL.

apprise is the long tail, not the hot path: its plugins use ``requests``, and
``Apprise.async_notify`` runs each send in apprise's own thread pool. One thread hop per
message is acceptable here; high-volume services have dedicated providers.

apprise reports a failure as ``False`` plus log lines. We read the lines of *this* call only
(apprise >= 2.2 keeps them per call on the result; ``apprise.LogCapture`` would hang a handler
on the process-wide logger and mix concurrent sends) and take the HTTP status its plugins
write as ``error=NNN``. Secrets in the URL are redacted from everything we keep.

Only hosted services (whose URL host part is a token, not a server) skip the SSRF guard; for
every other scheme the host is checked before apprise connects to it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pushguard import taxonomy
from pushguard.addresses import SELF_HOSTED_CHAT_SCHEMES as SELF_HOSTED
from pushguard.exceptions import ConfigError, DeliveryError, InputError
from pushguard.providers.base import Delivery, Provider, ProviderContext, ProviderMeta, Receipt
from pushguard.providers.chat import CHAT, check_chat_content
from pushguard.providers.httpclient import MAX_RAW

if TYPE_CHECKING:
    from pushguard.config import ProviderConfig

T = taxonomy
#: schemes whose host part names the account or token, while the server is fixed by the plugin.
HOSTED = frozenset({"tgram", "slack", "discord", "msteams", "gchat", "pover", "pbul", "pushed",
                    "twilio", "ses", "sns", "mailgun", "sendgrid"})
#: schemes whose host part is a server to connect to: these go through the SSRF guard.
SERVER_SCHEMES = SELF_HOSTED | {"json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys"}
_STATUS = re.compile(r"(?:error|status)[=:]\s*(\d{3})\b|HTTP error (\d{3})", re.IGNORECASE)
_CONNECTION = ("connection error", "socket exception", "timed out", "timeout")
_FORMATS = ("text", "markdown", "html")
_USERINFO = re.compile(r"(://)[^/@\s]*@")
_QUERY = re.compile(r"\?[^\s]*")


def secrets_of(url: str) -> list[str]:
    """The parts of an apprise URL that may be credentials, longest first."""
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or ""]
    found += [unquote(p) for p in parts.path.split("/")]
    found += [v for _, v in parse_qsl(parts.query)]
    if parts.scheme.lower() in HOSTED:
        found.append(unquote(parts.netloc.rpartition("@")[2]))
    # Shorter fragments are not credentials, and replacing them would garble status codes.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every URL credential replaced by ``***`` (and bounded)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return _QUERY.sub("?***", _USERINFO.sub(r"\1***@", text))[:MAX_RAW]


def classify_log(
    log: str, *, secrets: list[str] | None = None, timed_out: bool = False
) -> DeliveryError:
    """The failure an apprise log describes (the last status it mentions wins); the raw log
    kept on the error has ``secrets`` redacted."""
    statuses = [int(a or b) for a, b in _STATUS.findall(log)]
    status = statuses[-1] if statuses else None
    lowered = log.lower()
    log = redact(log, secrets or [])

    def error(cause: taxonomy.Cause, detail: str, code: str = "", **kw: Any) -> DeliveryError:
        code = code or (f"HTTP {status}" if status else "APPRISE_FAILED")
        return DeliveryError(cause, detail, provider_code=code, status=status, raw=log, **kw)

    if status in (401, 403):
        return error(T.AUTH_CREDENTIALS, f"the service refused the credentials in the URL "
                     f"({status})")
    if status in (404, 410):
        return error(T.UNREGISTERED_TOKEN, f"the service says the target is gone ({status})")
    if status == 413:
        return error(T.CONTENT_REJECTED, "the service says the message is too large")
    if status == 429:
        return error(T.RATE_LIMITED, "the service asked us to slow down (429)", scope="provider")
    if status is not None and status >= 500:
        return error(T.PROVIDER_OUTAGE, f"the service answered {status}")
    if status is None and (timed_out or any(w in lowered for w in _CONNECTION)):
        return error(T.NETWORK_TIMEOUT, "apprise could not reach the service",
                     "CONNECTION_ERROR", maybe_sent=True)
    return error(T.UNKNOWN, "apprise reported a failure it did not explain"
                 if not log else "apprise reported a failure; see the raw log")


def _load_apprise() -> Any:
    try:
        import apprise
        from apprise.plugins import N_MGR
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError("the apprise provider needs apprise: pip install 'apprise>=2.2'"
                          ) from exc
    # apprise's e-mail plugin imports the stdlib imghdr, deprecated since 3.11; load every
    # plugin now, once, so that warning cannot surface in the middle of a send.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        N_MGR.load_modules()  # type: ignore[no-untyped-call]
    return apprise


class AppriseProvider(Provider):
    """Sends through the ``apprise`` library to any service it knows.

    Option ``body_format``: ``text`` (default), ``markdown`` or ``html``.
    """

    meta = ProviderMeta(type="apprise", channels=CHAT,
                        description="any service apprise supports (to = an apprise URL)")
    max_text = 4000

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._apprise = _load_apprise()
        self.body_format = str(config.options.get("body_format", "text"))
        if self.body_format not in _FORMATS:
            raise ConfigError("'body_format' must be text, markdown or html",
                              location=f"providers.{config.name}.body_format")
        # Persistent storage would write per-URL caches to the home directory.
        # No redirects: a 30x could lead a json:// or form:// notification past the SSRF check.
        self._asset = self._apprise.AppriseAsset(storage_mode="memory", http_redirects=False)

    @classmethod
    def check_options(cls, config: ProviderConfig, *, location: str) -> list[ConfigError]:
        problems = [ConfigError("unknown option; apprise reads: body_format",
                                location=f"{location}.{key}")
                    for key in config.options if key != "body_format"]
        if str(config.options.get("body_format", "text")) not in _FORMATS:
            problems.append(ConfigError("must be text, markdown or html",
                                        location=f"{location}.body_format"))
        return problems

    @classmethod
    def validate_content(cls, channel: str, content: Mapping[str, Any]) -> None:
        check_chat_content(content, limit=cls.max_text, text=str(content.get("text", "")))

    def breaker_key(self, delivery: Delivery) -> str:
        # One breaker per service kind and server; never the token-bearing parts of the URL.
        parts = urlsplit(delivery.to)
        scheme = parts.scheme.lower()
        if scheme in HOSTED:
            return f"{self.name}:{scheme}"
        return f"{self.name}:{scheme}:{parts.hostname or ''}"

    async def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        # Only schemes whose host is a server: for the others the host part is an account or
        # a key, which must neither be looked up in DNS nor end up in an error message.
        if parts.scheme.lower() not in SERVER_SCHEMES:
            return
        hosts = [parts.hostname or ""] + [v for k, v in parse_qsl(parts.query) if k == "smtp"]
        for host in hosts:
            try:
                if not host:
                    raise InputError("to", "the apprise URL names no server")
                await self.context.guard.check_host_async(host, field="to")
            except InputError as exc:
                raise DeliveryError(T.VALIDATION_ERROR, redact(exc.problem, secrets_of(url)),
                                    provider_code="SSRF_BLOCKED") from exc

    async def send(self, delivery: Delivery) -> Receipt:
        url = delivery.to
        notifier = self._apprise.Apprise(asset=self._asset)
        if not notifier.add(url):
            raise DeliveryError(T.INVALID_RECIPIENT,
                                "apprise does not understand this URL (unknown scheme or "
                                "missing parts)", provider_code="APPRISE_BAD_URL")
        await self._check_host(url)  # add() only parses; nothing has connected yet
        result = await notifier.async_notify(
            body=str(delivery.content["text"]), title=str(delivery.content.get("title") or ""),
            body_format=self.body_format, timeout=self.config.timeout,
        )
        if result:
            return Receipt(detail=f"sent by apprise ({', '.join(r.name for r in result)})")
        lines = [f"{e.level}: {e.message}" for r in result for e in r.logs()]
        lines += [f"{e.level}: {e.message}" for e in result.call_logs()]
        timed_out = result.status.name == "TIMEOUT"
        raise classify_log("\n".join(lines), secrets=secrets_of(url), timed_out=timed_out)
