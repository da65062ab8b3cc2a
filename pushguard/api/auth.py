"""API keys on every ``/v1`` route: ``Authorization: Bearer <key>``, then the per-key rate limit."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pushguard.exceptions import AuthError, RateLimited

_DUMMY_HASH = hashlib.sha256(b"no key given").hexdigest()

#: declares the scheme in the OpenAPI document; we answer a missing key ourselves (our 401)
bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key (`pgk_...`) from `pushguard keys create`.")


def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The id of the API key in ``Authorization: Bearer <key>``, or 401."""
    token = credentials.credentials.strip() if credentials is not None else ""
    # The same work whether the key is missing, malformed or wrong: hash it and look it up.
    # Looking up by SHA-256 means no secret-dependent comparison happens in Python at all.
    digest = hashlib.sha256(token.encode()).hexdigest() if token else _DUMMY_HASH
    key_id = request.app.state.pushguard.store.api_key_id(digest)
    if not token or key_id is None:
        raise AuthError("missing or invalid API key (send Authorization: Bearer <key>)")
    wait = request.app.state.limiter.take(key_id)
    if wait:
        raise RateLimited(wait)
    return str(key_id)


Auth = Annotated[str, Depends(authorize)]
