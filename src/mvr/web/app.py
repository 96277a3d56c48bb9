"""The web service: a REST API over one catalog, and the dashboard page that uses it (``mvr serve``).

Feature extraction takes seconds, so a query is a job: ``POST /api/queries`` answers at once with its id, a bounded
pool of worker threads runs it (:mod:`mvr.web.jobs`), and the client polls ``GET /api/queries/{id}``. Past the
queue limit the service answers 503 rather than piling up work. A mix (``POST /api/mix``) and a path
(``POST /api/path``) read only the stored vectors (:mod:`mvr.retrieval.discovery`), so they answer at once.

The network edge is guarded because a URL query makes the server fetch what the client names: only http(s), no
loopback, private or link-local address unless the operator allows them (:mod:`mvr.ingest.policy`), size and time
limits on downloads and uploads, and media served only from inside the catalog folder. Every error is JSON
``{"detail": "<one line>"}`` naming the item and the reason. By default the service adds no videos: ``mvr index``
builds the catalog, offline, and the service writes only a search index under ``CATALOG/index/`` when none is saved
yet, and a map's layout under ``CATALOG/map/`` when the first ``GET /api/map`` of the catalog's state computes it.
Started with ``allow_indexing`` (``mvr serve --allow-indexing``), it also adds an uploaded file or a URL
(``POST /api/videos``, followed at ``GET /api/index-jobs/{id}``) with the library's indexing, under the same
limits, address policy and queue as a query, one video at a time on one writer thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError

from mvr import __version__, media
from mvr.errors import MvrError, UnknownVideoError, UsageError
from mvr.evaluation.report import RESULTS_FILE
from mvr.index.base import METRICS
from mvr.ingest.policy import AddressRefused, BadURL, check_url
from mvr.retrieval.collection_map import collection_map
from mvr.retrieval.discovery import Walk, build_mix, build_path
from mvr.retrieval.query import fusion_for, spaces_of
from mvr.retrieval.search import SearcherCache
from mvr.retrieval.targets import FUSED, default_metrics, search_targets
from mvr.retrieval.tuning import parse_weights
from mvr.store import Catalog, Video
from mvr.store.catalog import sweep_leftovers
from mvr.web.jobs import IndexJob, QueryJob, QueryRunner, QueueSlot, ThreadCatalogs
from mvr.web.models import (
    MAX_K,
    MAX_VIDEO_ID,
    ErrorOut,
    EvaluationOut,
    IndexAccepted,
    IndexOptions,
    IndexRequest,
    IndexStatus,
    KeyframeMatchOut,
    MapOut,
    MixOut,
    MixRequest,
    Modality,
    PathOut,
    PathRequest,
    PathStepOut,
    QueryAccepted,
    QueryOptions,
    QueryRequest,
    QueryStatus,
    SearchOptions,
    ServiceInfo,
    StepOut,
    VideoOut,
    VideoPage,
)
from mvr.web.security import BrowserGuard
from mvr.web.settings import ServiceSettings
from mvr.web.uploads import megabytes, receive_upload

STATIC_DIR = Path(__file__).with_name("static")
Asked = TypeVar("Asked", bound=BaseModel)
Made = TypeVar("Made", QueryJob, IndexJob)
# Room for the multipart boundaries and the small form fields around an upload's bytes.
FORM_OVERHEAD_BYTES = 64 * 1024
# A JSON query is a few fields; anything much larger is not one.
MAX_JSON_BYTES = 64 * 1024


def _one_line(error: ValidationError | RequestValidationError) -> str:
    """The first validation problem as ``field: reason``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
    return f"{where or 'request'}: {first.get('msg', 'invalid')}"


def _upload_schema(options: type[BaseModel] = QueryOptions) -> dict:
    """The multipart form of ``POST /api/queries`` (or, with ``options=IndexOptions``, ``POST /api/videos``), for
    the OpenAPI document."""
    schema = options.model_json_schema()
    schema["properties"] = {"file": {"type": "string", "format": "binary", "description": "a video or audio file"},
                            **schema["properties"]}
    schema["required"] = ["file"]
    return schema


