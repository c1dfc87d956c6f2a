"""The HTTP face of a replica: vLLM's own route handlers, error handlers and health route, with
two things of ours in front: adapter names are checked before vLLM sees them, and ``/v1/models``
lists every registry adapter, not only the loaded ones.

We mount these few routes rather than vLLM's ``build_app``, which would also mount the runtime
LoRA load/unload, tokenizer, profiling and scaling routes: a server that loads adapters by
registry name must not load arbitrary folders on request.
"""

# No `from __future__ import annotations` here: FastAPI reads the route parameters' types at
# runtime to parse request bodies into vLLM's request models.
import types
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from vllm.entrypoints.openai.chat_completion import api_router as chat_api
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion import api_router as completion_api
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve import create_error_response
from vllm.entrypoints.serve.exception_handling.register import init_exception_handler
from vllm.entrypoints.serve.instrumentator.health import router as health_router
from vllm.entrypoints.serve.middleware.authenticate import GUARDED_PREFIX, AuthenticationMiddleware
from vllm.entrypoints.serve.utils.api_utils import validate_json_request

from ec2er.adapters import check_name
from ec2er.serving.engine import ServedEngine
from ec2er.serving.resolver import model_cards


def build_app(served: ServedEngine, api_key: str | None) -> FastAPI:
    app = FastAPI(title="ec2er", docs_url=None, redoc_url=None)
    app.state._state.update(served.state._state)  # the handlers read vLLM's serving objects here
    # vLLM's engine-error handler flips state.server.should_exit (uvicorn's flag); Serve runs no
    # uvicorn of ours and restarts a replica whose engine died through check_health instead.
    app.state.server = types.SimpleNamespace()
    init_exception_handler(app)
    if api_key:
        app.add_middleware(OpenAIAuthenticationMiddleware, tokens=[api_key])
    app.include_router(health_router)
    served_name = served.state.openai_serving_models.base_model_paths[0].name

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        listing = await served.state.openai_serving_models.show_available_models()
        listing.data += model_cards(served.adapters, served_name, {card.id for card in listing.data})
        return JSONResponse(listing.model_dump())

    @app.post("/v1/chat/completions", dependencies=[Depends(validate_json_request)])
    async def chat_completions(request: ChatCompletionRequest, raw_request: Request) -> Response:
        return _bad_name(request.model, served_name) or await chat_api.create_chat_completion(request, raw_request)

    @app.post("/v1/completions", dependencies=[Depends(validate_json_request)])
    async def completions(request: CompletionRequest, raw_request: Request) -> Response:
        return _bad_name(request.model, served_name) or await completion_api.create_completion(request, raw_request)

    return app


def _bad_name(model: str | None, served_name: str) -> Any:
    """A 400 for a model name that could reach outside the registry (``../x``, ``/etc``,
    ``%2e%2e%2f``), answered before vLLM or its resolvers see it; None when the name is fine."""
    if model is None or model == served_name:
        return None
    try:
        check_name(model, "model")
    except ValueError as e:
        return _error(HTTPStatus.BAD_REQUEST, str(e), param="model")
    return None


def _error(status: HTTPStatus, message: str, param: str | None = None) -> JSONResponse:
    """vLLM's OpenAI error body: {"error": {"message", "type", "param", "code"}}."""
    err = create_error_response(message, err_type=status.phrase.replace(" ", "") + "Error",
                                status_code=status, param=param)
    return JSONResponse(err.model_dump(), status_code=status.value)


class OpenAIAuthenticationMiddleware(AuthenticationMiddleware):
    """vLLM's bearer-token middleware (same routes guarded, same constant-time comparison),
    answering with an OpenAI error object instead of its bare ``{"error": "Unauthorized"}``."""

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if (scope["type"] == "http" and scope.get("method") != "OPTIONS"
                and path.startswith(GUARDED_PREFIX) and not self.verify_token(Headers(scope=scope))):
            response = _error(HTTPStatus.UNAUTHORIZED, "invalid or missing API key (Authorization: Bearer <key>)")
            return response(scope, receive, send)
        return self.app(scope, receive, send)
