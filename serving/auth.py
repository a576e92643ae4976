"""Optional bearer-token auth and CORS, as ASGI middlewares around every route.

Auth is on when EDGESTACK_API_KEYS (comma-separated) names a key or EDGESTACK_API_KEYS_FILE
(one key per line, # comments) names a file. Every route then needs `Authorization: Bearer
<key>` except EDGESTACK_OPEN_PATHS (health, readiness and metrics by default; `prefix*`
matches the prefix and the path segments below it, never a longer segment) and real CORS
preflights (OPTIONS with Origin and Access-Control-Request-Method). A missing or wrong token
gets 401 `{"error": ...}` with `WWW-Authenticate: Bearer realm="edgestack"`. Keys are
compared as SHA-256 digests with `hmac.compare_digest`, against every key each time, so
neither the time taken nor an early exit tells a caller how much of a key was right, or which.

A key file fails closed (KeyRing): empty, missing or unreadable, it never turns auth off;
the last good keys stay, and with none every protected request gets 503.

CORS is off unless EDGESTACK_CORS_ORIGINS lists origins (`*` for any): then Starlette's
CORSMiddleware answers preflights and adds the headers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from starlette.middleware.cors import CORSMiddleware

from edgestack.settings import get_settings
from serving.error_shape import send_error

log = logging.getLogger("edgestack.serving")

class KeyRing:
    """The accepted keys: EDGESTACK_API_KEYS, plus the key file's (one per line, blank lines and
    # comments skipped), read again when the file changes (its inode, size or mtime), so keys
    rotate without a restart. Built once per server: the settings are read at start.

    Fails closed. A named key file turns auth on whatever it holds: when it is empty (only
    comments), missing or unreadable, as it is for a moment while an editor truncates and
    rewrites it, the last good key set stays in force; before any good read there is none,
    and `keys()` is empty with `problem` saying why, so every protected route is refused
    (503), never opened."""

    def __init__(self, settings=None):
        settings = settings or get_settings()
        self._fixed_digests, self.path = [digest(key) for key in settings.api_keys], settings.api_keys_file
        self.on = settings.auth_on
        self._stamp, self._file_digests, self.problem = None, None, None

    def _stamp_now(self):
        st = self.path.stat()
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read_file(self) -> None:
        try:
            stamp = self._stamp_now()
            if stamp == self._stamp:
                return
            lines = (line.split("#", 1)[0].strip() for line in self.path.read_text().splitlines())
            digests = [digest(line) for line in lines if line]
        except (OSError, UnicodeDecodeError) as exc:
            why = f"cannot read the key file {self.path} ({type(exc).__name__}: {exc.strerror or exc})" \
                if isinstance(exc, OSError) else f"the key file {self.path} is not UTF-8 text"
            return self._keep(why)
        if not digests:
            return self._keep(f"the key file {self.path} holds no key")
        self._stamp, self._file_digests, self.problem = stamp, digests, None

    def _keep(self, why: str) -> None:
        """The file gave no keys: keep the last good ones (read again on the next call)."""
        if why != self.problem:
            log.warning("%s; %s", why, "keeping the last good keys" if self._file_digests else "refusing requests")
        self.problem = why

    def keys(self) -> list[bytes]:
        """Every accepted key's SHA-256 digest (what `token_ok` compares); empty when auth is on
        but no key can be read (see `problem`)."""
        if self.path is None:
            return self._fixed_digests
        self._read_file()
        return self._fixed_digests + (self._file_digests or [])


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def token_ok(token: str, key_digests: list[bytes]) -> bool:
    given, ok = digest(token), False
    for key in key_digests:  # no early exit: every key is compared
        ok |= hmac.compare_digest(given, key)
    return ok


def is_open(path: str, open_paths: list[str]) -> bool:
    """`path` is one of the open paths; `prefix*` matches the prefix and what lies below it as whole
    path segments (`/docs*`: /docs, /docs/x; not /docsecret)."""
    for pattern in open_paths:
        if not pattern.endswith("*"):
            if path == pattern:
                return True
            continue
        base = pattern[:-1]
        if base.endswith("/"):
            if path.startswith(base) or path == base[:-1]:
                return True
        elif path == base or path.startswith(base + "/"):
            return True
    return False


def is_preflight(scope) -> bool:
    """A real CORS preflight: OPTIONS with an Origin and Access-Control-Request-Method (the only
    requests a browser sends without credentials, and which auth must therefore let through)."""
    if scope.get("method") != "OPTIONS":
        return False
    headers = dict(scope.get("headers") or [])
    return b"origin" in headers and b"access-control-request-method" in headers


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
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.ring.on or (kind == "http" and is_preflight(scope)) \
                or is_open(scope.get("path", ""), self.open_paths):
            return await self.app(scope, receive, send)
        keys = self.ring.keys()
        token = bearer(scope.get("headers"))
        if keys and token is not None and token_ok(token, keys):
            return await self.app(scope, receive, send)
        if kind == "websocket":  # no HTTP answer on a websocket: close it (policy violation)
            return await send({"type": "websocket.close", "code": 1008})
        if not keys:
            return await send_error(send, 503, f"authentication is on but no key can be read: {self.ring.problem}; "
                                               "every request is refused until the key file holds a key")
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
            if handler is None or not ring.on or details.method.rsplit("/", 1)[-1] in GRPC_OPEN_METHODS:
                return handler
            keys = ring.keys()
            metadata = [(k.encode(), v.encode() if isinstance(v, str) else v)
                        for k, v in details.invocation_metadata or ()]
            token = bearer(metadata)
            if keys and token is not None and token_ok(token, keys):
                return handler
            if not keys:
                code, message = grpc.StatusCode.UNAVAILABLE, f"authentication is on but no key can be read: {ring.problem}"
            else:
                why = "a bearer token is required" if token is None else "the bearer token is not valid"
                code = grpc.StatusCode.UNAUTHENTICATED
                message = f"{why}: send `authorization: Bearer <key>` metadata with a key from EDGESTACK_API_KEYS"

            async def deny(request, context):
                await context.abort(code, message)

            kind = ("unary_unary" if handler.unary_unary else "unary_stream" if handler.unary_stream
                    else "stream_unary" if handler.stream_unary else "stream_stream")
            make = getattr(grpc, f"{kind}_rpc_method_handler")
            return make(deny, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

    return BearerTokens()
