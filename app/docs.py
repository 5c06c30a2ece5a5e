"""API documentation served without internet access: Swagger UI and ReDoc from the package's own static
files (installed from pinned npm tarballs by `make install`, see `app.vendor`), and the site's favicon."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from app.inputs import ApiError
from app.vendor import STATIC_DIR, installed, manifest

router = APIRouter(include_in_schema=False)
FAVICON = "/static/favicon.svg"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def _require(package: str) -> str:
    """The URL folder of an installed asset package; 503 with what to do when it is missing."""
    if not installed(package, manifest()[package]):
        raise ApiError(503, f"The documentation assets ({package}) are not installed; run `make install`.")
    return f"/static/vendor/{package}"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on the app's OpenAPI schema, all assets local."""
    base = _require("swagger-ui-dist")
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - API",
                               oauth2_redirect_url=OAUTH2_REDIRECT,
                               swagger_js_url=f"{base}/swagger-ui-bundle.js",
                               swagger_css_url=f"{base}/swagger-ui.css", swagger_favicon_url=FAVICON)


@router.get(OAUTH2_REDIRECT)
def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect helper page."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc on the app's OpenAPI schema, all assets local (no web fonts)."""
    base = _require("redoc")
    return get_redoc_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - ReDoc",
                          redoc_js_url=f"{base}/redoc.standalone.js", redoc_favicon_url=FAVICON,
                          with_google_fonts=False)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The site icon (an SVG: every current browser accepts it under this name)."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                        headers={"cache-control": "public, max-age=86400"})

