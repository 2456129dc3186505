"""GET /playground (and / leads there): a page to try a model by hand, and see why it answered as it did.

Plain HTML, CSS and JavaScript from this package (`assets/playground/`), no build step and nothing from a CDN: the
page talks to this service only, through the public API (`GET /v1/models`, `POST /v1/models/{name}/predict?explain=
true`) with the API key typed into it, so it works wherever the API does. It records the microphone with
MediaRecorder and converts the recording to 16-bit PCM WAV in the browser (Web Audio API), which every
deployment of the service decodes.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

PAGE_PATH = "/playground"
ASSETS_PATH = "/static/playground"
ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "playground"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root(request: Request) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + PAGE_PATH, status_code=307)


@router.get(PAGE_PATH)
async def playground() -> HTMLResponse:
    # Read per request (a few KiB): an edited page shows on reload, and nothing is cached across versions.
    return HTMLResponse((ASSETS_DIR / "index.html").read_text(encoding="utf-8"))


def install(app: FastAPI) -> None:
    """Serve the page, its assets, and the redirect from /."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="playground")
    app.include_router(router)
