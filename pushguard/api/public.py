"""Public pages reached from links in messages: confirm a subscription, unsubscribe, manage
preferences; and ``POST /v1/contacts/{ref}/subscriptions``, which sends those links.

The pages take no API key: people click them, and RFC 8058 one-click requests carry no
credentials (GUARANTEES.md §2.2). The signed token in the path is the whole authorisation, so:

- a GET never changes anything. Mail scanners and link previewers fetch URLs; every change is
  a POST from a button on the page (or the mailbox provider's one-click POST);
- every bad token (forged, expired, for another purpose, for a confirmation that is gone)
  gets the same 400 page, so nobody can probe which ids exist;
- a POST answers 200 with a page, never a redirect (a redirected POST may turn into a GET);
- nothing is cached, indexed, framed or leaked through the Referer header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from pushguard.api.auth import Auth
from pushguard.api.body import CheckedRoute
from pushguard.api.errors import AUTHED, answer
from pushguard.audience import optin
from pushguard.audience.links import BadLink
from pushguard.audience.models import SubscribeIn
from pushguard.exceptions import InputError

if TYPE_CHECKING:
    from pushguard.app import App

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # no script at all; forms post back here only; no framing (a confirm button in a hidden
    # frame would be clickjacking)
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
INVALID = "This link is invalid or has expired."
#: how a channel reads in a sentence
WORDS = {"email": "email", "sms": "text message", "push": "push notification",
         "webpush": "browser notification", "chat": "chat message", "webhook": "webhook"}
PAGE: dict[int | str, dict[str, Any]] = {
    400: {"description": INVALID, "content": {"text/html": {}}}}

_env = Environment(loader=PackageLoader("pushguard.audience", "templates"), autoescape=True,
                   undefined=StrictUndefined)


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A rendered page with the headers every public page carries."""
    body = _env.get_template(template).render(words=WORDS, **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def message(title: str, *lines: str, status: int = 200,
            preferences_url: str | None = None) -> HTMLResponse:
    return page("message.html", status, title=title, lines=lines,
                preferences_url=preferences_url)


def invalid() -> HTMLResponse:
    """The one answer for every bad token."""
    return message(INVALID, "Links in our messages expire, and each one does one thing. "
                   "If you still want to change your subscription, use the link in a more "
                   "recent message.", status=400)


def requester(request: Request) -> optin.Requester:
    return optin.Requester(request.client.host if request.client else None,
                           request.headers.get("user-agent"))


async def read_form(request: Request) -> FormData | None:
    """The posted form, or None when the body is not one that can be read."""
    try:
        return await request.form()
    except (HTTPException, MultiPartException, ValueError):  # python-multipart's are ValueErrors
        return None


def public_router(app: App) -> APIRouter:
    router = APIRouter(route_class=CheckedRoute)

    # -- confirmed opt-in -------------------------------------------------------------------

    def _withdrawn_since(got: dict[str, Any]) -> Response:
        return message("You are not subscribed",
                       f"This link confirmed your subscription to {got['label']} by "
                       f"{WORDS[got['channel']]} before, and it was withdrawn since. The "
                       "link does not subscribe you again.",
                       "To subscribe again, sign up again where you first did.")

    @router.get("/confirm/{token}", tags=["pages"], response_class=HTMLResponse,
                responses=PAGE)
    async def confirm_page(token: str) -> Response:
        """The confirmation page: a button, so that a link scanner confirms nothing."""
        try:
            got = await run_in_threadpool(optin.confirmation, app, token)
        except BadLink:
            return invalid()
        if got["confirmed"] and not got["subscribed"]:
            return _withdrawn_since(got)
        if got["confirmed"]:
            return message("You are subscribed",
                           f"Your subscription to {got['label']} by "
                           f"{WORDS[got['channel']]} is confirmed.")
        return page("confirm.html", title="Confirm your subscription", label=got["label"],
                    channel_word=WORDS[got["channel"]])

    @router.post("/confirm/{token}", tags=["pages"], response_class=HTMLResponse,
                 responses=PAGE)
    async def confirm(token: str, request: Request) -> Response:
        """Confirm: consent is granted once; a repeat changes nothing."""
        try:
            got = await run_in_threadpool(optin.confirm, app, token, requester(request))
        except BadLink:
            return invalid()
        if not got["subscribed"]:
            return _withdrawn_since(got)
        return message("You are subscribed",
                       f"Thank you: your subscription to {got['label']} by "
                       f"{WORDS[got['channel']]} is confirmed.",
                       "You can withdraw your consent at any time with the unsubscribe link "
                       "in every message.")

    # -- unsubscribe ------------------------------------------------------------------------

    @router.get("/unsubscribe/{token}", tags=["pages"], response_class=HTMLResponse,
                responses=PAGE)
    async def unsubscribe_page(token: str) -> Response:
        """Shows what the link unsubscribes from, with a button; a GET never unsubscribes."""
        try:
            got = await run_in_threadpool(optin.unsubscribe_target, app, token)
        except BadLink:
            return invalid()
        return page("unsubscribe.html", title="Unsubscribe", label=got["label"],
                    channel_word=WORDS[got["channel"]], subscribed=got["subscribed"],
                    preferences_url=app.links.preferences_url(got["contact_id"]))

    @router.post("/unsubscribe/{token}", tags=["pages"], response_class=HTMLResponse,
                 responses=PAGE)
    async def unsubscribe(token: str, request: Request) -> Response:
        """RFC 8058 one-click (``List-Unsubscribe=One-Click``, multipart or urlencoded) and
        the page's button. 200 with a page, never a redirect; idempotent."""
        form = await read_form(request)
        one_click = form is not None and form.get("List-Unsubscribe") == "One-Click"
        method = "one-click (RFC 8058)" if one_click else "unsubscribe page"
        try:
            got = await run_in_threadpool(optin.unsubscribe, app, token, requester(request),
                                          method)
        except BadLink:
            return invalid()
        return message("You are unsubscribed",
                       f"You will no longer receive {got['label']} by "
                       f"{WORDS.get(got['channel'], got['channel'])}.",
                       "Messages you need, like receipts and password resets, still reach you.",
                       preferences_url=got["preferences_url"])

    # -- a test send's stand-in links -------------------------------------------------------

    @router.get("/test-link/{token}", tags=["pages"], response_class=HTMLResponse,
                responses=PAGE)
    async def test_link_page(token: str) -> Response:
        """What an unsubscribe or preferences link in a test send stands for."""
        return await test_link(token)

    @router.post("/test-link/{token}", tags=["pages"], response_class=HTMLResponse,
                 responses=PAGE)
    async def test_link_click(token: str) -> Response:
        """The mailbox provider's one-click POST to a test send's link: the same page, and
        nothing changes either."""
        return await test_link(token)

    async def test_link(token: str) -> Response:
        try:
            kind, label, channel = await run_in_threadpool(optin.test_link, app, token)
        except BadLink:
            return invalid()
        what = (f"unsubscribes its recipient from {label} by "
                f"{WORDS.get(channel, channel)}" if kind == "unsubscribe"
                else "opens its recipient's preferences")
        return message("This link is from a test send",
                       f"In the real send, each recipient's own link {what}.",
                       "This message went to a test address, so its link stands in for the "
                       "real one and nothing was changed.")

    # -- preference centre ------------------------------------------------------------------

    @router.get("/preferences/{token}", tags=["pages"], response_class=HTMLResponse,
                responses=PAGE)
    async def preferences_page(token: str) -> Response:
        """Every marketing topic on every channel the person can be reached on."""
        try:
            _, choices = await run_in_threadpool(optin.preferences, app, token)
        except BadLink:
            return invalid()
        return page("preferences.html", title="Your preferences", choices=choices,
                    saved=False, pending=[], failed=[])

    @router.post("/preferences/{token}", tags=["pages"], response_class=HTMLResponse,
                 responses=PAGE)
    async def save_preferences(token: str, request: Request) -> Response:
        """Save the ticks (``action=save`` with ``sub=topic|channel``, repeated) or pause
        everything (``action=pause``)."""
        try:  # a bad link gets the one answer, whatever the form says
            optin.preferences_contact(app, token)
        except BadLink:
            return invalid()
        form = await read_form(request)
        # no default: a body that lost its fields must not read as "untick everything"
        action = form.get("action") if form is not None else None
        subs = form.getlist("sub") if form is not None else []
        if action not in ("save", "pause") or not all(isinstance(s, str) for s in subs):
            return message("This form could not be read.", "Please open the page again from "
                           "the link in your message and try once more.", status=400)
        try:
            choices, changes = await run_in_threadpool(
                lambda: optin.save_preferences(app, token, [str(s) for s in subs],
                                               requester(request),
                                               pause_all=action == "pause"))
        except BadLink:
            return invalid()
        except InputError as exc:
            return message("This form could not be read.", exc.problem, status=400)
        by_key = {c.key: c for c in choices}
        pending = [by_key[f"{c['topic']}|{c['channel']}"] for c in changes
                   if c["status"] == "pending" and f"{c['topic']}|{c['channel']}" in by_key]
        failed = [c for c in changes if c["status"] == "failed"]
        return page("preferences.html", title="Your preferences", choices=choices,
                    saved=True, pending=pending, failed=failed)

    # -- the API that starts it -------------------------------------------------------------

    @router.post("/v1/contacts/{ref}/subscriptions", status_code=201, tags=["audience"],
                 responses={202: {"description": "a confirmation was sent; consent is pending "
                                                 "until it is confirmed"},
                            404: answer("no such contact"), **AUTHED})
    def subscribe(ref: str, body: SubscribeIn, key_id: Auth,
                  response: Response) -> dict[str, Any]:
        """Subscribe a contact to a topic on a channel: granted at once (201), or, for a topic
        with confirmed opt-in, a confirmation message goes out first (202)."""
        got = optin.subscribe(app, ref, body, f"key:{key_id}")
        if got["status"] == "pending":
            response.status_code = 202
        return got

    return router
