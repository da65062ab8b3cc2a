"""Local fake providers whose failures follow a scriptable profile.

The sandbox plays FCM, APNs (HTTP/2), Twilio, a generic SMS gateway, a Web Push service,
webhook receivers and an SMTP relay on loopback, so pushguard's real provider clients can be
exercised over real HTTP, HTTP/2 and SMTP. A :class:`FaultProfile` scripts the failures
(status rates, latency, outage windows, timeouts, resets, address rules) and a
:class:`Recorder` keeps what each fake saw.
"""

from __future__ import annotations

from pushguard.sandbox.profile import Fault, FaultProfile, Outage
from pushguard.sandbox.profiles import SERVICES, Profiles
from pushguard.sandbox.recorder import Record, Recorder
from pushguard.sandbox.server import Sandbox, run_forever
from pushguard.sandbox.thread import SandboxThread

__all__ = [
    "SERVICES",
    "Fault",
    "FaultProfile",
    "Outage",
    "Profiles",
    "Record",
    "Recorder",
    "Sandbox",
    "SandboxThread",
    "run_forever",
]
