"""Several base models behind one endpoint: an ingress that routes each request by its ``model``.

The shape is ``ray.serve.llm``'s ``build_openai_app``: one deployment per base model (each
``OpenAIServer``, with its own engine, adapters and scaling) behind one ingress deployment that
holds a handle to each. ``ray.serve.llm``'s ingress parses requests into its own protocol
objects and calls typed methods on its servers; ours forwards the HTTP request whole
(``forward``), so that each base answers with exactly the app it serves alone (vLLM's request
models, error bodies, streaming, our limits and name checks): one serve path, not two.

Routing: the base's served name goes to that base; a registry adapter to the base it was trained
on (the registry records it); an adapter of a base this endpoint does not serve is a 404 that
says so; any other name goes to the first base, whose vLLM layer answers it (an unknown model is
404, a name that could reach outside the registry 400, and a request naming no model is the first
base's, as vLLM serves its one model). ``/v1/models`` lists every base with its
adapters; ``/health`` is healthy when every base is.
"""

# No `from __future__ import annotations`: FastAPI reads route parameter types at runtime.
import asyncio
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from ec2er.serving.config import ServeConfig

# Headers of a forwarded reply the ingress's own server sets again for its client.
HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"date", b"server"}


async def call_asgi(app: Any, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> AsyncIterator[dict[str, Any]]:
    """Run one HTTP request through an ASGI app in this process and yield the app's messages
    (``http.response.start``, then each ``http.response.body``) as it sends them. httpx's
    ``ASGITransport`` would do the call but buffers the whole response, which would turn a
    stream into one late reply; this keeps it streaming. Closing the generator early (the
    client went away) tells the app its client disconnected and cancels it, as a server would."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 0), "server": None}
    messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await messages.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await messages.put(None)

    task = asyncio.create_task(run())
    try:
        while (message := await messages.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                break
        await task  # the app's own exception, if it raised after its reply
    finally:
        if not task.done():
            disconnected.set()
            task.cancel()


class Route:
    """Which base answers a model name: a base's served name, or a registry adapter's base."""

    def __init__(self, config: ServeConfig):
        from ec2er.adapters import AdapterRegistry
        from ec2er.models import model_location
        from ec2er.serving.resolver import servable_adapters

        self.bases = [b.served_name for b in config.bases()]
        self.adapters = {b.served_name: servable_adapters(config.registry, b.model) for b in config.bases()}
        self.registry = AdapterRegistry(config.registry)
        self.locations = {model_location(b.model) for b in config.bases()}

    def base_of(self, model: Any) -> str | JSONResponse:
        """The served name of the base that answers ``model``, or a 404 for an adapter whose base
        is not served here. Reads the registry (call it off the event loop)."""
        from ec2er.adapters import is_valid_name
        from ec2er.models import model_location
        from ec2er.serving.app import error_response

        if isinstance(model, str) and model in self.bases:
            return model
        if not isinstance(model, str) or not is_valid_name(model):
            return self.bases[0]  # its app answers a missing or malformed name (400)
        for base, adapters in self.adapters.items():
            if adapters.folder(model) is not None:
                return base
        entry = next((e for e in self.registry.entries() if e.name == model), None)
        if entry is not None and model_location(entry.base_model) not in self.locations:
            return error_response(HTTPStatus.NOT_FOUND, f"adapter {model} was trained on {entry.base_model}, which "
                                                        f"this endpoint does not serve (it serves "
                                                        f"{', '.join(self.bases)})", param="model")
        return self.bases[0]  # vLLM's own 404 for a model it does not know


@serve.deployment(name="OpenAIRouter")
@serve.ingress()  # the ASGI app is built in the replica, with the handles (__serve_build_asgi_app__)
class OpenAIRouter:
    def __init__(self, config: dict[str, Any], servers: dict[str, Any]):
        self.config = ServeConfig.model_validate(config)
        self.api_key = self.config.resolve_api_key()
        self.servers = servers  # served name -> DeploymentHandle of that base's OpenAIServer
        self.retry_after = {b.served_name: b.scaling.retry_after_s for b in self.config.bases()}
        self.route = Route(self.config)

    async def __serve_build_asgi_app__(self) -> Any:
        return build_router_app(self)

    async def forward(self, base: str, request: Request, body: bytes) -> Response:
        """The request, answered by ``base``'s deployment, streamed back as it answers."""
        from ray.serve.exceptions import BackPressureError

        from ec2er.serving.app import error_response

        replies = self.servers[base].options(stream=True).forward.remote(
            request.method, request.url.path, request.url.query.encode(), request.headers.raw, body)
        try:
            start = await replies.__anext__()
        except BackPressureError:  # that base's queue is full: what Serve's proxy answers alone
            response = error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"{base}: too many requests queued; retry later")
            response.headers["Retry-After"] = f"{self.retry_after[base]:g}"
            return response
        headers = [(k, v) for k, v in start["headers"] if k.lower() not in HOP_BY_HOP]

        async def chunks() -> AsyncIterator[bytes]:
            async for message in replies:
                yield message.get("body", b"")

        response = StreamingResponse(chunks(), status_code=start["status"])  # no media type: the base's
        response.raw_headers += headers
        return response

    async def ask_all(self, request: Request) -> dict[str, tuple[int, bytes]]:
        """Each base's whole reply (status, body) to a small request without a body (its headers,
        the key included, as the client sent them)."""
        async def one(base: str) -> tuple[int, bytes]:
            status, body = 502, b""
            async for message in self.servers[base].options(stream=True).forward.remote(
                    request.method, request.url.path, b"", request.headers.raw, b""):
                if message["type"] == "http.response.start":
                    status = message["status"]
                else:
                    body += message.get("body", b"")
            return status, body

        replies = await asyncio.gather(*(one(b) for b in self.route.bases))
        return dict(zip(self.route.bases, replies, strict=True))


def build_router_app(router: OpenAIRouter) -> FastAPI:
    from ec2er.serving.app import BodySizeLimit, OpenAIAuthenticationMiddleware

    app = FastAPI(title="ec2er", docs_url=None, redoc_url=None)
    if router.api_key:
        app.add_middleware(OpenAIAuthenticationMiddleware, tokens=[router.api_key])
    app.add_middleware(BodySizeLimit, max_bytes=router.config.limits.max_body_bytes)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        cards: list[Any] = []
        for base, (status, body) in (await router.ask_all(request)).items():
            if status != HTTPStatus.OK:
                return Response(body, status_code=status, media_type="application/json")
            cards += json.loads(body)["data"]
        return JSONResponse({"object": "list", "data": cards})

    @app.get("/health")
    async def health(request: Request) -> Response:
        replies = await router.ask_all(request)
        sick = [base for base, (status, _) in replies.items() if status != HTTPStatus.OK]
        return Response(status_code=HTTPStatus.SERVICE_UNAVAILABLE if sick else HTTPStatus.OK)

    @app.post("/v1/chat/completions")
    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await request.body()
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError):  # not a JSON object: the first base's app says why
            model = None
        base = await asyncio.to_thread(router.route.base_of, model)
        if isinstance(base, Response):
            return base
        return await router.forward(base, request, body)

    return app
