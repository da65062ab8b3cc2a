"""Inbound SMS keywords (stub: being built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from pushguard.app import App


def inbound_router(app: App) -> APIRouter:
    return APIRouter()
