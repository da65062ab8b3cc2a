"""Running the sandbox: :class:`Sandbox` on an existing loop, :class:`SandboxThread` in a
background thread (tests, the demo), and :func:`run_forever` for the CLI.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from pushguard.sandbox.apns import ApnsServer
from pushguard.sandbox.http import create_app
from pushguard.sandbox.profile import FaultProfile
from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder
from pushguard.sandbox.smtp import SmtpServer

ProfilesArg = Profiles | FaultProfile | Mapping[str, Any] | None


class Sandbox:
    """All fake providers on loopback: one HTTP port, one HTTP/2 (APNs) port, one SMTP port.

    Ports of 0 pick free ephemeral ports; read the bound ones from the properties after
    :meth:`start`. ``profiles`` is a :class:`FaultProfile` for every service, or a mapping of
    ``"default"``/service name to profiles (see :class:`~pushguard.sandbox.profiles.Profiles`).
    ``webhook_secret`` (``whsec_...``) turns on signature checks unless ``verify`` is false.
    ``records_path`` appends every record to a JSONL file; ``max_records`` bounds the
    records kept in memory per service. ``twilio_auth_token`` is the password Twilio's basic
    auth must carry (any non-empty one when None) and signs status callbacks.
    ``smtp_credentials`` (user, password) makes the SMTP fake require AUTH. ``apns_ssl``
    serves APNs over TLS (ALPN ``h2`` is set on it). ``keep_bodies=False`` keeps HTTP
    records lean (no decoded JSON bodies) for benchmarks.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        http_port: int = 0,
        apns_port: int = 0,
        smtp_port: int = 0,
        profiles: ProfilesArg = None,
        webhook_secret: str | None = None,
        verify: bool = True,
        records_path: str | Path | None = None,
        recorder: Recorder | None = None,
        twilio_auth_token: str | None = None,
        smtp_credentials: tuple[str, str] | None = None,
        apns_ssl: ssl.SSLContext | None = None,
        keep_bodies: bool = True,
        max_records: int | None = None,
    ) -> None:
        self.host = host
        self.profiles = Profiles.from_obj(profiles)
        self.recorder = recorder or Recorder(records_path, max_records=max_records)
        self._owns_recorder = recorder is None
        self._ports = {"http": http_port, "apns": apns_port, "smtp": smtp_port}
        self._app_options: dict[str, Any] = {
            "secret": webhook_secret,
            "verify": verify,
            "twilio_auth_token": twilio_auth_token,
            "keep_bodies": keep_bodies,
        }
        self._smtp_credentials = smtp_credentials
        self._apns_ssl = apns_ssl
        self._runner: web.AppRunner | None = None
        self._apns: ApnsServer | None = None
        self._smtp: SmtpServer | None = None

    async def start(self) -> None:
        """Bind every port and start serving; profile clocks start now."""
        app = create_app(self.profiles, self.recorder, **self._app_options)
        # No access log: it costs more than the webhook handler itself under benchmark load.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._ports["http"])
        await site.start()
        self._ports["http"] = int(self._runner.addresses[0][1])
        self._apns = ApnsServer(self.profiles, self.recorder, ssl_context=self._apns_ssl)
        self._ports["apns"] = await self._apns.start(self.host, self._ports["apns"])
        self._smtp = SmtpServer(self.profiles, self.recorder, credentials=self._smtp_credentials)
        self._ports["smtp"] = await self._smtp.start(self.host, self._ports["smtp"])
        self.profiles.restart()

    async def stop(self) -> None:
        """Stop serving; hanging ``timeout`` faults are woken so this returns promptly."""
        if self._smtp is not None:
            await self._smtp.stop()
            self._smtp = None
        if self._apns is not None:
            await self._apns.stop()
            self._apns = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._owns_recorder:
            self.recorder.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_profile(
        self, profile: FaultProfile | Mapping[str, Any], service: str | None = None
    ) -> None:
        """Replace one service's profile, or everything when ``service`` is None."""
        if service is None:
            self.profiles.replace(profile)
        else:
            self.profiles.set(profile, service)

    @property
    def http_port(self) -> int:
        """The HTTP port (webhooks, FCM, Twilio, SMS gateway, Web Push, control routes)."""
        return self._ports["http"]

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP fakes, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def apns_port(self) -> int:
        """The APNs (HTTP/2) port."""
        return self._ports["apns"]

    @property
    def apns_url(self) -> str:
        """Base URL of the APNs fake (``https`` when it was given an SSL context)."""
        scheme = "https" if self._apns_ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.apns_port}"

    @property
    def smtp_host(self) -> str:
        """Host of the SMTP fake."""
        return self.host

    @property
    def smtp_port(self) -> int:
        """Port of the SMTP fake."""
        return self._ports["smtp"]

    def endpoints(self) -> dict[str, str]:
        """Where each service listens, with its URL template."""
        base = self.http_url
        return {
            "webhook": f"{base}/hooks/{{name}}",
            "fcm": f"{base}/fcm/v1/projects/{{project}}/messages:send (token: {base}/fcm/token)",
            "twilio": f"{base}/twilio/2010-04-01/Accounts/{{sid}}/Messages.json",
            "sms": f"{base}/sms/{{gateway}}/send",
            "webpush": f"{base}/webpush/{{subscription}}",
            "apns": f"{self.apns_url}/3/device/{{token}} (HTTP/2)",
            "smtp": f"smtp://{self.smtp_host}:{self.smtp_port}",
            "control": f"{base}/_sandbox/stats",
        }


def run_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    apns_port: int | None = None,
    smtp_port: int | None = None,
    profile: str | Path | None = None,
    records: str | Path | None = None,
    webhook_secret: str | None = None,
    verify: bool = True,
    max_records: int | None = 100_000,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT/SIGTERM, printing one ``service URL`` line per service.

    With a fixed ``port``, APNs and SMTP default to ``port + 1`` and ``port + 2``.
    ``max_records`` bounds the records kept in memory per service (the counters, the
    control routes' stats and the JSONL file stay complete).
    """
    if apns_port is None:
        apns_port = port + 1 if port else 0
    if smtp_port is None:
        smtp_port = port + 2 if port else 0
    sandbox = Sandbox(
        host,
        http_port=port,
        apns_port=apns_port,
        smtp_port=smtp_port,
        profiles=Profiles.load(profile) if profile is not None else None,
        webhook_secret=webhook_secret,
        verify=verify,
        records_path=records,
        max_records=max_records,
    )

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await sandbox.start()
            for service, url in sandbox.endpoints().items():
                echo(f"{service:<8} {url}")
            await stopping.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await sandbox.stop()

    asyncio.run(main())
