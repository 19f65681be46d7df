"""FastAPI dependencies shared by the management routes."""

from __future__ import annotations

from fastapi import Request

from wasmlet.api.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.wasmlet
    return state
