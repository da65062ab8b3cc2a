"""Diagnosis: why a message, a recipient or a campaign failed; failure analytics; lessons;
alerts, incidents and post-mortem reports."""
