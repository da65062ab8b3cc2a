"""JSON bodies that parse but could never be stored or read back (:mod:`pushguard.documents`:
lone surrogates, deep nesting), refused with a 422 naming the field as they arrive.

Every API route is a :class:`CheckedRoute`, whose request checks the parsed body once. The
body is parsed before the API key is checked, so the check must cost little more than the
parse, whatever the body: :func:`~pushguard.documents.suspect` looks at the bytes in C, and
only a body it flags is walked in Python (in linear time) to name the field.

A batch route (:data:`ITEMWISE`) is not refused as a whole: it learns whether its body is
suspect (:func:`suspect_body`), and intake then checks each of its messages on its own, so
that one bad message gets its own error and the others are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from pushguard.documents import MAX_DEPTH, find_problem, suspect

#: where the check's verdict waits for the error handler (request.state)
STATE_KEY = "body_problem"
_SUSPECT = "body_suspect"
#: routes whose items are checked one by one further in (intake's ``parse``)
ITEMWISE = frozenset({"/v1/messages/batch"})


def suspect_body(request: Request) -> bool:
    """For an :data:`ITEMWISE` route: whether its items need :func:`find_problem`."""
    return bool(getattr(request.state, _SUSPECT, True))


class CheckedRequest(Request):
    itemwise = False

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            problem: tuple[str, str] | None = None
            try:
                data = json.loads(raw)
            except RecursionError:
                data, problem = None, ("body", f"is nested deeper than {MAX_DEPTH} levels")
            else:
                flagged = suspect(raw)
                setattr(self.state, _SUSPECT, flagged)
                if flagged and not self.itemwise:  # rare: a thread, not the event loop
                    problem = await run_in_threadpool(find_problem, data)
            if problem is not None:
                # FastAPI turns a JSONDecodeError into its "invalid JSON" validation error;
                # the handler finds the field and the problem here and answers 422
                setattr(self.state, STATE_KEY, problem)
                raise json.JSONDecodeError(f"{problem[0]}: {problem[1]}", "", 0)
            self._json = data
        return self._json


class _ItemwiseRequest(CheckedRequest):
    itemwise = True


class CheckedRoute(APIRoute):
    """An API route whose JSON body is checked by :class:`CheckedRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        kind = _ItemwiseRequest if self.path in ITEMWISE else CheckedRequest

        async def checked(request: Request) -> Response:
            return await handler(kind(request.scope, request.receive))

        return checked
