"""Optional bearer-token auth and CORS, as ASGI middlewares around every route.

Auth is on when EDGESTACK_API_KEYS (comma-separated) or EDGESTACK_API_KEYS_FILE (one key per
line, # comments) names at least one key. Every route then needs `Authorization: Bearer <key>`
except EDGESTACK_OPEN_PATHS (health, readiness and metrics by default; `prefix*` matches a
prefix) and CORS preflights. A missing or wrong token gets 401 `{"error": ...}` with
`WWW-Authenticate: Bearer realm="edgestack"`. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, against every key each time, so neither the time taken nor an early
exit tells a caller how much of a key was right, or which key.

CORS is off unless EDGESTACK_CORS_ORIGINS lists origins (`*` for any): then Starlette's
CORSMiddleware answers preflights and adds the headers.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.middleware.cors import CORSMiddleware

from edgestack.settings import get_settings
from serving.error_shape import send_error

class KeyRing:
    """The accepted keys: EDGESTACK_API_KEYS, plus the key file's (one per line, blank lines and
    # comments skipped), read again when the file changes, so keys rotate without a restart.
    Built once per server: the settings are read at start, not on every request."""

    def __init__(self, settings=None):
        settings = settings or get_settings()
        self._fixed_digests, self.path = [digest(key) for key in settings.api_keys], settings.api_keys_file
        self._stamp, self._digests = None, self._fixed_digests

    def keys(self) -> list[bytes]:
        """Every key's SHA-256 digest (what `token_ok` compares), computed when the keys are read."""
        if self.path is None:
            return self._fixed_digests
        stamp = self.path.stat().st_mtime_ns
        if stamp != self._stamp:
            lines = (line.split("#", 1)[0].strip() for line in self.path.read_text().splitlines())
            self._stamp = stamp
            self._digests = self._fixed_digests + [digest(line) for line in lines if line]
        return self._digests


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def token_ok(token: str, key_digests: list[bytes]) -> bool:
    given, ok = digest(token), False
    for key in key_digests:  # no early exit: every key is compared
        ok |= hmac.compare_digest(given, key)
    return ok


def is_open(path: str, open_paths: list[str]) -> bool:
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in open_paths)


def bearer(headers) -> str | None:
    raw = dict(headers or []).get(b"authorization")
    if raw is None:
        return None
    scheme, _, token = raw.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class TokenAuth:
    def __init__(self, app):
        self.app, self.ring, self.open_paths = app, KeyRing(), get_settings().open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        keys = self.ring.keys()
        if not keys or is_open(scope.get("path", ""), self.open_paths):
            return await self.app(scope, receive, send)
        token = bearer(scope.get("headers"))
        if token is not None and token_ok(token, keys):
            return await self.app(scope, receive, send)
        why = "a bearer token is required" if token is None else "the bearer token is not valid"
        challenge = b'Bearer realm="edgestack"' + (b', error="invalid_token"' if token is not None else b"")
        await send_error(send, 401, f"{why}: send `Authorization: Bearer <key>` with a key from EDGESTACK_API_KEYS",
                         [(b"www-authenticate", challenge)])


class Cors:
    """Starlette's CORSMiddleware with EDGESTACK_CORS_ORIGINS, or nothing when none are set."""

    def __init__(self, app):
        origins = get_settings().cors_origins
        self.app = CORSMiddleware(app, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                                  expose_headers=["Retry-After", "Inference-Header-Content-Length"]) \
            if origins else app

    async def __call__(self, scope, receive, send):
        return await self.app(scope, receive, send)


# gRPC health calls stay open, as /livez and /readyz do over HTTP.
GRPC_OPEN_METHODS = ("ServerLive", "ServerReady")


def grpc_interceptor():
    """The same bearer-token check for the v2 gRPC endpoint (serving/grpc_v2.py): `authorization`
    metadata `Bearer <key>`; otherwise UNAUTHENTICATED with the same message."""
    import grpc

    ring = KeyRing()

    class BearerTokens(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            keys = ring.keys()
            if handler is None or not keys or details.method.rsplit("/", 1)[-1] in GRPC_OPEN_METHODS:
                return handler
            metadata = [(k.encode(), v.encode() if isinstance(v, str) else v)
                        for k, v in details.invocation_metadata or ()]
            token = bearer(metadata)
            if token is not None and token_ok(token, keys):
                return handler
            why = "a bearer token is required" if token is None else "the bearer token is not valid"
            message = f"{why}: send `authorization: Bearer <key>` metadata with a key from EDGESTACK_API_KEYS"

            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            kind = ("unary_unary" if handler.unary_unary else "unary_stream" if handler.unary_stream
                    else "stream_unary" if handler.stream_unary else "stream_stream")
            make = getattr(grpc, f"{kind}_rpc_method_handler")
            return make(deny, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

    return BearerTokens()
