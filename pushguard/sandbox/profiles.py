"""Which fault profile each sandbox service follows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pushguard.sandbox.profile import FaultProfile, read_profile_file

#: The services a sandbox plays; each may have its own profile.
SERVICES: tuple[str, ...] = (
    "webhook", "fcm", "twilio", "sms", "webpush", "apns", "smtp", "chat",
)

ProfileSpec = FaultProfile | Mapping[str, Any]


def _as_profile(spec: ProfileSpec) -> FaultProfile:
    return spec if isinstance(spec, FaultProfile) else FaultProfile.from_dict(spec)


class Profiles:
    """A default profile plus per-service overrides.

    Built from either a single profile (used by every service) or a mapping whose keys are
    ``"default"`` and/or service names, which is also the layout of a multi-service profile
    file::

        [default]
        seed = 7
        [fcm]
        rates = { "503" = 0.2 }
    """

    def __init__(
        self,
        default: ProfileSpec | None = None,
        services: Mapping[str, ProfileSpec] | None = None,
    ) -> None:
        self.default = _as_profile(default) if default is not None else FaultProfile()
        self._services: dict[str, FaultProfile] = {}
        for name, spec in (services or {}).items():
            self.set(_as_profile(spec), name)

    @classmethod
    def from_obj(cls, data: FaultProfile | Mapping[str, Any] | Profiles | None) -> Profiles:
        """Accept whatever a caller or a file handed us: a profile, a layout dict, or None."""
        if data is None:
            return cls()
        if isinstance(data, Profiles):
            return data
        if isinstance(data, FaultProfile):
            return cls(data)
        keys = set(data)
        if keys and keys <= {"default", *SERVICES}:
            services = {k: v for k, v in data.items() if k != "default"}
            return cls(data.get("default"), services)
        return cls(data)

    @classmethod
    def load(cls, path: str | Path) -> Profiles:
        """Read a single-profile or multi-service ``.json``/``.toml`` file."""
        return cls.from_obj(read_profile_file(path))

    def get(self, service: str) -> FaultProfile:
        """The profile ``service`` follows right now."""
        return self._services.get(service, self.default)

    def set(self, profile: ProfileSpec, service: str | None = None) -> FaultProfile:
        """Replace one service's profile, or (``service=None``) the default and all overrides.

        The new profile's clock starts now, so its outage windows are relative to this call.
        """
        new = _as_profile(profile)
        if service is None:
            self.default = new
            self._services.clear()
        elif service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")
        else:
            self._services[service] = new
        new.restart()
        return new

    def replace(self, data: FaultProfile | Mapping[str, Any]) -> None:
        """Replace everything from a profile or a layout dict; every clock starts now."""
        other = Profiles.from_obj(data)
        self.default = other.default
        self._services = dict(other._services)
        self.restart()

    def restart(self) -> None:
        """Restart every profile's clock and random sequence (done when the sandbox starts)."""
        self.default.restart()
        for profile in self._services.values():
            profile.restart()

    def to_dict(self) -> dict[str, Any]:
        """The layout :meth:`from_obj` accepts."""
        out: dict[str, Any] = {"default": self.default.to_dict()}
        out.update({name: p.to_dict() for name, p in self._services.items()})
        return out
