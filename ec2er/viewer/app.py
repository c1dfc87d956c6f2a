"""The viewer's web app: a JSON API over a run folder and one static page that renders it.

Private by construction: it only reads; with a token every request must carry it (an
``Authorization: Bearer`` header, or the cookie a first ``?token=`` visit sets); with
``allowed_hosts`` (the CLI sets it when bound to a loopback address) requests naming another host
are refused, so a web page elsewhere cannot reach it through DNS rebinding; a strict Content
Security Policy lets the page run only its own script, and the page puts all model text into the
document as text, never as markup. Bad requests get 4xx answers and the server keeps serving.
"""

from __future__ import annotations

import hmac
import html
import logging
import posixpath
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

import pyarrow as pa
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.staticfiles import StaticFiles

from ec2er.errors import DataError
from ec2er.viewer import stages as views
from ec2er.viewer.folder import SERVED_TYPES, PathRefused, RunFolder, StageFolder
from ec2er.viewer.jsonl import JsonlFiles
from ec2er.viewer.queries import DialogueFilter, Results

log = logging.getLogger(__name__)

TOKEN_ENV = "EC2ER_VIEW_TOKEN"
TOKEN_COOKIE = "ec2er_view_token"
PAGE_LIMIT = 200
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC = files("ec2er.viewer") / "static"



# each parameter its own Query: FastAPI binds a Query object to the name it is first used for
def _offset() -> Any:
    return Query(0, ge=0, le=1_000_000_000)


def _limit() -> Any:
    return Query(50, ge=1, le=PAGE_LIMIT)


def _text() -> Any:
    return Query(None, max_length=200)


