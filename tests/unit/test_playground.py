"""The playground's middleware (serving/playground.py) in front of a stand-in app: the page and
the docs at fixed paths with a this-server-only CSP, everything else passed on untouched."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving import playground


def client(monkeypatch=None, files=None) -> TestClient:
    async def behind(request):
        return PlainTextResponse(f"behind {request.method} {request.url.path}")

    if files is not None:
        monkeypatch.setattr(playground, "FILES", files)
    app = Starlette(routes=[Route("/{path:path}", behind, methods=["GET", "POST", "HEAD"])])
    return TestClient(playground.Playground(app))


def test_the_page_and_the_docs_are_served_here_with_a_local_only_policy():
    web = client()
    for path, needle in (("/", "edgestack playground"), ("/docs", "swagger-ui"),
                         ("/playground/playground.js", "classifyBlob"), ("/playground/docs.js", "validatorUrl: null")):
        response = web.get(path)
        assert response.status_code == 200 and needle in response.text, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
    page = web.get("/").text
    assert "http://" not in page and "https://" not in page and "googletagmanager" not in page


def test_other_requests_pass_through():
    web = client()
    assert web.post("/").text == "behind POST /"          # only GET and HEAD are the page's
    assert web.get("/docs.json").text == "behind GET /docs.json"
    assert web.get("/playground/../service.py").text.startswith("behind")  # no file outside the list


def test_a_missing_abcjs_is_a_404_that_says_how_to_install_it(monkeypatch, tmp_path):
    missing = tmp_path / "abcjs-basic-min.js"
    response = client(monkeypatch, {"/playground/abcjs.js": (missing, "text/javascript")}).get("/playground/abcjs.js")
    assert response.status_code == 404 and "make playground" in response.text
