"""Experiments: each recipient gets a variant by weight, stably (the same contact, the same
variant, however often it is asked and by whichever process), each variant's template renders
their message, and progress counts the messages per variant."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from pushguard.campaigns.composer import Composer
from pushguard.campaigns.runner import Runner
from pushguard.campaigns.service import spec_of
from pushguard.exceptions import InputError
from tests.campaigns.kit import World, campaign_messages, recipients_of, world

pytestmark = pytest.mark.timeout(60)


def html(word: str) -> str:
    return (f'<p>{word} {{{{ contact.attributes.first_name }}}}</p>'
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a>')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    with world(tmp_path, database_url=url) as got:
        got.topic("news")
        got.template("newsletter", html("Control"))
        got.template("bold", html("BOLD"))
        got.template("calm", html("calm"))
        yield got


EXPERIMENT = {"name": "tone", "variants": [{"name": "A", "template": "bold", "weight": 3},
                                           {"name": "B", "template": "calm", "weight": 1}]}


def test_variants_are_assigned_stably_by_weight_and_reported(w: World) -> None:
    w.contacts(400)
    c = w.campaign(experiment=EXPERIMENT)
    cid = c["id"]
    w.app.campaigns.start(cid, actor="t")
    Runner(w.app.campaigns).tick()

    recs = recipients_of(w.app, cid)
    split = Counter(r.variant for r in recs)
    assert set(split) == {"A", "B"} and sum(split.values()) == 400
    assert 255 <= split["A"] <= 345, split  # 3:1 of 400, about 9 standard deviations wide

    # stable: a new composer (another process, a crash, a re-snapshot) agrees on everyone
    again = Composer(w.app.templates, spec_of(w.app.campaigns.find(cid)))
    assert all(again.variant_of(cid, r.contact_id) == r.variant for r in recs)

    # each variant's message comes from its own template
    msgs = {m.contact_id: m for m in campaign_messages(w.app, cid)}
    for r in recs:
        m = msgs[r.contact_id]
        assert r.message_id == m.id
        assert m.template == {"A": "bold", "B": "calm"}[r.variant]
        assert ("BOLD" if r.variant == "A" else "calm") in m.content

    # progress per variant: deliver A's, fail ten of B's
    b = [msgs[r.contact_id].id for r in recs if r.variant == "B"]
    with w.app.store._write() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE messages SET state = 'delivered' WHERE campaign_id = :c"),
                     {"c": cid})
        for mid in b[:10]:
            conn.execute(text("UPDATE messages SET state = 'failed' WHERE id = :m"), {"m": mid})
    p = w.app.campaigns.progress(cid)
    assert p["variants"] == {"A": {"delivered": split["A"]},
                             "B": {"delivered": split["B"] - 10, "failed": 10}}


def test_another_campaign_draws_its_own_split(w: World) -> None:
    ids = w.contacts(200)
    one = w.campaign(experiment=EXPERIMENT)
    two = w.campaign(name="two", experiment=EXPERIMENT)
    c1 = Composer(w.app.templates, spec_of(w.app.campaigns.find(one["id"])))
    c2 = Composer(w.app.templates, spec_of(w.app.campaigns.find(two["id"])))
    a = [c1.variant_of(one["id"], i) for i in ids]
    b = [c2.variant_of(two["id"], i) for i in ids]
    assert a != b  # not the same people in B every time
    assert all(v in ("A", "B") for v in a + b)


def test_without_an_experiment_no_variants_are_reported(w: World) -> None:
    w.contacts(3)
    c = w.campaign()
    w.app.campaigns.start(c["id"], actor="t")
    Runner(w.app.campaigns).tick()
    assert {r.variant for r in recipients_of(w.app, c["id"])} == {None}
    assert "variants" not in w.app.campaigns.progress(c["id"])


@pytest.mark.parametrize(("experiment", "field"), [
    ({"name": "x", "variants": [{"name": "A", "template": "bold"},
                                {"name": "A", "template": "calm"}]}, "experiment.variants"),
    ({"name": "x", "variants": [{"name": "A", "template": "bold"}]}, "experiment.variants"),
    ({"name": "x", "variants": [{"name": "A", "template": "bold"},
                                {"name": "B", "template": "nope"}]},
     "experiment.variants[1].template"),
    ({"name": "x", "variants": [{"name": "A", "template": "bold", "weight": 0},
                                {"name": "B", "template": "calm"}]},
     "experiment.variants[0].weight"),
])
def test_bad_experiments_are_refused_naming_the_field(w: World, experiment: dict[str, object],
                                                      field: str) -> None:
    from pushguard.campaigns.service import parse

    body = {"name": "x", "topic": "news", "experiment": experiment,
            "channels": [{"channel": "email", "template": "newsletter"}]}
    with pytest.raises(InputError) as bad:
        w.app.campaigns.create(parse(body), actor="t")
    assert bad.value.field == field
