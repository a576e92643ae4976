"""Endpoint inputs as BentoML parses them, with every caller mistake in the parsing a 4xx.

BentoML parses a request into an endpoint's arguments before the endpoint runs, so
`caller_errors` (serving/service.py) never sees what goes wrong there, and BentoML's endpoint
wrapper answers any exception but its own (BentoMLException, pydantic's ValidationError)
with a 500. Four caller mistakes raised other exceptions in that parsing:

- a body that Starlette cannot read as a form (`multipart/form-data` without a boundary,
  too many parts, ...): Starlette refuses it with its own HTTPException(400);
- a text field where an endpoint takes files (`images=abc` for /classify_image): BentoML
  takes the text for a URL and downloads it (httpx fails on "abc"; a real URL would make
  the server fetch it); a JSON body there fails as "Invalid file type" (now: 415, send a form);
- a form field nested deeper than the JSON parser's recursion limit: RecursionError;
- a form field with a lone surrogate (`"\\ud800"`, which Python's JSON parser decodes and a
  JSON body's parser refuses): text that cannot be encoded, UnicodeEncodeError wherever it is
  written out (abc2midi's input file, the tokenizer).

`api` is `bentoml.api` with an input spec (BentoML's `IODescriptor`, generated from the
endpoint's signature as BentoML would) whose parsing refuses these with BentoMLException,
which BentoML answers with the status and the message.
"""

from __future__ import annotations

from http import HTTPStatus

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

MULTIPART = "multipart/form-data"


def refusal(message: str, status: int = 400) -> BentoMLException:
    return BentoMLException(message, error_code=HTTPStatus(status))


def media_type(request: Request) -> str:
    """The request's media type as BentoML picks its parser by it (JSON when none is given)."""
    return request.headers.get("content-type", "application/json").split(";")[0].strip()


async def check_uploads(request: Request, file_fields: list[str]) -> None:
    """An endpoint that takes files takes a multipart form, each of those fields a file part."""
    if media_type(request) != MULTIPART:
        raise refusal(f"{request.url.path} takes {MULTIPART} with the files in "
                      f"{', '.join(f'`{f}`' for f in file_fields)}; the request's content type is "
                      f"{media_type(request)}", 415)
    form = await request.form()  # Starlette keeps it: BentoML's parser reads the same form
    for name in file_fields:
        for value in form.getlist(name):
            if not isinstance(value, UploadFile):
                raise refusal(f"`{name}` must be a file upload (a form part with a filename), "
                              f"got a text field: {str(value)[:40]!r}")


class CheckedInput:
    """Mixin of an endpoint's input spec: parsing errors that are the caller's become 4xx.
    (`multipart_fields`, the fields that take files, is BentoML's; declared here it would be a field.)"""

    @classmethod
    async def from_http_request(cls, request: Request, serde):
        try:
            if cls.multipart_fields:
                await check_uploads(request, cls.multipart_fields)
            parsed = await super().from_http_request(request, serde)
        except HTTPException as exc:  # Starlette could not read the body as the form it says it is
            raise refusal(f"cannot read the {media_type(request)} body: {exc.detail}", exc.status_code) from None
        except RecursionError:
            raise refusal("a form field nests too deeply to parse") from None
        except UnicodeDecodeError as exc:
            raise refusal(f"a form field is not UTF-8 text: {exc}") from None
        if media_type(request) == MULTIPART:
            for name in type(parsed).model_fields:
                if not encodable(getattr(parsed, name)):
                    raise refusal(f"`{name}` holds a lone surrogate (\\ud800-\\udfff), which is not text")
        return parsed


def encodable(value) -> bool:
    """Every string in `value` (nested lists and dicts walked, any depth) can be encoded as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return True


def api(endpoint):
    """`@bentoml.api`, with the endpoint's input spec parsed by `CheckedInput`."""
    spec = bentoml.IODescriptor.from_input(endpoint, skip_self=True)
    checked = type(spec)(spec.__name__, (CheckedInput, spec), {"__module__": spec.__module__, "__doc__": spec.__doc__})
    return bentoml.api(input_spec=checked)(endpoint)
