"""The v2 inference route without the framework's routing: `POST /v2/models/{m}[/versions/{v}]/infer`
answered by a raw ASGI middleware, inside ours (errors' shape, CORS, admission, tokens, the
body limit all apply as before) but ahead of BentoML's context middleware, Starlette's exception
middlewares and routers (two: the service's, then the mounted v2 app's) and the Request object.

Why: on a small model the request around the model is the cost. A py-spy profile of one worker
under concurrency-16 v2 binary load (digits-cnn int8, 2026-12-05) put 44% of the samples inside
our middleware stack, of which the v2 handler itself (decode, batcher, ORT, encode) was 9%: the
rest was routing, the request/response objects and the send chain. The answer is the same
object either way (`V2App.answer_infer`, which the Starlette route calls too), so nothing a client
sees changes; EDGESTACK_V2_FAST_PATH=0 sends these requests through the router again (for A/B).
"""

from __future__ import annotations

import re

from edgestack.settings import get_settings

INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class FastInfer:
    def __init__(self, app, v2=None):
        self.app, self.v2 = app, v2
        self.enabled = v2 is not None and get_settings().v2_fast_path

    async def __call__(self, scope, receive, send):
        if self.enabled and scope["type"] == "http" and scope["method"] == "POST":
            match = INFER.fullmatch(scope["path"])
            if match is not None:
                chunks = []
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        return
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                response = await self.v2.answer_infer(match[1], match[2], b"".join(chunks), headers)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)