_QUERY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": QueryRequest.model_json_schema()},
            "multipart/form-data": {"schema": _upload_schema()},
        },
    }
}
_INDEX_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": IndexRequest.model_json_schema()},
            "multipart/form-data": {"schema": _upload_schema(IndexOptions)},
        },
    }
}
_ERRORS = {code: {"model": ErrorOut} for code in (400, 403, 404, 411, 413, 415, 422, 503)}


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the web application over ``settings.catalog``.

    Raises
    ------
    CatalogError
        When the folder holds no catalog.
    """
    Catalog.open(settings.catalog, create=False).close()  # fail at start-up, not on the first request
    sweep_leftovers(settings.catalog)  # uploads and downloads a killed server left
    catalogs = ThreadCatalogs(Path(settings.catalog))
    searchers = SearcherCache()
    runner = QueryRunner(settings, catalogs, searchers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.shutdown()
        catalogs.close()

    # FastAPIOffline serves the Swagger UI and ReDoc assets from its package: /docs works without internet.
    app = FastAPIOffline(
        title="mvr", version=__version__, lifespan=lifespan,
        description="Content-based music video retrieval: recommend catalog videos similar to a video by its"
                    " sound, its pictures, or both.",
    )

    app.add_middleware(BrowserGuard, allowed_hosts=settings.allowed_hosts)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.get("/api/info", response_model=ServiceInfo, tags=["service"])
    def info() -> ServiceInfo:
        """The catalog's size and labels, and the search choices."""
        catalog = catalogs.get()
        return ServiceInfo(
            version=__version__, catalog=catalog.root.name, videos=len(catalog), labels=catalog.labels(),
            modalities=catalog_targets(catalog), metrics=list(METRICS),
            default_metrics=default_metrics(), max_k=MAX_K, max_upload_bytes=settings.max_upload_bytes,
            allow_indexing=settings.allow_indexing,
        )

    @app.post("/api/queries", status_code=202, response_model=QueryAccepted, responses=_ERRORS,
              openapi_extra=_QUERY_BODY, tags=["queries"])
    async def create_query(request: Request) -> QueryAccepted:
        """Start a query: JSON ``{"url" or "video_id", "modality", "metric", "k"}``, or a multipart upload
        (``file`` plus the same options as form fields). Follow it at ``GET /api/queries/{id}``."""
        job = await _queued(request, _upload_job if _is_upload(request, "request") else _json_job, runner.submit)
        return QueryAccepted(id=job.id, status="queued", poll=f"/api/queries/{job.id}")

    async def _queued(request: Request, make_job: Callable[[Request], Awaitable[Made]],
                      submit: Callable[[Made, QueueSlot], None]) -> Made:
        """The request's job, made and submitted in a place of the queue."""
        # The place in the queue is taken before the body is read: a burst of uploads past the queue limit is
        # refused at once instead of being received, stored and probed first.
        with runner.reservation() as slot:
            job = await make_job(request)
            submit(job, slot)
        return job

    async def _json_job(request: Request) -> QueryJob:
        _check_length(request, MAX_JSON_BYTES, "query")
        try:
            asked = QueryRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, _one_line(exc)) from None
        search = _search_options(asked)
        if asked.url is not None:
            url = await _checked_url(asked.url)
            return QueryJob(source=url, url=url, cache_key=f"url:{url}", **search)
        video = await run_in_threadpool(_video_or_404, asked.video_id)
        return QueryJob(source=video.source, path=_media_path(video), cache_key=f"sha256:{video.content_hash}",
                        **search)

    async def _upload_job(request: Request) -> QueryJob:
        # The server refuses a body longer than its Content-Length, so checking the header bounds the upload
        # before any of it is stored.
        _check_length(request, settings.max_upload_bytes + FORM_OVERHEAD_BYTES, "upload")
        upload = await receive_upload(request, settings.catalog / "tmp", settings.max_upload_bytes)
        try:
            try:
                options = QueryOptions.model_validate(upload.fields)
            except ValidationError as exc:
                raise HTTPException(422, _one_line(exc)) from None
            search = _search_options(options)
        except HTTPException:
            media.remove_temp_folder(upload.path.parent)
            raise
        return QueryJob(source=upload.filename, title=upload.path.stem, path=upload.path,
                        upload_dir=upload.path.parent, cache_key=f"sha256:{upload.content_hash}", **search)

    async def _checked_url(url: str) -> str:
        """The URL, stripped, once the address policy allows it (400 for a URL mvr cannot fetch, 403 refused)."""
        url = url.strip()
        try:
            await run_in_threadpool(check_url, url, settings.policy)
        except BadURL as exc:
            raise HTTPException(400, str(exc)) from None
        except AddressRefused as exc:
            raise HTTPException(403, str(exc)) from None
        return url

    @app.get("/api/queries/{query_id}", response_model=QueryStatus, responses=_ERRORS, tags=["queries"])
    def query_status(query_id: str) -> QueryStatus:
        """A query's status and progress; its recommendations once done, its error once failed."""
        found = runner.status(query_id)
        if found is None:
            raise HTTPException(404, f"query {query_id}: unknown (never made, or forgotten since)")
        return found

    @app.get("/api/videos", response_model=VideoPage, responses=_ERRORS, tags=["catalog"])
    def list_videos(
        label: str | None = Query(None, description="only videos with this label"),
        title: str | None = Query(None, max_length=200,
                                  description="only videos whose title contains this text (any case)"),
        offset: int = Query(0, ge=0),
        limit: int = Query(48, ge=1, le=500),
    ) -> VideoPage:
        """The catalog's videos in id order, a page at a time."""
        videos = catalogs.get().videos(label=label)
        title = title.strip() if title else None
        if title:
            videos = [video for video in videos if title.casefold() in video.title.casefold()]
        return VideoPage(total=len(videos), offset=offset, limit=limit, label=label, title=title or None,
                         items=[_video_out(video) for video in videos[offset:offset + limit]])

    @app.get("/api/videos/{video_id}", response_model=VideoOut, responses=_ERRORS, tags=["catalog"])
    def get_video(video_id: Annotated[int, FastAPIPath(ge=1, le=MAX_VIDEO_ID)]) -> VideoOut:
        """One catalog video."""
        return _video_out(_video_or_404(video_id))

    @app.get("/api/videos/{video_id}/thumbnail", response_class=Response, responses=_ERRORS, tags=["catalog"])
    def thumbnail(video_id: Annotated[int, FastAPIPath(ge=1, le=MAX_VIDEO_ID)]) -> Response:
        """The video's thumbnail (JPEG)."""
        _video_or_404(video_id)
        jpeg = catalogs.get().thumbnail(video_id)
        if jpeg is None:
            raise HTTPException(404, f"video {video_id}: has no thumbnail (no picture stream)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/videos/{video_id}/media", response_class=FileResponse, responses=_ERRORS, tags=["catalog"])
    def media_file(video_id: Annotated[int, FastAPIPath(ge=1, le=MAX_VIDEO_ID)]) -> FileResponse:
        """The video's media file; answers HTTP range requests, so that a player can seek."""
        return FileResponse(_media_path(_video_or_404(video_id)))

    @app.get("/api/videos/{video_id}/keyframe-match/{other_id}", response_model=KeyframeMatchOut,
             responses=_ERRORS, tags=["catalog"])
    def keyframe_match(video_id: Annotated[int, FastAPIPath(ge=1, le=MAX_VIDEO_ID)],
                       other_id: Annotated[int, FastAPIPath(ge=1, le=MAX_VIDEO_ID)]) -> KeyframeMatchOut:
        """The keyframe of video ``other_id`` nearest to a keyframe of video ``video_id`` (the query), by their
        CNN embeddings, with both pictures: the pair a result card shows. Both videos' keyframes are decoded and
        embedded again (a second or two per pair), in a place of the query queue (503 when it is full)."""
        catalog = catalogs.get()
        query, result = _media_path(_video_or_404(video_id)), _media_path(_video_or_404(other_id))
        try:
            found = runner.match_keyframes(catalog, query, result)
        except MvrError as exc:
            raise HTTPException(422, " ".join(str(exc).splitlines())) from None
        return KeyframeMatchOut(query=video_id, result=other_id, **found.to_dict())

    # adding videos (--allow-indexing) ---------------------------------------------------------------------------

    @app.post("/api/videos", status_code=202, response_model=IndexAccepted, responses=_ERRORS,
              openapi_extra=_INDEX_BODY, tags=["catalog"])
    async def add_video(request: Request) -> IndexAccepted:
        """Add a video to the catalog, on a server started with ``--allow-indexing``: JSON ``{"url", "label",
        "title"}``, or a multipart upload (``file``, and ``label`` and ``title`` as form fields). Follow it at
        ``GET /api/index-jobs/{id}``; content the catalog already holds is reported, not added again."""
        if not settings.allow_indexing:
            raise HTTPException(403, "indexing: this server does not add videos (start it with mvr serve"
                                     " --allow-indexing to allow it)")
        job = await _queued(request, _upload_index_job if _is_upload(request, "video") else _json_index_job,
                            runner.submit_index)
        return IndexAccepted(id=job.id, status="queued", poll=f"/api/index-jobs/{job.id}")

    async def _json_index_job(request: Request) -> IndexJob:
        asked = await _read_json(request, IndexRequest, "video")
        url = await _checked_url(asked.url)
        return IndexJob(source=url, url=url, label=asked.label, title=asked.title)

    async def _upload_index_job(request: Request) -> IndexJob:
        _check_length(request, settings.max_upload_bytes + FORM_OVERHEAD_BYTES, "upload")
        upload = await receive_upload(request, settings.catalog / "tmp", settings.max_upload_bytes)
        try:
            options = IndexOptions.model_validate(upload.fields)
        except ValidationError as exc:
            media.remove_temp_folder(upload.path.parent)
            raise HTTPException(422, _one_line(exc)) from None
        return IndexJob(source=upload.filename, path=upload.path, upload_dir=upload.path.parent,
                        label=options.label, title=options.title)

    @app.get("/api/index-jobs/{job_id}", response_model=IndexStatus, responses=_ERRORS, tags=["catalog"])
    def index_job_status(job_id: str) -> IndexStatus:
        """Where adding a video stands: its stage and progress; the catalog's video once done, its error once
        failed."""
        found = runner.index_status(job_id)
        if found is None:
            raise HTTPException(404, f"index job {job_id}: unknown (never made, or forgotten since)")
        return found

    @app.get("/api/evaluation", response_model=EvaluationOut, responses=_ERRORS, tags=["catalog"])
    def evaluation() -> EvaluationOut:
        """The latest ``mvr evaluate`` results of this catalog."""
        path = settings.catalog / RESULTS_FILE
        if not path.is_file():
            raise HTTPException(404, f"evaluation: no results for this catalog yet (run: mvr evaluate --catalog"
                               f" {settings.catalog})")
        try:
            return EvaluationOut.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:  # bad JSON, or JSON of another shape (ValidationError is a ValueError)
            reason = _one_line(exc) if isinstance(exc, ValidationError) else str(exc)
            raise HTTPException(500, f"{RESULTS_FILE}: not the format mvr evaluate writes ({reason})") from None

    map_lock = threading.Lock()

    @app.get("/api/map", response_model=MapOut, responses=_ERRORS, tags=["catalog"])
    def collection_map_of(
        space: Modality = Query("audio", description="whose distances place the videos: a feature space, or fused"),
    ) -> MapOut:
        """The collection's videos placed in 2-D by one search target's distances (t-SNE), coloured by label on the
        page. The first request of a catalog's state computes the layout (seconds; a minute or more at 10k videos)
        and keeps it under ``CATALOG/map/``; the next ones read it."""
        catalog = catalogs.get()
        held = catalog_targets(catalog)
        if space not in held:
            raise HTTPException(404, f"map: this catalog has no {space} search (it has: {', '.join(held) or 'none'})")
        # One layout computed at a time: a second request for it waits, then reads what the first saved.
        with map_lock:
            try:
                found = collection_map(catalog, space, searchers=searchers)
            except MvrError as exc:
                raise HTTPException(422, " ".join(str(exc).splitlines())) from None
        return MapOut.model_validate(found.to_dict())

    @app.post("/api/mix", response_model=MixOut, responses=_ERRORS, openapi_extra=_json_body(MixRequest),
              tags=["discovery"])
    async def create_mix(request: Request) -> MixOut:
        """A play queue of ``n`` videos that flows from ``seeds`` and away from ``avoid`` (video ids), from the
        stored vectors: answered at once. The rule: ``mvr.retrieval.discovery``."""
        asked = await _read_json(request, MixRequest, "mix")
        found = await run_in_threadpool(_discover, build_mix, asked, seeds=asked.seeds, avoid=asked.avoid, n=asked.n)
        return MixOut(**found.to_dict() | {"seeds": [_video_out(video) for video in found.seeds],
                                           "avoid": [_video_out(video) for video in found.avoid],
                                           "items": _steps_out(found, StepOut)})

    @app.post("/api/path", response_model=PathOut, responses=_ERRORS, openapi_extra=_json_body(PathRequest),
              tags=["discovery"])
    async def create_path(request: Request) -> PathOut:
        """A path of ``n`` videos from ``start`` to ``end`` (video ids), each near the one before and no farther
        from the end, from the stored vectors: answered at once. The rule: ``mvr.retrieval.discovery``."""
        asked = await _read_json(request, PathRequest, "path")
        found = await run_in_threadpool(_discover, build_path, asked, start=asked.start, end=asked.end, n=asked.n)
        return PathOut(**found.to_dict() | {"start": _video_out(found.start), "end": _video_out(found.end),
                                            "items": _steps_out(found, PathStepOut)})

    def _discover(build: Callable[..., Walk], options: SearchOptions, **asked: object) -> Walk:
        """A mix or a path of this thread's catalog; 404 for an unknown video, 422 for what does not fit."""
        try:
            return build(catalogs.get(), modality=options.modality, metric=options.metric,
                         weights=_weights(options), searchers=searchers, **asked)
        except UnknownVideoError as exc:
            raise HTTPException(404, str(exc)) from None
        except MvrError as exc:
            raise HTTPException(422, " ".join(str(exc).splitlines())) from None

    def _video_or_404(video_id: int) -> Video:
        video = catalogs.get().get(video_id)
        if video is None:
            raise HTTPException(404, f"video {video_id}: not in the catalog")
        return video

    def _media_path(video: Video) -> Path:
        path = video.media_path.resolve()
        # The database names the file; a damaged or hand-edited row must not expose anything outside the catalog.
        if not path.is_relative_to(settings.catalog.resolve()):
            raise HTTPException(403, f"video {video.id}: its media path lies outside the catalog folder")
        if not path.is_file():
            raise HTTPException(404, f"video {video.id}: media file missing from the catalog")
        return path

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


