"""Lint: each kind of problem is found, with where and how to fix it, and a clean template
has none. Real contacts from a real store, rendered in real worker processes."""

from __future__ import annotations

from typing import Any

import pytest

from pushguard.audience.service import Audience
from pushguard.templates.errors import LintRefused
from pushguard.templates.lint import Finding, Report
from pushguard.templates.models import TemplateIn, VersionIn
from pushguard.templates.service import Templates
from tests.templates.conftest import add_contacts, add_topic

PEOPLE = ({"external_id": "ann", "attributes": {"first_name": "Ann", "city": "Lyon"}},
          {"external_id": "bob", "attributes": {"first_name": "Bob"}},
          {"external_id": "cy", "attributes": {"first_name": "Cy", "city": "Oslo"}})


@pytest.fixture
def people(audience: Audience) -> Audience:
    add_contacts(audience, *PEOPLE)
    add_topic(audience, "news", "marketing")
    add_topic(audience, "orders", "transactional")
    return audience


def save(svc: Templates, name: str = "t", channel: str = "email", **kw: Any) -> dict[str, Any]:
    return svc.create(TemplateIn(name=name, channel=channel, **kw), actor="test")


def refused(svc: Templates, **kw: Any) -> list[Finding]:
    with pytest.raises(LintRefused) as caught:
        save(svc, **kw)
    return caught.value.findings


def codes(findings: list[Finding] | list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f.severity, f.code) if isinstance(f, Finding) else (f["severity"], f["code"])
            for f in findings]


def lint(svc: Templates, name: str = "t", **kw: Any) -> Report:
    (report,) = svc.lint(name, **kw)
    return report


CLEAN = {"subject": "Your order, {{ contact.attributes.first_name }}",
         "text": "Hello {{ contact.attributes.first_name }},\norder {{ data.order_id }} ships"
                 " {{ contact.attributes.city | default('soon') }}.",
         "html": "<p>Hello {{ contact.attributes.first_name }}</p>"
                 "{% if contact.attributes.city is defined %}<p>{{ contact.attributes.city }}"
                 "</p>{% endif %}"}


def test_a_clean_template_has_no_findings(svc: Templates, people: Audience) -> None:
    got = save(svc, topic="orders", content=CLEAN, data={"order_id": "A1"})
    assert got["lint"]["findings"] == [] and got["lint"]["samples"] == 3
    report = lint(svc, data={"order_id": "A1"})
    assert report.findings == [] and report.samples == 3
    assert report.sizes["email"]["subject_max"] == len("Your order, Ann")


