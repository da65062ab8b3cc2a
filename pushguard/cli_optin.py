"""pushguard contacts subscribe (stub: being built)."""

from __future__ import annotations