def catalog_targets(catalog: Catalog) -> list[str]:
    """The search targets this catalog can answer: the spaces it holds vectors of, and fused when it holds all of
    the fused spaces."""
    held = set(catalog.spaces())
    return [target for target in search_targets() if set(spaces_of(target, fusion_for(target))) <= held]


def _search_options(options: QueryOptions) -> dict:
    """A job's search fields from the request's options; 422 for weights that are not valid or not for fused."""
    return {"modality": options.modality, "metric": options.metric or default_metrics()[options.modality],
            "metric_given": options.metric is not None, "k": options.k, "weights": _weights(options)}


def _weights(options: SearchOptions) -> dict[str, float] | None:
    """The fused search's weights the request names, if any; 422 for weights that are not valid or not for fused."""
    if not options.weights:
        return None
    if options.modality != FUSED:
        raise HTTPException(422, "weights: they weigh the spaces of a fused search (modality 'fused')")
    try:
        return parse_weights(options.weights)
    except UsageError as exc:
        raise HTTPException(422, str(exc)) from None


def _json_body(model: type[BaseModel]) -> dict:
    """The OpenAPI description of a route that reads ``model`` as its JSON body itself (:func:`_read_json`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def _read_json(request: Request, model: type[Asked], item: str) -> Asked:
    """The request's JSON body as ``model``, read only when it is JSON and not too long (415, 411, 413, 422)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise HTTPException(415, f"{item}: send JSON, not '{content_type or 'nothing'}'")
    _check_length(request, MAX_JSON_BYTES, item)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, _one_line(exc)) from None


def _steps_out(found: Walk, model: type[StepOut]) -> list[StepOut]:
    """A walk's steps with each video's addresses."""
    return [model(**step.to_dict() | {"video": _video_out(step.video)}) for step in found.items]


def _is_upload(request: Request, item: str) -> bool:
    """Whether the request is a multipart upload (else it is JSON); 415 for any other body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return True
    if content_type.startswith("application/json"):
        return False
    raise HTTPException(415, f"{item}: send JSON or a multipart/form-data upload, not '{content_type or 'nothing'}'")


def _check_length(request: Request, limit: int, item: str) -> None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, f"{item}: send a Content-Length header")
    if int(length) > limit:
        raise HTTPException(413, f"{item}: {megabytes(int(length))} is over the limit of {megabytes(limit)}")


def _video_out(video: Video) -> VideoOut:
    return VideoOut.of(video)


def serve(settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
