"""`/docs` without internet access: Swagger UI from the `swagger-ui-bundle` package.

FastAPI's own `/docs` page loads Swagger UI from a CDN, which an operator
on a closed network cannot reach. This serves the same page with the
package's files under `/docs/static`, and no ReDoc (it has no offline copy).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
STATIC_PATH = "/docs/static"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def serve_docs_offline(app: FastAPI) -> None:
    """Replace FastAPI's `/docs`, its OAuth2 redirect and `/redoc` by offline ones.

    Works on an app created with the defaults or with `docs_url=None,
    redoc_url=None`; the routes stay out of the OpenAPI document.
    """
    defaults = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    app.router.routes[:] = [
        route for route in app.router.routes if not (isinstance(route, Route) and route.path in defaults)
    ]
    app.redoc_url = None
    if app.openapi_url is None:
        app.docs_url = None
        return
    app.docs_url = DOCS_PATH
    app.swagger_ui_oauth2_redirect_url = OAUTH2_REDIRECT_PATH
    openapi_url = app.openapi_url
    # Swagger UI would otherwise send the document to validator.swagger.io for a badge.
    parameters = {**(app.swagger_ui_parameters or {}), "validatorUrl": None}

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/favicon-32x32.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.mount(STATIC_PATH, StaticFiles(directory=swagger_ui_path), name="swagger-ui-static")
    app.add_route(DOCS_PATH, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_PATH, oauth2_redirect, include_in_schema=False)
