"""Provider types: a built-in table plus the ``pushguard.providers`` entry-point group.

No folder scanning: a provider exists because it is listed here or registered by a package.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING

from pushguard.exceptions import ConfigError
from pushguard.providers.base import Provider, ProviderContext

if TYPE_CHECKING:
    from pushguard.config import Config

BUILTIN: dict[str, str] = {
    "webhook": "pushguard.providers.webhook:WebhookProvider",
    "http": "pushguard.providers.http:HttpProvider",
    "fake": "pushguard.providers.fake:FakeProvider",
    "twilio": "pushguard.providers.twilio:TwilioProvider",
    "smtp": "pushguard.providers.smtp:SmtpProvider",
    "fcm": "pushguard.providers.fcm:FcmProvider",
    "apns": "pushguard.providers.apns:ApnsProvider",
    "webpush": "pushguard.providers.webpush:WebPushProvider",
    "slack": "pushguard.providers.chat:SlackProvider",
    "discord": "pushguard.providers.chat:DiscordProvider",
    "telegram": "pushguard.providers.telegram:TelegramProvider",
    "teams": "pushguard.providers.teams:TeamsProvider",
    "apprise": "pushguard.providers.apprise_provider:AppriseProvider",
}


def _load(path: str) -> type[Provider]:
    module, _, attr = path.partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"{path} is not a Provider subclass")
    return cls


def known_types() -> dict[str, type[Provider]]:
    """Every provider type, built-in first; a plug-in cannot shadow a built-in name."""
    types = {name: _load(path) for name, path in BUILTIN.items()}
    for ep in metadata.entry_points(group="pushguard.providers"):
        if ep.name not in types:
            types[ep.name] = ep.load()
    return types


def provider_class(type_name: str) -> type[Provider]:
    if type_name in BUILTIN:
        return _load(BUILTIN[type_name])
    types = known_types()
    if type_name not in types:
        raise ConfigError(
            f"unknown provider type {type_name!r}; known: {', '.join(sorted(types))}"
        )
    return types[type_name]


def build_providers(config: Config, context: ProviderContext) -> dict[str, Provider]:
    """One instance of every configured provider; raises ConfigError on bad options."""
    return {
        name: provider_class(pc.type)(pc, context) for name, pc in config.providers.items()
    }
