"""``js_route()``: serve wsgate.js, the browser helper, from the app itself.

The file ships inside the wheel as ``wsgate/static/wsgate.js``. It is the one copy: the npm
package in the repository's ``js/`` directory is built from it (``docs/browser.md``).
"""

from __future__ import annotations

import hashlib
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wsgate.exceptions import ConfigurationError

__all__ = ["js_route"]


def js_route(path: str = "/wsgate.js", *, max_age: int = 0) -> Route:
    """A Starlette route that serves ``wsgate.js`` at ``path``, for GET and HEAD.

    A page of the app loads it with ``import { openSocket, closeInfo } from "/wsgate.js";``.
    The file is read once, when the route is made. Responses carry an ``ETag`` (a hash of the
    file), and a request whose ``If-None-Match`` names it gets ``304 Not Modified``.

    Args:
        path: The URL path to serve the file at; it must start with ``/``.
        max_age: How long a browser may use its copy without asking again, in seconds. With 0
            (the default) it asks each time and gets 304 while the file is unchanged, so that
            pages get the new file as soon as wsgate is upgraded. A larger value saves those
            requests, but pages may run the old file for that long after an upgrade.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"path must be a URL path starting with '/', not {path!r}.")
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise ConfigurationError(
            f"max_age must be a whole number of seconds >= 0, not {max_age!r}."
        )
    body = resources.files("wsgate").joinpath("static/wsgate.js").read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": f"public, max-age={max_age}" if max_age else "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        # The file is public, the same for everyone, and sent without cookies' help: a page on
        # another origin (a front end beside the API) may import it as a module script.
        "Access-Control-Allow-Origin": "*",
    }

    # A 304 repeats the validators and the caching rules, and has no body to give a type.
    not_modified = {name: value for name, value in headers.items() if name != "Content-Type"}

    async def serve(request: Request) -> Response:
        if _matches(request.headers.get("if-none-match", ""), etag):
            return Response(status_code=304, headers=not_modified)
        return Response(body, headers=headers)

    return Route(path, serve, methods=["GET", "HEAD"], name="wsgate_js")


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (a weak comparison, RFC 9110 13.1.2)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
