"""Tables, in SQLAlchemy Core. Times are UNIX seconds (floats) so SQLite and PostgreSQL
compare them the same way and the claim query stays index-only.

Alembic migrations under ``migrations/`` create exactly this; a test keeps the two equal.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("to_addr", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("topic", String(128)),
    Column("priority", SmallInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("accepted_state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("lease_owner", String(64)),
    Column("attempts", Integer, nullable=False, default=0),
    #: leases that expired under this message: a worker died while holding it.
    Column("lost_leases", Integer, nullable=False, default=0),
    Column("idem_scope", String(64)),
    Column("idem_key", String(255)),
    Column("request_hash", String(64)),
    Column("last_provider", String(64)),
    Column("avoid_provider", String(64)),
    Column("last_cause", String(32)),
    Column("failure", Text),
    Column("delivered_at", Float),
    Column("provider_message_id", String(255)),
    Column("fallback", Text),
    Column("parent_id", String(40)),
    #: the contact the message is for, when known (consent, caps, quiet hours, export)
    Column("contact_id", String(40)),
    #: seconds a delivered message has to be confirmed by a receipt before its fallback
    #: starts; confirm_by is set when it is delivered and cleared when it is confirmed
    Column("confirm_within", Integer),
    Column("confirm_by", Float),
    Column("confirmed_at", Float),
    #: a copy of a message to another device of the same contact: frequency caps count the
    #: copies of one push once
    Column("fanout_of", String(40)),
    #: the campaign that sent it, and the template it was rendered from (analytics, reports)
    Column("campaign_id", String(40)),
    Column("template", String(128)),
    UniqueConstraint("idem_scope", "idem_key", name="uq_messages_idem"),
)
#: states whose messages wait for a worker; the partial index below holds only these rows, so
#: a claim is a short range scan per priority however large the history grows.
READY_STATES = ("queued", "retry_scheduled", "deferred")
#: Literal SQL on purpose: a planner can only use a partial index when the query's condition
#: matches the index's, and ``state IN (?, ?, ?)`` with bound values never does.
READY = text("state IN ('queued', 'retry_scheduled', 'deferred')")
_ready = READY
Index(
    "ix_messages_ready",
    messages.c.priority,
    messages.c.next_at,
    sqlite_where=_ready,
    postgresql_where=_ready,
)
#: only leased rows, for the reaper: rows leave it when their outcome is recorded.
SENDING = text("state = 'sending'")
Index("ix_messages_lease", messages.c.lease_until, sqlite_where=SENDING,
      postgresql_where=SENDING)
# created_at, not updated_at: an index on a column every state change rewrites costs ~10 µs
# per message on the hot path, and listings order by creation anyway.
Index("ix_messages_cause", messages.c.last_cause, messages.c.created_at)
Index("ix_messages_created", messages.c.created_at)
Index("ix_messages_parent", messages.c.parent_id)
Index("ix_messages_contact", messages.c.contact_id)
#: only messages waiting for a confirmation, for the sweep
_WAITING = text("confirm_by IS NOT NULL")
#: a campaign's messages by state and recency: the runner's backlog count and auto-pause
#: window read only index entries; API messages are not in it
_CAMPAIGN = text("campaign_id IS NOT NULL")
Index("ix_messages_campaign", messages.c.campaign_id, messages.c.state, messages.c.updated_at,
      sqlite_where=_CAMPAIGN, postgresql_where=_CAMPAIGN)
Index("ix_messages_confirm", messages.c.confirm_by, sqlite_where=_WAITING,
      postgresql_where=_WAITING)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", String(40), nullable=False),
    Column("number", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("latency_ms", Float),
    Column("status", Integer),
    Column("provider_code", String(128)),
    Column("cause", String(32)),
    Column("maybe_sent", Boolean, nullable=False, default=False),
    Column("detail", Text),
    Column("raw", Text),
)
Index("ix_attempts_message", attempts.c.message_id)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", String(40), nullable=False),
    Column("at", Float, nullable=False),
    Column("src", String(16)),
    Column("dst", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("cause", String(32)),
)
Index("ix_events_message", events.c.message_id)

#: receipts that came before their message's outcome was written (a fast provider callback
#: racing the worker's batched commit); applied when the outcome is recorded.
early_receipts = Table(
    "early_receipts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", String(40), nullable=False),
    Column("at", Float, nullable=False),
    #: the add_receipt arguments, as JSON
    Column("receipt", Text, nullable=False),
)
Index("ix_early_receipts_message", early_receipts.c.message_id)

suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", String(16), primary_key=True),
    Column("address", Text, primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)


# -- audience ---------------------------------------------------------------------------------
# Contacts, their addresses, topics, the consent ledger and what the pre-send gate needs.

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("external_id", String(255), nullable=False, unique=True),
    Column("attributes", Text, nullable=False),
    Column("timezone", String(64)),
    Column("locale", String(35)),
    #: "HH:MM-HH:MM" in the contact's timezone; overrides the topic's and the default.
    Column("quiet_hours", String(16)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

contact_addresses = Table(
    "contact_addresses",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("contact_id", String(40), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("address", Text, nullable=False),
    #: device tokens: ios | android | web; environment: production | sandbox
    Column("platform", String(16)),
    Column("environment", String(16)),
    Column("verified", Boolean, nullable=False, default=False),
    Column("last_seen", Float),
    #: active | deactivated
    Column("status", String(16), nullable=False),
    Column("status_reason", String(64)),
    Column("status_evidence", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("contact_id", "channel", "address", name="uq_contact_addresses"),
)
Index("ix_contact_addresses_addr", contact_addresses.c.channel, contact_addresses.c.address)

topics = Table(
    "topics",
    metadata,
    Column("name", String(128), primary_key=True),
    #: marketing | transactional
    Column("kind", String(16), nullable=False),
    Column("description", Text, nullable=False),
    #: subscribing needs a confirmation through the channel before consent is granted
    Column("double_opt_in", Boolean, nullable=False, default=False),
    #: "3/1d": at most 3 messages of this topic per contact per day
    Column("cap", String(32)),
    Column("quiet_hours", String(16)),
    Column("created_at", Float, nullable=False),
)

#: the append-only consent ledger: one row per change, never updated or deleted (except by
#: erasure of the contact).
consent_ledger = Table(
    "consent_ledger",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("contact_id", String(40), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    #: granted | withdrawn | pending
    Column("status", String(16), nullable=False),
    #: form | api | import | double_opt_in | admin | unsubscribe | preferences | sms_keyword |
    #: complaint
    Column("source", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("ip", String(64)),
    Column("user_agent", Text),
    #: evidence: a confirmation id, a form id, an inbound message id...
    Column("proof", Text),
    Column("policy_version", String(64)),
    Column("actor", String(64), nullable=False),
)
Index("ix_consent_ledger_contact", consent_ledger.c.contact_id, consent_ledger.c.id)

#: the ledger's latest row per (contact, topic, channel): what the gate reads.
consent = Table(
    "consent",
    metadata,
    Column("contact_id", String(40), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("source", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("ledger_id", BigInteger, nullable=False),
)

#: pending confirmed opt-ins: the signed link carries the id.
confirmations = Table(
    "confirmations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("contact_id", String(40), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("address", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("confirmed_at", Float),
    Column("message_id", String(40)),
    Column("policy_version", String(64)),
)
Index("ix_confirmations_contact", confirmations.c.contact_id)

#: sends counted against frequency caps, written when a worker lets a message through.
contact_sends = Table(
    "contact_sends",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("contact_id", String(40), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Column("message_id", String(40), nullable=False),
)
Index("ix_contact_sends", contact_sends.c.contact_id, contact_sends.c.at)

#: who changed what outside the hot path: suppressions added or removed, fixes applied,
#: contacts erased.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("detail", Text, nullable=False),
)
Index("ix_audit_log_subject", audit_log.c.subject)

#: one row (id 1) whose counter moves on every change the gate caches: a process compares it
#: once per batch and drops its cache when it moved.
audience_generation = Table(
    "audience_generation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("n", BigInteger, nullable=False),
)


# -- templates --------------------------------------------------------------------------------
# Jinja2 templates per channel; a version is never changed once written, and the newest
# version of a locale is the one used (pushguard/templates/).

templates = Table(
    "templates",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    #: message | layout | partial
    Column("kind", String(16), nullable=False),
    #: email | push | sms | webhook; "any" for a partial
    Column("channel", String(16), nullable=False),
    Column("topic", String(128)),
    #: the name of the layout template a message is wrapped in
    Column("layout", String(128)),
    Column("created_at", Float, nullable=False),
)

template_versions = Table(
    "template_versions",
    metadata,
    Column("template_id", String(40), primary_key=True),
    #: 1, 2, 3... per template, across its locales
    Column("version", Integer, primary_key=True),
    #: a language tag (fr, fr-CA) or "default"
    Column("locale", String(35), nullable=False),
    #: the content as JSON: per channel, every string a Jinja template
    Column("content", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(64), nullable=False),
)
Index("ix_template_versions_locale", template_versions.c.template_id,
      template_versions.c.locale, template_versions.c.version)


# -- campaigns --------------------------------------------------------------------------------
# Segments, campaigns and each campaign's recipients (pushguard/campaigns/).

segments = Table(
    "segments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    #: the filter as JSON (pushguard.campaigns.segments.Filter)
    Column("filter", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    #: draft | scheduled | sending | paused | completed | cancelled
    Column("state", String(16), nullable=False),
    #: what to send, to whom, when and how fast, as JSON (CampaignIn)
    Column("spec", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    #: why it is paused (a person, or the auto-pause rule with the failure rate)
    Column("paused_reason", Text),
    #: when it was paused: resuming moves held messages' deadlines by the pause's length
    Column("paused_at", Float),
    #: the blocking pre-flight findings someone chose to send despite: who, when, why, what
    Column("override", Text),
    #: the last pre-flight report's summary (JSON)
    Column("preflight", Text),
    #: recipients snapshotted from the segment when sending started
    Column("recipients", Integer, nullable=False, default=0),
    #: 0 for the first send; each "retry the failed" is a new round
    Column("round", Integer, nullable=False, default=0),
    #: the runner that fans it out holds it until lease_until (one runner per campaign)
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
)

campaign_recipients = Table(
    "campaign_recipients",
    metadata,
    Column("campaign_id", String(40), primary_key=True),
    Column("contact_id", String(40), primary_key=True),
    #: the order recipients are sent in (throttle slots count along it)
    Column("seq", Integer, nullable=False),
    #: earliest time its message may be enqueued (a local-time schedule, a throttle slot)
    Column("due_at", Float, nullable=False),
    #: pending | enqueued | skipped
    Column("state", String(16), nullable=False),
    Column("round", Integer, nullable=False, default=0),
    Column("channel", String(16)),
    Column("message_id", String(40)),
    #: the experiment variant it was assigned
    Column("variant", String(64)),
    #: why it was skipped (no address on any channel, a template that cannot render...)
    Column("detail", Text),
)
Index("ix_campaign_recipients_due", campaign_recipients.c.campaign_id,
      campaign_recipients.c.state, campaign_recipients.c.due_at, campaign_recipients.c.seq)
#: a contact's campaigns (why has this contact received nothing? export, erasure)
Index("ix_campaign_recipients_contact", campaign_recipients.c.contact_id)


# -- lessons ----------------------------------------------------------------------------------
# Operators' notes on a cause, a provider or a template, shown beside every later failure of
# the same kind (pushguard/diagnosis/lessons.py).

lessons = Table(
    "lessons",
    metadata,
    Column("id", String(40), primary_key=True),
    #: cause | provider | template
    Column("kind", String(16), nullable=False),
    #: a taxonomy cause name, a provider name or a template name
    Column("subject", String(128), nullable=False),
    Column("note", Text, nullable=False),
    #: who wrote it: an API key (name and id) or the CLI's --actor
    Column("author", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_lessons_subject", lessons.c.kind, lessons.c.subject)


# -- alerts and incidents ---------------------------------------------------------------------
# What the alerts duty concludes from the store, the incidents that group alerts, the provider
# holds every worker honours, and circuit-breaker transitions written by workers so any process
# can see them (pushguard/diagnosis/).

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("rule", String(32), nullable=False),
    #: what it is about: provider:NAME, channel:NAME, campaign:ID or global
    Column("scope", String(160), nullable=False),
    #: "rule|scope" while open, NULL once resolved: the unique constraint keeps one open alert
    #: per rule and scope whichever worker process evaluates first
    Column("open_key", String(200)),
    #: open | resolved
    Column("state", String(16), nullable=False),
    #: warn | critical, now; and the highest level reached while open
    Column("severity", String(16), nullable=False),
    Column("peak", String(16), nullable=False),
    #: the last level (warn, critical, resolved) notifications were enqueued for
    Column("notified", String(16)),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("sample", Integer, nullable=False),
    Column("baseline", Float),
    Column("summary", Text, nullable=False),
    #: the evidence as JSON (top causes, codes, window)
    Column("detail", Text, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("escalated_at", Float),
    #: since when the condition no longer holds: resolution waits resolve_after from here
    Column("clear_since", Float),
    Column("resolved_at", Float),
    Column("incident_id", String(40)),
    UniqueConstraint("open_key", name="uq_alerts_open"),
)
Index("ix_alerts_opened", alerts.c.opened_at)

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("scope", String(160), nullable=False),
    #: the scope while open, NULL once closed: alerts of one scope share one open incident
    Column("open_key", String(160)),
    #: open | closed
    Column("state", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    #: failures since then (its first alert's window) are its blast radius
    Column("window_start", Float, nullable=False),
    Column("closed_at", Float),
    Column("closed_by", String(64)),
    Column("note", Text),
    UniqueConstraint("open_key", name="uq_incidents_open"),
)
Index("ix_incidents_opened", incidents.c.opened_at)

#: an incident's timeline: alerts fired, escalated, resolved; notifications, actions, notes
incident_events = Table(
    "incident_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("incident_id", String(40), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("detail", Text),
)
Index("ix_incident_events_incident", incident_events.c.incident_id, incident_events.c.id)

#: providers no worker may use until held_until (a failover decided by a person or a rule)
provider_holds = Table(
    "provider_holds",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("held_until", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

#: breaker transitions as each worker process saw them (breakers live in process memory)
circuit_events = Table(
    "circuit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", Float, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("breaker", String(160), nullable=False),
    Column("src", String(16), nullable=False),
    Column("dst", String(16), nullable=False),
)
Index("ix_circuit_events_at", circuit_events.c.at)
#: complaint and bounce rates count recent suppressions
Index("ix_suppressions_created", suppressions.c.created_at)
