"""``pushguard template``, run as a user would: add, version, list, lint, render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import CLI
from tests.templates.linkserver import LinkServer, link_server


@pytest.fixture
def ready(cli: CLI) -> CLI:
    cli("db", "upgrade")
    cli("topics", "add", "news", "--kind", "marketing")
    cli("contacts", "add", "ann", "--email", "ann@example.com", "--locale", "fr-CA",
        "--attributes", '{"first_name": "Ann"}')
    cli("contacts", "add", "bob", "--email", "bob@example.com")
    return cli


def write(path: Path, content: object) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def test_add_render_version_list(ready: CLI, tmp_path: Path) -> None:
    f = write(tmp_path / "welcome.json", {
        "subject": "Hi {{ contact.attributes.first_name }}",
        "html": '<p>Hello {{ contact.attributes.first_name }}</p>'
                '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'})
    got = ready("template", "add", "welcome", "--channel", "email", "--file", f,
                "--topic", "news")
    first, *rest = got.stdout.splitlines()
    assert first.startswith("template welcome (tpl_") and first.endswith("version 1 [default]")
    assert rest[0].startswith("warning subject line 1: 1 of the 2 sampled contacts have no "
                              "contact.attributes.first_name")
    assert rest[1] == "        contacts: bob"
    shown = json.loads(ready("template", "render", "welcome", "--contact", "ann").stdout)
    assert shown["content"]["subject"] == "Hi Ann"
    assert '<a href="{{unsubscribe_url}}">' in shown["content"]["html"]
    failed = ready("template", "render", "welcome", "--contact", "bob", check=False)
    assert failed.returncode == 1
    assert "TEMPLATE_ERROR: template welcome" in failed.stderr
    assert "subject line 1: 'contact.attributes.first_name' is undefined" in failed.stderr
    fr = write(tmp_path / "fr.json", {"subject": "Salut {{ contact.attributes.first_name }}",
                                      "text": "Bonjour {{ unsubscribe_url }}"})
    ready("template", "version", "welcome", "--locale", "fr", "--file", fr)
    shown = json.loads(ready("template", "render", "welcome", "--contact", "ann").stdout)
    assert (shown["content"]["subject"], shown["version"], shown["locale"]) == (
        "Salut Ann", 2, "fr")
    listed = ready("template", "list").stdout
    assert "welcome" in listed and "default (1), fr (2)" in listed
    history = json.loads(ready("template", "show", "welcome").stdout)
    assert [v["version"] for v in history["versions"]] == [1, 2]


def test_a_template_with_lint_errors_is_not_saved(ready: CLI, tmp_path: Path) -> None:
    f = write(tmp_path / "bad.json", {"subject": "Hi\n{{ x", "text": "{{ nope }}"})
    got = ready("template", "add", "bad", "--channel", "email", "--file", f, check=False)
    assert got.returncode == 1
    assert "error   subject line 2: unexpected end of template" in got.stderr
    assert got.stderr.rstrip().endswith("error: not saved: 1 lint error(s)")
    assert "bad" not in ready("template", "list").stdout
    missing = ready("template", "add", "x", "--channel", "email", "--file", "nope.json",
                    check=False)
    assert missing.returncode == 1 and "error: --file: cannot read nope.json" in missing.stderr


def test_lint_checks_links_and_exits_1_on_errors(ready: CLI, tmp_path: Path) -> None:
    links: LinkServer
    with link_server() as links:
        u = links.url
        f = write(tmp_path / "promo.json", {
            "subject": "Sale", "html": f'<a href="{u}/ok">ok</a>\n<img src="{u}/img/ok.png">'})
        ready("template", "add", "promo", "--channel", "email", "--file", f)
        clean = ready("template", "lint", "promo")
        assert clean.stdout.splitlines() == [
            "promo version 1 [default]: 0 error(s), 0 warning(s) (2 sample contacts, "
            "2 links checked)"]
        f = write(tmp_path / "v2.json", {
            "subject": "Sale", "html": f'<a href="{u}/missing">gone</a>\n'
                                       f'<img src="{u}/img/big.png">'})
        ready("template", "version", "promo", "--file", f)
        got = ready("template", "lint", "promo", "--json", check=False)
        assert got.returncode == 1
        report = json.loads(got.stdout)
        assert (report["errors"], report["warnings"]) == (1, 1)
        (r,) = report["reports"]
        assert [(x["code"], x["severity"], x["line"]) for x in r["findings"]] == [
            ("link_http_error", "error", 1), ("image_image_too_large", "warning", 2)]
        assert r["links"][0]["status"] == 404
        offline = ready("template", "lint", "promo", "--no-links")
        assert "0 error(s)" in offline.stdout and "links checked" not in offline.stdout
