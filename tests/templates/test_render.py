"""Rendering: the sandbox, strict variables, the time and size limits, header-bound fields,
locales, versions, layouts and partials -- in real worker processes, over real stores."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from pushguard import taxonomy
from pushguard.audience.links import Links, with_unsubscribe
from pushguard.audience.service import Audience
from pushguard.exceptions import InputError
from pushguard.templates import content as tc
from pushguard.templates.errors import TemplateError
from pushguard.templates.models import ContactSample, TemplateIn, VersionIn
from pushguard.templates.pool import RenderPool
from pushguard.templates.service import Templates
from pushguard.templates.store import TemplateStore
from tests.templates.conftest import add_contacts, add_topic

BOMB = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
LOUD_BOMB = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"


def one(pool: RenderPool, source: str, vars: dict[str, Any] | None = None,
        mode: str = "text") -> dict[str, Any]:
    (answer,) = pool.render({"@body": source}, [("body", "@body", mode)],
                            [{"vars": vars or {"contact": {}, "data": {}}}])
    return answer


def email(svc: Templates, name: str = "welcome", **content: str) -> dict[str, Any]:
    body = {"subject": "Hi {{ contact.attributes.first_name }}",
            "text": "Hello {{ contact.attributes.first_name }}", **content}
    return svc.create(TemplateIn(name=name, channel="email", content=body), actor="t")


# -- variables -------------------------------------------------------------------------------

def test_render_fills_contact_and_data(svc: Templates, audience: Audience) -> None:
    add_contacts(audience, {"external_id": "ann", "attributes": {"first_name": "Ann"}})
    email(svc, html="<p>Order {{ data.order.id }} for {{ contact.external_id }}</p>")
    got = svc.render("welcome", contact="ann", data={"order": {"id": "A-17"}})
    assert got["content"] == {"subject": "Hi Ann", "text": "Hello Ann",
                              "html": "<p>Order A-17 for ann</p>"}
    assert got["version"] == 1 and got["locale"] == "default" and got["contact"] == "ann"


def test_a_missing_variable_is_a_template_error_naming_it(svc: Templates,
                                                          audience: Audience) -> None:
    add_contacts(audience, {"external_id": "bob", "attributes": {}})
    t = email(svc, text="Hello\nyour order {{ data.order.id }}")
    with pytest.raises(TemplateError) as caught:
        svc.render("welcome", contact="bob", data={"order": {"id": 1}})
    err = caught.value
    assert err.cause is taxonomy.TEMPLATE_ERROR
    assert (err.field, err.line, err.variable) == ("subject", 1, "contact.attributes.first_name")
    assert f"template welcome ({t['id']}) version 1 [default], subject line 1" in err.detail
    assert "'contact.attributes.first_name' is undefined" in err.detail
    with pytest.raises(TemplateError) as caught:
        svc.render("welcome", contact=ContactSample(attributes={"first_name": "B"}), data={})
    assert (caught.value.field, caught.value.line, caught.value.variable) == (
        "text", 2, "data.order")
    assert caught.value.as_input_error().as_dict() == {
        "field": "content.text", "problem": "line 2: 'data.order' is undefined"}


def test_undefined_inside_a_loop_names_the_item_path(pool: RenderPool) -> None:
    got = one(pool, "{% for it in data.lines %}\n{{ it.sku }}{% endfor %}",
              {"contact": {}, "data": {"lines": [{"sku": "a"}, {"name": "b"}]}})
    assert got["error"]["variable"] == "data.lines[1].sku"
    assert got["error"]["line"] == 2


# -- the sandbox -----------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ contact.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ '{0.__class__}'.format(contact) }}",
    "{{ data.__init__ }}",
    "{{ contact._pg_path }}",
    "{{ data.lines.append(1) }}",
    "{{ contact.attributes.update({'a': 1}) }}",
    "{{ 'x' * 100000000 }}",
    "{{ 10 ** 100000000 }}",
])
def test_the_sandbox_refuses_python_internals(pool: RenderPool, source: str) -> None:
    got = one(pool, source, {"contact": {"attributes": {}}, "data": {"lines": []}})
    assert "error" in got, got
    assert got["error"]["kind"] == "security", got


def test_html_fields_are_autoescaped_and_text_fields_are_not(svc: Templates) -> None:
    email(svc, subject="{{ data.v }}", text="{{ data.v }}", html="<b>{{ data.v }}</b>")
    got = svc.render("welcome", data={"v": "<script>x</script>"})["content"]
    assert got["html"] == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    assert got["text"] == got["subject"] == "<script>x</script>"


# -- limits ----------------------------------------------------------------------------------

def test_the_nested_loop_bomb_is_stopped_by_the_time_limit(pool: RenderPool) -> None:
    started = time.monotonic()
    got = one(pool, BOMB)
    assert got["error"]["kind"] == "timeout" and got["error"]["line"] == 1
    assert time.monotonic() - started < 3
    assert one(pool, "still {{ 'fine' }}") == {"ok": {"body": "still fine"}}
    assert pool.killed == 0  # the worker stopped itself and was reused


def test_a_bomb_that_writes_is_stopped_by_the_output_cap(pool: RenderPool) -> None:
    started = time.monotonic()
    got = one(pool, LOUD_BOMB)
    assert got["error"]["kind"] == "too_large"
    assert "64" in got["error"]["message"] or "65536" in got["error"]["message"]
    assert time.monotonic() - started < 2


def test_a_memory_bomb_inside_one_call_is_a_memory_error() -> None:
    pool = RenderPool(size=1, time_limit=5.0, memory=512 << 20)
    try:
        got = one(pool, "{{ 'a' | center(2000000000) }}")
        assert got["error"]["kind"] == "memory"
        assert one(pool, "ok") == {"ok": {"body": "ok"}}
    finally:
        pool.close()


def test_a_worker_that_cannot_be_interrupted_is_killed_and_replaced(pool: RenderPool) -> None:
    assert one(pool, "warm") == {"ok": {"body": "warm"}}
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGSTOP)  # as stuck as a worker can be: not even the alarm runs
    started = time.monotonic()
    got = one(pool, "hello")
    assert got["error"]["kind"] == "timeout"
    assert time.monotonic() - started < pool.time_limit + pool.grace + 2
    assert pool.killed == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert one(pool, "again") == {"ok": {"body": "again"}}
    assert pool.pids() != [pid]


def test_bombs_in_a_saved_template_fail_the_render_as_template_errors(svc: Templates) -> None:
    email(svc)  # saved clean; a bomb cannot be saved (lint renders it) -- see test_lint
    ts = svc.store
    t = ts.find("welcome")
    ts.add_version(t.id, locale="default", content={"subject": "x", "text": BOMB}, actor="t")
    with pytest.raises(TemplateError) as caught:
        svc.render("welcome")
    assert caught.value.kind == "timeout" and caught.value.field == "text"


# -- header-bound fields ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Ava\r\nBcc: victim@example.com", "Ava\nBcc: x@y.z",
                                  "Ava\rX", "Ava\x00", "Ava\u2028X"])
def test_a_line_break_reaching_the_subject_is_refused(svc: Templates, audience: Audience,
                                                      name: str) -> None:
    add_contacts(audience, {"external_id": "ann", "attributes": {"first_name": "Ann"}},
                 {"external_id": "ava", "attributes": {"first_name": name}})
    email(svc)
    assert svc.render("welcome", contact="ann")["content"]["subject"] == "Hi Ann"
    with pytest.raises(TemplateError) as caught:
        svc.render("welcome", contact="ava")
    assert caught.value.kind == "header" and caught.value.field == "subject"
    assert caught.value.as_input_error().field == "content.subject"


def test_a_push_title_is_one_line_too(svc: Templates) -> None:
    svc.create(TemplateIn(name="p", channel="push", content={"title": "{{ data.t }}",
                                                             "body": "{{ data.t }}"}),
               actor="t")
    assert svc.render("p", data={"t": "a b"})["content"]["title"] == "a b"
    with pytest.raises(TemplateError) as caught:
        svc.render("p", data={"t": "a\nb"})
    assert caught.value.field == "title"


def test_a_from_field_must_render_to_one_address(svc: Templates) -> None:
    email(svc, **{"from": "{{ data.who }}"})
    assert svc.render("welcome", data={"who": "Shop <news@shop.example>"},
                      contact=ContactSample(attributes={"first_name": "A"})
                      )["content"]["from"] == "Shop <news@shop.example>"
    with pytest.raises(TemplateError) as caught:
        svc.render("welcome", data={"who": "a@x.example, b@y.example"},
                   contact=ContactSample(attributes={"first_name": "A"}))
    assert caught.value.field == "from" and caught.value.kind == "invalid"


# -- locales and versions --------------------------------------------------------------------

def test_locale_tags_and_their_fallbacks() -> None:
    assert tc.normalize_locale("fr_ca") == "fr-CA"
    assert tc.normalize_locale("ZH-hant-tw") == "zh-Hant-TW"
    assert tc.normalize_locale(None) == tc.normalize_locale("") == "default"
    assert tc.fallbacks("fr-CA") == ["fr-CA", "fr", "default"]
    assert tc.fallbacks("zh_Hant_TW") == ["zh-Hant-TW", "zh-Hant", "zh", "default"]
    assert tc.fallbacks("not a locale!") == tc.fallbacks(None) == ["default"]
    with pytest.raises(InputError) as caught:
        tc.normalize_locale("english please")
    assert caught.value.field == "locale"


def test_a_contact_gets_its_locale_then_the_language_then_the_default(
        svc: Templates, audience: Audience) -> None:
    add_contacts(audience,
                 {"external_id": "qc", "locale": "fr-CA", "attributes": {"first_name": "Q"}},
                 {"external_id": "be", "locale": "fr-BE", "attributes": {"first_name": "B"}},
                 {"external_id": "de", "locale": "de-DE", "attributes": {"first_name": "D"}},
                 {"external_id": "none", "attributes": {"first_name": "N"}})
    email(svc)
    fr = {"subject": "Salut {{ contact.attributes.first_name }}", "text": "Bonjour"}
    svc.add_version("welcome", VersionIn(locale="fr", content=fr), actor="t")

    def subject(who: str) -> tuple[str, int, str]:
        got = svc.render("welcome", contact=who)
        return got["content"]["subject"], got["version"], got["locale"]

    assert subject("qc") == ("Salut Q", 2, "fr")
    assert subject("be") == ("Salut B", 2, "fr")
    assert subject("de") == ("Hi D", 1, "default")
    assert subject("none") == ("Hi N", 1, "default")
    qc = {"subject": "Allo {{ contact.attributes.first_name }}", "text": "Allo"}
    svc.add_version("welcome", VersionIn(locale="fr_ca", content=qc), actor="t")
    assert subject("qc") == ("Allo Q", 3, "fr-CA")
    assert subject("be") == ("Salut B", 2, "fr")
    got = svc.render("welcome", contact="de", locale="fr-CA")
    assert got["locale"] == "fr-CA"


def test_versions_are_immutable_and_the_newest_per_locale_is_current(
        svc: Templates, audience: Audience) -> None:
    add_contacts(audience, {"external_id": "ann", "attributes": {"first_name": "Ann"}})
    email(svc)
    svc.add_version("welcome", VersionIn(content={"subject": "v2", "text": "two"}), actor="t")
    svc.add_version("welcome", VersionIn(locale="fr", content={"subject": "fr", "text": "x"}),
                    actor="t")
    got = svc.get("welcome")
    assert got["locales"] == {"default": 2, "fr": 3} and got["latest_version"] == 3
    assert [(v["version"], v["locale"]) for v in got["versions"]] == [
        (1, "default"), (2, "default"), (3, "fr")]
    assert svc.get("welcome", version=1)["version"]["content"]["subject"] == (
        "Hi {{ contact.attributes.first_name }}")
    assert svc.render("welcome", contact="ann")["content"]["subject"] == "v2"
    assert svc.render("welcome", contact="ann", version=1)["content"]["subject"] == "Hi Ann"
    # nothing can change a version: the store has no way to
    assert not [m for m in dir(TemplateStore) if m.startswith(("update", "delete", "set_",
                                                                "edit", "replace"))]


def test_concurrent_versions_get_distinct_numbers(svc: Templates) -> None:
    email(svc)
    t = svc.store.find("welcome")
    barrier = threading.Barrier(6)
    numbers: list[int] = []

    def add(i: int) -> None:
        barrier.wait()
        v = svc.store.add_version(t.id, locale="default",
                                  content={"subject": f"s{i}", "text": "t"}, actor="t")
        numbers.append(v.version)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(numbers) == [2, 3, 4, 5, 6, 7]


# -- marketing, layouts, partials, channels --------------------------------------------------

def test_marketing_email_leaves_unsubscribe_links_to_the_send_path(
        svc: Templates, audience: Audience) -> None:
    add_topic(audience, "news", "marketing")
    svc.create(TemplateIn(name="promo", channel="email", topic="news", content={
        "subject": "News", "html": '<p>Sale</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
        ' <a href="{{ preferences_url }}">Preferences</a>'}), actor="t")
    content = svc.render("promo")["content"]
    assert content["html"] == ('<p>Sale</p><a href="{{unsubscribe_url}}">Unsubscribe</a> '
                               '<a href="{{preferences_url}}">Preferences</a>')
    sent = with_unsubscribe(content, Links(["k" * 32], "https://push.example"), "ctc_1",
                            "news")
    assert '<a href="https://push.example/unsubscribe/' in sent["html"]
    assert '<a href="https://push.example/preferences/' in sent["html"]
    assert "{{" not in sent["html"] and sent["html"].count("Unsubscribe") == 1


def test_layouts_wrap_and_partials_are_included_with_the_authors_line_numbers(
        svc: Templates) -> None:
    svc.create(TemplateIn(name="footer", kind="partial", content={
        "body": "<p>Sent to {{ contact.external_id }} {{ data.missing }}</p>"}), actor="t")
    svc.create(TemplateIn(name="base", kind="layout", channel="email", content={
        "html": "<html><body>{% block content %}{% endblock %}</body></html>",
        "text": "{% block content %}{% endblock %}\n-- Shop"}), actor="t")
    svc.create(TemplateIn(name="letter", channel="email", layout="base", content={
        "subject": "Hello", "text": "Hi {{ data.name }}",
        "html": "<h1>Hi</h1>\n<p>{{ data.name }}</p>"}), actor="t")
    got = svc.render("letter", data={"name": "<Ann>"})["content"]
    assert got["html"] == "<html><body><h1>Hi</h1>\n<p>&lt;Ann&gt;</p></body></html>"
    assert got["text"] == "Hi <Ann>\n-- Shop"
    with pytest.raises(TemplateError) as caught:
        svc.render("letter", data={})
    assert (caught.value.field, caught.value.line) in {("text", 1), ("html", 2)}
    svc.add_version("letter", VersionIn(content={
        "subject": "Hello", "text": "x", "html": "<p>a</p>\n{% include 'footer' %}"},
        data={"missing": "m"}), actor="t")
    assert "Sent to None m" in svc.render("letter", data={"missing": "m"})["content"]["html"]
    with pytest.raises(TemplateError) as caught:
        svc.render("letter", data={})
    assert caught.value.partial == "partial footer" and caught.value.line == 1
    assert caught.value.variable == "data.missing"
    assert "html (in partial footer) line 1" in caught.value.detail


def test_push_and_webhook_content_keep_their_shape(svc: Templates) -> None:
    svc.create(TemplateIn(name="p", channel="push", content={
        "title": "{{ data.t }}", "body": "Order {{ data.id }}", "image": "https://i.example/"
        "{{ data.id }}.png", "data": {"order": "{{ data.id }}", "kind": "order"}}), actor="t")
    got = svc.render("p", data={"t": "Shipped", "id": 7})["content"]
    assert got == {"title": "Shipped", "body": "Order 7", "image": "https://i.example/7.png",
                   "data": {"order": "7", "kind": "order"}}
    assert tc.push_content(got, "apns") == {"title": "Shipped", "body": "Order 7",
                                            "mutable_content": True,
                                            "data": {"order": "7", "kind": "order",
                                                     "image": "https://i.example/7.png"}}
    svc.create(TemplateIn(name="hook", channel="webhook", content={"json": {
        "event": "order.{{ data.state }}", "n": 3, "ok": True,
        "items": [{"sku": "{{ data.sku }}", "qty": 1}]}}), actor="t")
    got = svc.render("hook", data={"state": "paid", "sku": "A1"})["content"]
    assert got == {"json": {"event": "order.paid", "n": 3, "ok": True,
                            "items": [{"sku": "A1", "qty": 1}]}}


@pytest.mark.parametrize(("kind", "channel", "content", "field"), [
    ("message", "email", {"text": "x"}, "content.subject"),
    ("message", "email", {"subject": "x"}, "content.text"),
    ("message", "email", {"subject": "x", "text": "y", "cc": "z"}, "content.cc"),
    ("message", "push", {"image": "x"}, "content.body"),
    ("message", "push", {"body": "x", "data": {"a b": "c"}}, "content.data.a b"),
    ("message", "sms", {"text": 3}, "content.text"),
    ("message", "webhook", {"json": []}, "content.json"),
    ("layout", "email", {"subject": "x"}, "content.subject"),
    ("layout", "webhook", {"json": {}}, "kind"),
    ("partial", "any", {"html": "x"}, "content.html"),
])
def test_content_of_the_wrong_shape_is_refused_naming_the_field(
        kind: str, channel: str, content: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        tc.validate(kind, channel, content)
    assert caught.value.field == field
