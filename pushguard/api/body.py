"""JSON bodies that parse but could never be stored or read back (:mod:`pushguard.documents`:
lone surrogates, deep nesting), refused with a 422 naming the field as they arrive.

Every API route is a :class:`CheckedRoute`, whose request checks the parsed body once: a body
with neither a surrogate nor more than :data:`MAX_DEPTH` brackets (almost every body) costs a
regular-expression search and two counts, all in C. The batch route is the exception: intake
checks each of its messages on its own, so that one bad message gets its own error and the
others are accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from pushguard.documents import MAX_DEPTH, find_problem

# a surrogate escaped (\uD800-\uDFFF) or as raw bytes (ED A0-BF ..), which json decodes too
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
#: where the check's verdict waits for the error handler (request.state)
STATE_KEY = "body_problem"


def check_body(raw: bytes, data: Any) -> tuple[str, str] | None:
    """:func:`find_problem` for a request body, skipped when the raw bytes show it cannot
    find one."""
    texts = json.detect_encoding(raw) != "utf-8" or _SURROGATE.search(raw) is not None
    if not texts and raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return None
    return find_problem(data, texts=texts)


class CheckedRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            problem: tuple[str, str] | None
            try:
                data = json.loads(raw)
            except RecursionError:
                data, problem = None, ("body", f"is nested deeper than {MAX_DEPTH} levels")
            else:
                problem = check_body(raw, data)
            if problem is not None:
                # FastAPI turns a JSONDecodeError into its "invalid JSON" validation error;
                # the handler finds the field and the problem here and answers 422
                setattr(self.state, STATE_KEY, problem)
                raise json.JSONDecodeError(f"{problem[0]}: {problem[1]}", "", 0)
            self._json = data
        return self._json


#: routes whose items are checked one by one further in (intake's ``parse``)
ITEMWISE = frozenset({"/v1/messages/batch"})


class CheckedRoute(APIRoute):
    """An API route whose JSON body is checked by :class:`CheckedRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.path in ITEMWISE:
            return handler

        async def checked(request: Request) -> Response:
            return await handler(CheckedRequest(request.scope, request.receive))

        return checked