def build_app(run_folder: str, token: str | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The viewer of one run folder (a local path or a pyarrow URI). ``token``: required of every
    request when given. ``allowed_hosts``: Host headers accepted (None: any)."""
    folder = RunFolder(run_folder)
    jsonl = JsonlFiles(folder.fs)
    results: dict[str, Results] = {}
    benchmarks, predictions = views.Benchmarks(), views.Predictions()
    app = FastAPI(title="ec2er viewer", docs_url=None, redoc_url=None, openapi_url=None)

    def results_of(stage: StageFolder) -> Results:
        if stage.key not in results:
            results[stage.key] = Results(folder, stage.key)
        return results[stage.key]

    def stage_of(kind: str, key: str | None) -> StageFolder:
        stage = folder.first(kind) if key is None else folder.stage(key, kind)
        if stage is None:
            raise HTTPException(404, f"this run has no {kind} stage")
        return stage

    @app.exception_handler(PathRefused)
    async def refused(request: Request, exc: PathRefused) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.exception_handler(DataError)
    async def unreadable(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(pa.ArrowException)
    @app.exception_handler(OSError)
    async def broken(request: Request, exc: Exception) -> JSONResponse:
        # a damaged file of the run: one line naming it; the server keeps serving the rest
        log.warning("viewer: %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"a file of the run could not be read: {str(exc).splitlines()[0]}"},
                            status_code=500)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if token is not None:
            given = _token_of(request)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                return _headers(JSONResponse({"detail": "a token is required (?token=... once, or "
                                                        "Authorization: Bearer ...)"}, status_code=401,
                                             headers={"WWW-Authenticate": "Bearer"}))
            if "token" in request.query_params:  # the first visit: keep it in a cookie, out of the URL
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(_own_path(request) + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict",
                                    path=(request.scope.get("root_path") or "") + "/")
                return _headers(response)
        return _headers(await call_next(request))

    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        base = html.escape((request.scope.get("root_path") or "").rstrip("/") + "/", quote=True)
        page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{base}}", base)
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # none: the page loads nothing it does not ship

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/run")
    def run() -> dict[str, Any]:
        return views.overview(folder, {s.key: results_of(s) for s in folder.stages() if s.kind == "generate"})

    @app.get("/api/progress")
    def progress(stage: str | None = _text()) -> dict[str, Any]:
        s = stage_of("generate", stage)
        return views.progress(folder, s, results_of(s))

    def dialogue_filter(status: str | None, theme: str | None, stop: str | None, eu: str | None,
                        ea: str | None, error: str | None, q: str | None) -> DialogueFilter:
        return DialogueFilter(status=status, theme=theme, stop=stop, eu=eu, ea=ea, error=error, q=q)

    @app.get("/api/dialogues")
    def dialogues(stage: str | None = _text(), offset: int = _offset(), limit: int = _limit(), newest: bool = False,
                  status: str | None = _text(), theme: str | None = _text(), stop: str | None = _text(),
                  eu: str | None = _text(), ea: str | None = _text(), error: str | None = _text(),
                  q: str | None = _text()) -> dict[str, Any]:
        s = stage_of("generate", stage)
        flt = dialogue_filter(status, theme, stop, eu, ea, error, q)
        return results_of(s).page(flt, offset, limit, newest)

    @app.get("/api/dialogues/count")
    def dialogue_count(stage: str | None = _text(), status: str | None = _text(), theme: str | None = _text(),
                       stop: str | None = _text(), eu: str | None = _text(), ea: str | None = _text(),
                       error: str | None = _text(), q: str | None = _text()) -> dict[str, Any]:
        s = stage_of("generate", stage)
        return results_of(s).count(dialogue_filter(status, theme, stop, eu, ea, error, q))

    @app.get("/api/dialogues/facets")
    def facets(stage: str | None = _text()) -> dict[str, Any]:
        return results_of(stage_of("generate", stage)).facets()

    @app.get("/api/dialogue")
    def dialogue(id: str = Query(..., min_length=1, max_length=200), stage: str | None = _text()) -> dict[str, Any]:
        found = results_of(stage_of("generate", stage)).dialogue(id)
        if found is None:
            raise HTTPException(404, f"no dialogue {id!r} in this run")
        return found

    @app.get("/api/curation")
    def curation(stage: str | None = _text(), decision: str | None = _text(), reason: str | None = _text(),
                 task: str | None = _text(), q: str | None = _text(), offset: int = _offset(),
                 limit: int = _limit()) -> dict[str, Any]:
        s = stage_of("curate", stage)
        return {"key": s.key, **views.curation_overview(folder, s),
                **views.curation_page(folder, jsonl, s, decision, reason, task, q, offset, limit)}

    @app.get("/api/curation/benchmark")
    def benchmark_item(ref: str = Query(..., max_length=200), stage: str | None = _text()) -> dict[str, Any]:
        found = benchmarks.item(folder, stage_of("curate", stage), ref)
        if found is None:
            raise HTTPException(404, f"no benchmark item {ref!r}")
        return found

    @app.get("/api/training")
    def training(stage: str | None = _text()) -> dict[str, Any]:
        return views.training_view(folder, stage_of("train", stage))

    @app.get("/api/evaluation")
    def evaluation(stage: str | None = _text()) -> dict[str, Any]:
        return views.evaluation_view(folder, stage_of("evaluate", stage), predictions)

    @app.get("/api/predictions")
    def prediction_page(stage: str | None = _text(), protocol: str | None = _text(), language: str | None = _text(),
                        task: str | None = _text(), model: str | None = _text(), disagree: bool = False,
                        unparsed: bool = False, wrong: bool = False, q: str | None = _text(),
                        offset: int = _offset(), limit: int = _limit()) -> dict[str, Any]:
        groups = predictions.groups(folder, stage_of("evaluate", stage))
        return views.predictions_page(groups, protocol, language, task, model, disagree, unparsed, wrong, q,
                                      offset, limit)

    @app.get("/api/file")
    def file(path: str = Query(..., max_length=1024)) -> Response:
        full = folder.requested(path)
        media = SERVED_TYPES[posixpath.splitext(full)[1].lower()]
        return Response(folder.read_bytes(full), media_type=media)

    return app


def _token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")


def _own_path(request: Request) -> str:
    """The request's path as a redirect target that stays on this server: a path beginning with
    ``//`` or ``/\\`` is another host to a browser (``//evil.example/`` leaves the site), so its
    leading slashes collapse to one. The path is the request's own, still percent-encoded: only
    what is left unencoded (a raw backslash, say) is encoded."""
    return "/" + quote(request.url.path.lstrip("/\\"), safe="/%!$&'()*+,;=:@-._~")


def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
