"""GET /docs: Swagger UI, its assets served by the service itself (vendored by the `fastapi-swagger` package)."""
from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/static/swagger-ui"
ASSETS_PACKAGE = ("fastapi_swagger", "resources")  # swagger-ui-bundle.js, swagger-ui.css, favicon-32x32.png

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    assets = root + ASSETS_PATH
    return get_swagger_ui_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon-32x32.png",
        # No request to an online validator: the page talks to this service only.
        swagger_ui_parameters={"validatorUrl": None},
    )


def install(app: FastAPI) -> None:
    """Serve /docs and its static assets (create the app with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="swagger-ui")
    app.include_router(router)
