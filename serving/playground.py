"""The playground: a page at GET / to try every served model in a browser, and BentoML's API
docs moved to GET /docs. Nothing on either page comes from the internet.

BentoML 1.4 answers GET / itself with its Swagger UI page, which also loads Google Tag
Manager; a route cannot replace its own, so this is an ASGI middleware in front of the
service (serving/service.py registers it) that answers a few fixed paths and passes every
other request on:

    /                         serving/playground/index.html (plain HTML/CSS/JS, no build step)
    /docs                     Swagger UI on BentoML's own copies of its files (/static_content/...)
                              and /docs.json, without the tracker and without the online validator
    /playground/<file>        the page's scripts and styles
    /playground/abcjs.js      abcjs (sheet music), installed from npm by `make playground`
    /playground/abcjs-LICENSE.md    and its licence

Each page is sent with a Content-Security-Policy that lets it load from this server only.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, PlainTextResponse

STATIC = Path(__file__).parent / "playground"
ABCJS = STATIC / "vendor" / "node_modules" / "abcjs"

# path -> (file, media type)
FILES = {
    "/": (STATIC / "index.html", "text/html; charset=utf-8"),
    "/docs": (STATIC / "docs.html", "text/html; charset=utf-8"),
    "/playground/playground.js": (STATIC / "playground.js", "text/javascript; charset=utf-8"),
    "/playground/playground.css": (STATIC / "playground.css", "text/css; charset=utf-8"),
    "/playground/docs.js": (STATIC / "docs.js", "text/javascript; charset=utf-8"),
    "/playground/abcjs.js": (ABCJS / "dist" / "abcjs-basic-min.js", "text/javascript; charset=utf-8"),
    "/playground/abcjs-LICENSE.md": (ABCJS / "LICENSE.md", "text/markdown; charset=utf-8"),
}

# Only this server: scripts, styles, fetches, images (data: and blob: for the canvas and the
# 28x28 preview) and the MIDI download. Swagger UI sets inline styles, hence 'unsafe-inline'
# for styles (scripts stay 'self' only).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; media-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")


class Playground:
    """ASGI middleware: answers GET/HEAD for the paths in FILES, passes everything else on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] in FILES:
            path, media_type = FILES[scope["path"]]
            if not path.is_file():  # abcjs not installed: the page says so in words
                response = PlainTextResponse(f"{scope['path']} is not installed here (run `make playground`)", 404)
            else:
                response = FileResponse(path, media_type=media_type, headers={
                    "Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                    "X-Content-Type-Options": "nosniff"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)
