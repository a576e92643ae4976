"""/metrics labels requests by route template, never by the raw path a caller sent.

BentoML's HTTP metrics middleware labels every request with `endpoint=<raw path>`, so each
unknown path (`/v2/models/../../etc/passwd`, a scanner's thousand guesses) became new
Prometheus series for as long as the server ran, and the playground's latency table listed
them. `label_metrics_by_route` swaps that middleware for one that labels by the route the
request matches: an API path (`/classify`), a v2 template (`/v2/models/{model}/infer`), or
`unmatched` for everything else, so the number of series is fixed by the code.

It subclasses BentoML's own metrics middlewares (bentoml 1.4's
`bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware`, which the
service's app uses, and `HTTPTrafficMetricsMiddleware`; BentoML imports them from that module
when it builds the app) and hands them a copy of the request's scope with the label as its
path; the app below still gets the real scope. tests/integration/test_security.py checks
the labels on a real server, so a BentoML upgrade that moves them fails there.
"""

from __future__ import annotations

from collections.abc import Iterable

UNMATCHED = "unmatched"
SYSTEM_PATHS = ("/", "/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json")


class RouteLabels:
    """Path -> route label: exact paths first, then Starlette routes' templates, else UNMATCHED."""

    def __init__(self, exact: Iterable[str], routes: Iterable = ()):
        self.exact = frozenset(exact)
        self.templates = [(route.path_regex, route.path) for route in routes]

    def __call__(self, path: str) -> str:
        if path in self.exact:
            return path
        for regex, template in self.templates:
            if regex.match(path):
                return template
        return UNMATCHED


def label_metrics_by_route(labels: RouteLabels) -> None:
    """Install the route-labelled metrics middlewares (call before BentoML builds its app)."""
    from bentoml._internal.server.http import instruments

    # The service's app (bentoml 1.4's new SDK) uses the Runner one; the legacy HTTP app the other.
    for name in ("RunnerTrafficMetricsMiddleware", "HTTPTrafficMetricsMiddleware"):
        setattr(instruments, name, route_labelled(getattr(instruments, name), labels))


def route_labelled(middleware: type, labels: RouteLabels) -> type:
    """`middleware` (one of BentoML's metrics middlewares), labelling by `labels(path)` instead."""
    base = getattr(middleware, "edgestack_original", middleware)

    class RouteLabelled(base):
        edgestack_original = base

        def __init__(self, app, **options):
            super().__init__(self._real, **options)
            self._app = app

        async def _real(self, scope, receive, send):
            await self._app(scope.get("edgestack.scope", scope), receive, send)

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self._app(scope, receive, send)
            labelled = {**scope, "path": labels(scope["path"]), "edgestack.scope": scope}
            await super().__call__(labelled, receive, send)

    RouteLabelled.__name__ = RouteLabelled.__qualname__ = f"RouteLabelled{base.__name__}"
    return RouteLabelled
