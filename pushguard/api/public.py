"""Public pages reached from links in messages (stub: being built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from pushguard.app import App


def public_router(app: App) -> APIRouter:
    return APIRouter()
