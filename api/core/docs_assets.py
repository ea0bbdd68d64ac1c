"""The interactive docs (`/docs`, `/redoc`) with every asset served by the service.

FastAPI's own pages load Swagger UI, Redoc, a favicon and Google Fonts from
public hosts, so on a machine without internet (a field or air-gapped
deployment, or a laptop offline) they render as a blank page. The same files
come from the `fastapi-offline` package (only its static folder is used) and
are served under `DOCS_ASSETS_URL`; the pages keep FastAPI's HTML, pointed there.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_ASSETS_URL = "/docs-assets"
# The pages may load and call only this origin. Redoc's sidebar footer loads a
# logo from Redocly's CDN unconditionally; under this policy the browser never
# sends that request (the image hides itself when it cannot load). Inline
# scripts and styles: FastAPI's page bootstrap, and the styles both UIs inject;
# eval: Redoc's schema compilation; blob: workers: Redoc's search.
DOCS_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'self'",
    )
)
# swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def install_offline_docs(app: FastAPI) -> None:
    """Replace the CDN-loading `/docs` and `/redoc` pages (same URLs, same OpenAPI
    document, same Authorize button) with pages whose assets the service serves."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    docs_url, redoc_url = app.docs_url, app.redoc_url
    ours = {docs_url, redoc_url} - {None}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ours]
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    if docs_url is not None:

        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            page = get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
                swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
            page.headers["Content-Security-Policy"] = DOCS_CSP
            return page

        app.add_route(docs_url, swagger_ui, include_in_schema=False)

    if redoc_url is not None:

        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            page = get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
            page.headers["Content-Security-Policy"] = DOCS_CSP
            return page

        app.add_route(redoc_url, redoc, include_in_schema=False)
