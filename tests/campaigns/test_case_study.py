"""The seeds' case study, rebuilt: a campaign failed for half of its recipients because its
email held invalid links and the subscription flow had no verification step.

Here the pre-flight catches both before a single message goes out: it predicts about 50 %
failure and names both causes, and refuses the start. After the fixes (working links, the
segment narrowed to confirmed subscribers) it predicts about 0 % failure, and the real send,
through a real SMTP relay, matches the prediction.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pushguard.campaigns.preflight import Preflight
from pushguard.exceptions import Blocked
from tests.campaigns.kit import world

pytestmark = pytest.mark.timeout(120)


def html(base: str, *, link: str, image: str) -> str:
    return (f'<p>Hello {{{{ contact.attributes.first_name }}}}</p>'
            f'<a href="{base}{link}">Our spring sale</a><img src="{base}{image}" alt="">'
            f'<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>')


async def test_preflight_predicts_the_failure_and_the_fixed_campaign_delivers_as_predicted(
        tmp_path: Path) -> None:
    with world(tmp_path) as w:
        w.topic("news", double_opt_in=True)
        confirmed = w.contacts(12, prefix="ok", consent="granted")
        w.contacts(12, prefix="pending", consent="pending")
        base = w.links.url
        w.template("newsletter", html(base, link="/missing", image="/img/gone.png"))
        c = w.campaign(filter={"address": {"channel": "email"}})

        report = Preflight(w.app.campaigns).run(c["id"])

        assert report["recipients"] == 24
        assert report["predicted"]["delivery_rate"] == pytest.approx(0.5)
        codes = {f["code"]: f for f in report["findings"]}
        unverified = codes["unverified"]
        assert unverified["count"] == 12 and unverified["examples"][0].startswith("pending")
        links = [f for f in report["findings"] if f["code"].startswith("template.link")]
        images = [f for f in report["findings"] if f["code"].startswith("template.image")]
        assert links and links[0]["severity"] == "block" and "/missing" in links[0]["url"]
        assert images and images[0]["severity"] == "block"
        assert codes["low_predicted_rate"]["severity"] == "block"
        assert w.links.hits["/missing"] == 1  # per unique URL, not per recipient

        with pytest.raises(Blocked) as refused:
            w.app.campaigns.start(c["id"], actor="test")
        assert {f["code"] for f in refused.value.findings} >= {"low_predicted_rate"}
        assert all(not r.server.handler.messages for r in w.relays.values())

        # the fixes: working links, and only confirmed subscribers
        w.version("newsletter", html(base, link="/ok", image="/img/ok.png"))
        spec = {k: v for k, v in w.app.campaigns.get(c["id"]).items()
                if k in ("name", "topic", "channels", "data")}
        from pushguard.campaigns.models import CampaignIn

        w.app.campaigns.update(c["id"], CampaignIn.model_validate({**spec, "filter": {
            "consent": {"topic": "news", "channel": "email", "status": "granted"}}}),
            actor="test")
        fixed = Preflight(w.app.campaigns).run(c["id"])
        assert fixed["blocking"] == 0, fixed["findings"]
        assert fixed["predicted"]["delivery_rate"] == 1.0
        assert fixed["predicted"]["delivered"] == 12

        started = w.app.campaigns.start(c["id"], actor="test")
        assert started["state"] == "sending"
        assert await w.deliver(c["id"]) == "completed"

        progress = w.app.campaigns.progress(c["id"])
        assert progress["delivered"] == fixed["predicted"]["delivered"]
        assert progress["failed"] == 0 and progress["not_sent"] == 0
        got = sorted(w.relays["primary"].recipients)
        assert got == sorted(f"ok{i}@example.com" for i in range(12))
        assert len(confirmed) == 12
