"""API keys on every ``/v1`` route: ``Authorization: Bearer <key>``, then the per-key rate limit."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Header, Request

from pushguard.exceptions import AuthError, RateLimited

_DUMMY_HASH = hashlib.sha256(b"no key given").hexdigest()


def authorize(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The id of the API key in ``Authorization: Bearer <key>``, or 401."""
    token = ""
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
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
