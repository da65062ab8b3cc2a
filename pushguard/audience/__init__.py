"""Audience: who may be sent what, when, at which address.

Contacts and their addresses, topics (marketing or transactional), the append-only consent
ledger, confirmed opt-in, unsubscribe links, and the pre-send gate that applies all of it at
intake and again when a worker is about to send.
"""
