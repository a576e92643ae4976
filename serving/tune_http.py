"""HTTP shapes of the folk-lstm endpoints: a Server-Sent Events stream and a MIDI response.

Kept out of serving/service.py so that the service only declares endpoints. Events of the
stream (`text/event-stream`, each `data:` line one JSON object):

    event: start   {"model", "version", "variant", "seed", "prompt", "params"}
    event: piece   {"text": "..."}          new characters, as soon as they are written
    event: end     {"stop_reason", "generated_chars", "tune"}
    event: error   {"error": "..."}         (only if generation fails mid-stream)

MIDI comes from abc2midi (serving/abc_tools.py) on MIDI_POOL, a bounded pool of its own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from starlette.responses import Response, StreamingResponse

from serving import abc_tools
from serving.limits import BoundedPool
from serving.tune import MusicGenerator, SamplingParams

# abc2midi renders on two threads of their own, with at most four more renders waiting (503 beyond):
# slow renders never hold the threads generation and model loads use (asyncio's default pool).
MIDI_POOL = BoundedPool("midi", threads=2, max_jobs=6, what="rendering MIDI")

log = logging.getLogger("edgestack.serving")


def event(name: str, payload: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


def sse_response(runner: MusicGenerator, params: SamplingParams) -> StreamingResponse:
    async def events():
        yield event("start", {"model": runner.name, "version": runner.artifact.version, "variant": runner.variant,
                              "seed": params.seed, "prompt": params.prompt,
                              "params": {k: v for k, v in asdict(params).items() if k != "prompt"}})
        generated = ""
        try:
            async for piece in runner.stream(params):
                generated += piece
                yield event("piece", {"text": piece})
        except Exception as exc:  # the 200 header is gone: report the failure in-band
            log.exception("generation failed mid-stream")
            yield event("error", {"error": f"generation failed: {exc}"})
            return
        yield event("end", {k: v for k, v in runner.result(params, generated).items()
                            if k in ("stop_reason", "generated_chars", "tune")})

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def midi_response(abc: str, filename: str = "tune.mid") -> Response:
    """ABC -> audio/midi; InputError (4xx) when it is not a tune abc2midi can render."""
    result = await MIDI_POOL.run(abc_tools.render_midi, abc)
    return Response(result.midi, media_type="audio/midi", headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-ABC-Notes": str(result.notes),
        "X-ABC-Errors": str(len(result.errors)), "X-ABC-Warnings": str(len(result.warnings))})