def test_a_clean_marketing_email_has_no_findings(svc: Templates, people: Audience) -> None:
    html = ('<p>Hi {{ contact.attributes.first_name }}</p>'
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a>')
    got = save(svc, topic="news", content={"subject": "News", "html": html})
    assert got["lint"]["findings"] == []


def test_syntax_errors_are_reported_per_field_with_their_line(svc: Templates) -> None:
    found = refused(svc, content={"subject": "Hi {{ x", "text": "a\nb\n{% for %}"})
    assert [(f.code, f.field, f.line) for f in found] == [("syntax", "subject", 1),
                                                          ("syntax", "text", 3)]
    assert all(f.severity == "error" and f.fix for f in found)


def test_unknown_variables_and_contact_fields_are_errors(svc: Templates) -> None:
    found = refused(svc, content={"subject": "Hi {{ first_name }}",
                                  "text": "a\n{{ contact.name }} {{ dat.x }}"})
    by = {(f.field, f.line): f for f in found}
    assert by[("subject", 1)].code == "unknown_variable"
    assert "contact.attributes.first_name" in by[("subject", 1)].fix
    assert "contact has no field 'name'" in by[("text", 2)].problem
    assert "contact.attributes.name" in by[("text", 2)].fix
    dat = next(f for f in found if "'dat'" in f.problem)
    assert "did you mean data?" in dat.fix


def test_attributes_some_contacts_lack_are_warnings_naming_them(svc: Templates,
                                                                people: Audience) -> None:
    got = save(svc, content={"subject": "Hi", "text": "From {{ contact.attributes.city }}\n"
                             "{{ contact.attributes.plan }}"})
    (city, plan) = got["lint"]["findings"]
    assert (city["severity"], city["code"], city["field"], city["line"]) == (
        "warning", "missing_attribute", "text", 1)
    assert city["contacts"] == ["bob"] and "1 of the 3 sampled" in city["problem"]
    assert plan["line"] == 2 and sorted(plan["contacts"]) == ["ann", "bob", "cy"]
    assert "none of the 3" in plan["problem"] and "| default" in plan["fix"]


def test_sample_data_missing_a_key_is_a_warning(svc: Templates, people: Audience) -> None:
    got = save(svc, content={"subject": "x", "text": "{{ data.order_id }} {{ data.total }}"},
               data={"order_id": 1})
    assert codes(got["lint"]["findings"]) == [("warning", "missing_data")]
    assert "data.total" in got["lint"]["findings"][0]["problem"]


def test_unsubscribe_links_belong_to_marketing_email(svc: Templates, people: Audience) -> None:
    found = refused(svc, topic="orders", content={
        "subject": "x", "html": '<a href="{{ unsubscribe_url }}">u</a>'})
    assert codes(found) == [("error", "unsubscribe_outside_marketing")]
    got = save(svc, name="promo", topic="news", content={"subject": "x", "html": "<p>Sale</p>"})
    (f,) = got["lint"]["findings"]
    assert (f["severity"], f["code"], f["field"]) == ("warning", "no_unsubscribe_link", "html")
    assert "footer" in f["fix"] and "List-Unsubscribe" in f["fix"]


def test_an_unsubscribe_link_in_a_layout_or_partial_counts(svc: Templates,
                                                           people: Audience) -> None:
    svc.create(TemplateIn(name="foot", kind="partial", content={
        "body": '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'}), actor="t")
    got = save(svc, topic="news", content={"subject": "x",
                                           "html": "<p>Sale</p>{% include 'foot' %}"})
    assert got["lint"]["findings"] == []


def test_broken_structure_is_refused(svc: Templates, people: Audience) -> None:
    found = refused(svc, layout="nope", content={"subject": "x", "text": "y"})
    assert [(f.code, f.input_field) for f in found] == [("layout", "layout")]
    found = refused(svc, content={"subject": "x", "text": "a\n{% include 'missing' %}"})
    assert [(f.code, f.field, f.line) for f in found] == [("unknown_partial", "text", 2)]
    found = refused(svc, content={"subject": "x", "text": "{% include data.which %}"})
    assert codes(found) == [("error", "dynamic_include")]
    found = refused(svc, content={"subject": "x", "text": "{% extends 'base' %}"})
    assert codes(found) == [("error", "extends")]
    with pytest.raises(LintRefused) as caught:
        svc.create(TemplateIn(name="lay", kind="layout", channel="email",
                              content={"html": "<body></body>"}), actor="t")
    assert codes(caught.value.findings) == [("error", "layout_block")]


def test_bombs_cannot_be_saved(svc: Templates, people: Audience) -> None:
    bomb = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    found = refused(svc, content={"subject": "x", "text": bomb})
    assert codes(found) == [("error", "timeout")]
    found = refused(svc, content={"subject": "x", "text": "{{ ''.__class__ }}"})
    assert codes(found) == [("error", "security")]


def test_line_breaks_in_header_fields(svc: Templates, audience: Audience) -> None:
    found = refused(svc, content={"subject": "Hi\n{{ 'there' }}", "text": "x"})
    assert [(f.code, f.field) for f in found] == [("header", "subject")]
    add_contacts(audience, *PEOPLE,
                 {"external_id": "ava", "attributes": {"first_name": "Ava\r\nBcc: v@x.io"}})
    got = save(svc, content={"subject": "Hi {{ contact.attributes.first_name }}", "text": "x"})
    (f,) = got["lint"]["findings"]
    assert (f["severity"], f["code"], f["field"], f["contacts"]) == (
        "warning", "header", "subject", ["ava"])


def test_push_payloads_over_the_limits(svc: Templates, audience: Audience) -> None:
    found = refused(svc, channel="push", content={"title": "x", "body": "y" * 5000})
    assert {f.code for f in found} == {"size"}
    assert any("APNs payload is over 4096" in f.problem for f in found)
    assert any("FCM payload is over 4096" in f.problem for f in found)
    assert any("Web Push payload is over 3993" in f.problem for f in found)
    add_contacts(audience, {"external_id": "short", "attributes": {"bio": "hi"}},
                 {"external_id": "long", "attributes": {"bio": "z" * 5000}})
    got = save(svc, name="bio", channel="push", content={"body": "{{ contact.attributes.bio }}"})
    findings = got["lint"]["findings"]
    assert {(f["severity"], f["code"]) for f in findings} == {("warning", "size")}
    assert all(f["contacts"] == ["long"] for f in findings)
    sizes = got["lint"]["sizes"]["push"]
    assert sizes["apns"]["limit"] == 4096 and sizes["apns"]["max"] > 5000


def test_web_push_alone_over_its_limit(svc: Templates) -> None:
    found = refused(svc, name="wp", channel="push", content={"body": "y" * 3985})
    assert [f.problem.split(" (")[0] for f in found] == [
        "the Web Push payload is over 3993 bytes"]


def test_sms_segments_and_encoding(svc: Templates, people: Audience) -> None:
    got = save(svc, channel="sms", content={"text": "Hi {{ contact.attributes.first_name }}"})
    assert got["lint"]["findings"] == []
    assert got["lint"]["sizes"]["sms"]["segments_max"] == 1
    got = save(svc, name="long", channel="sms", content={"text": "Sale ’today’ 🎉 " + "x" * 80})
    by = {f["code"]: f for f in got["lint"]["findings"]}
    assert set(by) == {"sms_encoding", "sms_segments"}
    assert "'’'" in by["sms_encoding"]["problem"] and "'🎉'" in by["sms_encoding"]["problem"]
    assert "2 segments (UCS-2)" in by["sms_segments"]["problem"]
    found = refused(svc, name="huge", channel="sms", content={"text": "x" * 1700})
    assert codes(found) == [("error", "size")]


def test_a_version_is_linted_before_it_is_saved(svc: Templates, people: Audience) -> None:
    save(svc, content={"subject": "x", "text": "y"})
    with pytest.raises(LintRefused) as caught:
        svc.add_version("t", VersionIn(locale="fr", content={"subject": "x",
                                                             "text": "{{ nope }}"}), actor="t")
    assert caught.value.field == "content.text"
    assert svc.get("t")["locales"] == {"default": 1}


def test_lint_on_demand_covers_every_locale_with_its_own_contacts(
        svc: Templates, audience: Audience) -> None:
    add_contacts(audience,
                 {"external_id": "fr1", "locale": "fr-FR", "attributes": {"prenom": "Zoé"}},
                 {"external_id": "en1", "locale": "en", "attributes": {"first_name": "Al"}})
    save(svc, content={"subject": "Hi {{ contact.attributes.first_name }}", "text": "x"})
    svc.add_version("t", VersionIn(locale="fr", content={
        "subject": "Salut {{ contact.attributes.prenom }}", "text": "x"}), actor="t")
    default, fr = svc.lint("t")
    assert (default.version.locale, fr.version.locale) == ("default", "fr")
    assert default.findings == [] and fr.findings == []
    assert default.samples == fr.samples == 1
