"""The HTTP face of a replica: vLLM's own route handlers, error handlers and health route, with
a few things of ours in front: adapter names are checked before vLLM sees them, the recipe's
request limits are enforced (``limits``), and ``/v1/models`` lists every registry adapter, not
only the loaded ones, without server paths.

We mount these few routes rather than vLLM's ``build_app``, which would also mount the runtime
LoRA load/unload, tokenizer, profiling and scaling routes: a server that loads adapters by
registry name must not load arbitrary folders on request.
"""

# No `from __future__ import annotations` here: FastAPI reads the route parameters' types at
# runtime to parse request bodies into vLLM's request models.
import asyncio
import types
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers

from ec2er.adapters import check_name
from ec2er.safety.rail import RailConfig, SafetyRail
from ec2er.serving.config import RequestLimits
from ec2er.serving.engine import ServedEngine
from ec2er.serving.resolver import adapter_cards
from ec2er.serving.vllm_api import vllm_symbol

# Module-level: FastAPI reads the request models from the route signatures.
ChatCompletionRequest = vllm_symbol("vllm.entrypoints.openai.chat_completion.protocol:ChatCompletionRequest")
CompletionRequest = vllm_symbol("vllm.entrypoints.openai.completion.protocol:CompletionRequest")
create_chat_completion = vllm_symbol("vllm.entrypoints.openai.chat_completion.api_router:create_chat_completion")
create_completion = vllm_symbol("vllm.entrypoints.openai.completion.api_router:create_completion")
create_error_response = vllm_symbol("vllm.entrypoints.serve:create_error_response")
validate_json_request = vllm_symbol("vllm.entrypoints.serve.utils.api_utils:validate_json_request")
AuthenticationMiddleware = vllm_symbol("vllm.entrypoints.serve.middleware.authenticate:AuthenticationMiddleware")
GUARDED_PREFIX = vllm_symbol("vllm.entrypoints.serve.middleware.authenticate:GUARDED_PREFIX")


def build_app(served: ServedEngine, api_key: str | None, limits: RequestLimits,
              safety: RailConfig | None = None) -> FastAPI:
    app = FastAPI(title="ec2er", docs_url=None, redoc_url=None)
    if safety is not None and safety.enabled:  # added first: runs after the key and size checks
        app.add_middleware(SafetyRail, config=safety)
    app.state._state.update(served.state._state)  # the handlers read vLLM's serving objects here
    # vLLM's engine-error handler flips state.server.should_exit (uvicorn's flag); Serve runs no
    # uvicorn of ours and restarts a replica whose engine died through check_health instead.
    app.state.server = types.SimpleNamespace()
    vllm_symbol("vllm.entrypoints.serve.exception_handling.register:init_exception_handler")(app)
    if api_key:
        app.add_middleware(OpenAIAuthenticationMiddleware, tokens=[api_key])
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)  # added last: runs first
    app.include_router(vllm_symbol("vllm.entrypoints.serve.instrumentator.health:router"))
    served_name = served.state.openai_serving_models.base_model_paths[0].name

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        listing = await served.state.openai_serving_models.show_available_models()
        # vLLM's cards carry the model's and each loaded adapter's folder as `root`: the base
        # model's card keeps its name only, and the adapters are the registry's (loaded or not)
        base = [card.model_copy(update={"root": card.id}) for card in listing.data if card.id == served_name]
        listing.data = base + await asyncio.to_thread(adapter_cards, served.adapters, served_name)
        return JSONResponse(listing.model_dump())

    @app.post("/v1/chat/completions", dependencies=[Depends(validate_json_request)])
    async def chat_completions(request: ChatCompletionRequest, raw_request: Request) -> Response:  # type: ignore[valid-type]
        return (_bad_name(request.model, served_name) or _over_limits(request, limits)
                or await create_chat_completion(request, raw_request))

    @app.post("/v1/completions", dependencies=[Depends(validate_json_request)])
    async def completions(request: CompletionRequest, raw_request: Request) -> Response:  # type: ignore[valid-type]
        return (_bad_name(request.model, served_name) or _over_limits(request, limits)
                or await create_completion(request, raw_request))

    return app


def _bad_name(model: str | None, served_name: str) -> Any:
    """A 400 for a model name that could reach outside the registry (``../x``, ``/etc``,
    ``%2e%2e%2f``), answered before vLLM or its resolvers see it; None when the name is fine."""
    if model is None or model == served_name:
        return None
    try:
        check_name(model, "model")
    except ValueError as e:
        return error_response(HTTPStatus.BAD_REQUEST, str(e), param="model")
    return None


def _over_limits(request: Any, limits: RequestLimits) -> Any:
    """A 400 naming the field when a request asks for more choices or tokens than the recipe
    allows; None when it is within them. (vLLM's own cap on ``n``, VLLM_MAX_N_SEQUENCES, is
    process-wide and its error tells the client to set a server variable; max_tokens it caps
    only silently.)"""
    asked = [("n", request.n, limits.max_n)]
    if limits.max_tokens is not None:
        asked += [(name, getattr(request, name, None), limits.max_tokens)
                  for name in ("max_tokens", "max_completion_tokens")]
    for name, value, limit in asked:
        if value is not None and value > limit:
            return error_response(HTTPStatus.BAD_REQUEST, f"{name} is {value}; this server allows at most {limit}", param=name)
    return None


def error_response(status: HTTPStatus, message: str, param: str | None = None) -> JSONResponse:
    """vLLM's OpenAI error body: {"error": {"message", "type", "param", "code"}}."""
    err = create_error_response(message, err_type=status.phrase.replace(" ", "") + "Error",
                                status_code=status, param=param)
    return JSONResponse(err.model_dump(), status_code=status.value)


class BodySizeLimit:
    """413 for a request body over ``max_bytes``: at once when its Content-Length says so, else as
    soon as the bytes received pass it (a chunked body). Neither Starlette, FastAPI, uvicorn, Ray
    Serve's proxy nor vLLM's app bounds a request body, so this small ASGI middleware does."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large()(scope, receive, send)
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # while FastAPI reads the body: its handlers answer it
                raise HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._message())
            return message

        return await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes (limits.max_body_bytes)"

    def _too_large(self) -> JSONResponse:
        return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._message())


class OpenAIAuthenticationMiddleware(AuthenticationMiddleware):  # type: ignore[misc, valid-type]
    """vLLM's bearer-token middleware (same routes guarded, same constant-time comparison),
    answering with an OpenAI error object instead of its bare ``{"error": "Unauthorized"}``."""

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if (scope["type"] == "http" and scope.get("method") != "OPTIONS"
                and path.startswith(GUARDED_PREFIX) and not self.verify_token(Headers(scope=scope))):
            response = error_response(HTTPStatus.UNAUTHORIZED, "invalid or missing API key (Authorization: Bearer <key>)")
            return response(scope, receive, send)
        return self.app(scope, receive, send)
