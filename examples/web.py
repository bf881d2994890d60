"""The example app's browser side: the demo page, ``wsgate.js``, and a demo token endpoint.

* ``GET /`` serves the demo page, and ``/static/`` its script and style sheet.
* ``GET /wsgate.js`` serves the client helper that ships inside wsgate, with ``js_route()``
  (see ``docs/browser.md``).
* ``POST /demo/token`` mints a short-lived JWT with the configured secret, so that the page
  connects as a real client would. It exists in development only: in production the route is
  not there, and the path answers 404.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from wsgate import GateConfig, js_route
from wsgate.testing import TokenFactory

STATIC_DIR = Path(__file__).resolve().parent / "static"

DEMO_TOKEN_TTL = 600
"""Lifetime of a demo token, in seconds. The page refreshes it in band before it expires."""

_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KINDS = ("valid", "expired", "invalid")
_HMAC = ("HS256", "HS384", "HS512")

# The page may connect to another wsgate server (?server=), so WebSockets may go anywhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def web_routes(config: GateConfig) -> list[BaseRoute]:
    """The demo page and its static files, wsgate.js, and (in development) the token endpoint."""
    routes: list[BaseRoute] = [
        Route("/", _page, methods=["GET", "HEAD"]),
        js_route(),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if config.is_development:
        routes.append(Route("/demo/token", DemoTokens(config).mint, methods=["POST"]))
    return routes


async def _page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


class DemoTokens:
    """Mints demo tokens with the gate's HMAC secret. Development only.

    The request body is JSON ``{"user": "alice", "kind": "valid"}``; ``kind`` is ``valid``,
    ``expired`` or ``invalid`` (signed with another key), so the page can show the refusals.
    Only ``Content-Type: application/json`` is accepted (415 otherwise): a cross-site request
    with that type needs a CORS preflight, which this app never grants, so other sites cannot
    have it mint tokens.
    """

    def __init__(self, config: GateConfig) -> None:
        algorithm = next((name for name in config.jwt_algorithms if name in _HMAC), None)
        self.factory: TokenFactory | None = None
        if config.jwt_secret is not None and algorithm is not None:
            self.factory = TokenFactory(
                config.jwt_secret,
                algorithm=algorithm,
                audience=config.jwt_audience,
                issuer=config.jwt_issuer,
                ttl=DEMO_TOKEN_TTL,
            )

    async def mint(self, request: Request) -> Response:
        if self.factory is None:
            return _error(
                503,
                "The demo token endpoint signs with WSGATE_JWT_SECRET and an HS256/HS384/HS512 "
                "algorithm, and none is configured. Set WSGATE_JWT_SECRET, or connect without a "
                "token (the development bypass, WSGATE_DEV_BYPASS).",
            )
        # Only a JSON body: a cross-site form or text/plain POST needs no CORS preflight.
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return _error(
                415, "Send the request as Content-Type: application/json, with a JSON object."
            )
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, 'Send a JSON object, e.g. {"user": "alice", "kind": "valid"}.')
        user, kind = body.get("user", "alice"), body.get("kind", "valid")
        if not isinstance(user, str) or not _USER.fullmatch(user):
            return _error(400, '"user" must be 1 to 64 letters, digits, ".", "_" or "-".')
        if kind not in _KINDS:
            return _error(400, f'"kind" must be one of {", ".join(_KINDS)}.')
        if kind == "expired":
            token = self.factory.expired(user)
        elif kind == "invalid":
            token = self.factory.wrong_signature(user)
        else:
            token = self.factory.valid(user)
        expires_in = DEMO_TOKEN_TTL if kind == "valid" else None
        return JSONResponse(
            {"token": token, "user": user, "kind": kind, "expires_in": expires_in},
            headers={"Cache-Control": "no-store"},
        )


def _error(status: int, message: str) -> Response:
    return JSONResponse(
        {"error": message}, status_code=status, headers={"Cache-Control": "no-store"}
    )
