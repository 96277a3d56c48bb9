"""The web service: a REST API over one catalog, and the dashboard page that uses it (``mvr serve``).

Feature extraction takes seconds, so a query is a job: ``POST /api/queries`` answers at once with its id, a bounded
pool of worker threads runs it (the heavy work is numpy, torch and ffmpeg, which release the GIL), and the client
polls ``GET /api/queries/{id}``. Past the queue limit the service answers 503 rather than piling up work.

The network edge is guarded because a URL query makes the server fetch what the client names: only http(s), no
loopback, private or link-local address unless the operator allows them, size and time limits on downloads and
uploads, and media served only from inside the catalog folder. Every error is JSON ``{"detail": "<one line>"}``
naming the item and the reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import secrets
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import UploadFile

from mvr import __version__, media, search
from mvr.catalog import Catalog, Video
from mvr.collection import visual_settings
from mvr.errors import MediaError, MvrError
from mvr.evaluation import RESULTS_FILE

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
MAX_K = 50
MIB = 1 << 20
# Room for the multipart boundaries and the small form fields around an upload's bytes.
FORM_OVERHEAD_BYTES = 64 * 1024
# A JSON query is a few fields; anything much larger is not one.
MAX_JSON_BYTES = 64 * 1024

QueryState = Literal["queued", "running", "done", "failed"]
# Literal over the tuples keeps the accepted values and the OpenAPI enums in step with mvr.search.
Modality = Literal[search.SEARCH_MODALITIES]  # type: ignore[valid-type]
Metric = Literal[search.METRICS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class ServiceSettings:
    """How ``mvr serve`` runs.

    Attributes
    ----------
    catalog : Path
        The catalog folder to serve; it must exist.
    allow_private_urls : bool
        Let URL queries reach loopback, private and link-local addresses (tests, trusted networks).
    workers : int
        Queries extracted at the same time.
    queue_limit : int
        Queries that may wait for a worker; past ``workers + queue_limit`` pending ones the service answers 503.
    max_upload_bytes, max_download_bytes : int
        Largest uploaded file and largest download a URL query may fetch.
    download_timeout_s : float
        Network timeout of a download (yt-dlp's socket timeout).
    keep_queries : int
        Finished queries kept for polling; the oldest are forgotten first.
    feature_cache_size : int
        Query feature vectors kept, by URL or content hash and modality, so that a repeated query is instant.
    """

    catalog: Path
    allow_private_urls: bool = False
    workers: int = 2
    queue_limit: int = 8
    max_upload_bytes: int = 512 * MIB
    max_download_bytes: int = 512 * MIB
    download_timeout_s: float = 60.0
    keep_queries: int = 256
    feature_cache_size: int = 64


# API models ------------------------------------------------------------------------------------------------------


class QueryOptions(BaseModel):
    """How to search: the modality, the distance metric and how many results."""

    model_config = ConfigDict(extra="forbid")

    modality: Modality = Field("audio", description="audio, visual, or fused (the multimodal search)")
    metric: Metric | None = Field(None, description="distance metric; by default the modality's own")
    k: int = Field(5, ge=1, le=MAX_K, description="how many recommendations")


class QueryRequest(QueryOptions):
    """A query by URL, or by a video of the catalog; a file is sent as a multipart upload instead."""

    url: str | None = Field(None, description="http(s) URL: YouTube, any site yt-dlp knows, or a direct media link")
    video_id: int | None = Field(None, description="a catalog video whose neighbours to find")

    @model_validator(mode="after")
    def _one_source(self) -> "QueryRequest":
        if (self.url is None) == (self.video_id is None):
            raise ValueError("give either url or video_id")
        return self


class QueryAccepted(BaseModel):
    """A query taken into the queue."""

    id: str
    status: QueryState
    poll: str = Field(description="where to follow it")


class QueryDescription(BaseModel):
    """What was asked: the source as the client named it, its title, and its catalog id and label if indexed."""

    source: str
    title: str
    id: int | None
    label: str | None


class MatchOut(BaseModel):
    """One recommended video (the fields of ``mvr query --json``)."""

    rank: int
    id: int
    title: str
    label: str | None
    source: str
    distance: float


class RecommendationOut(BaseModel):
    """The answer to a query (the JSON of ``mvr query --json``)."""

    query: QueryDescription
    modality: Modality
    metric: Metric
    results: list[MatchOut]


class QueryStatus(BaseModel):
    """Where a query stands; ``result`` once done, ``error`` once failed."""

    id: str
    status: QueryState
    stage: str
    progress: float = Field(ge=0.0, le=1.0)
    source: str
    modality: Modality
    metric: Metric
    k: int
    cached: bool = Field(description="the query's features came from the cache")
    elapsed_s: float
    notes: list[str]
    result: RecommendationOut | None
    error: str | None


class VideoOut(BaseModel):
    """A catalog video, with the addresses of its thumbnail and media."""

    id: int
    title: str
    source: str
    label: str | None
    group: str | None
    duration: float
    content_hash: str
    modalities: list[str]
    thumbnail_url: str
    media_url: str


class VideoPage(BaseModel):
    """One page of the catalog's videos."""

    total: int
    offset: int
    limit: int
    label: str | None
    items: list[VideoOut]


class ServiceInfo(BaseModel):
    """What the page needs to know about this service and its catalog."""

    version: str
    catalog: str
    videos: int
    labels: list[str]
    modalities: list[str]
    metrics: list[str]
    default_metrics: dict[str, str]
    max_k: int
    max_upload_bytes: int


class EvaluationRow(BaseModel):
    """Precision of one method, modality and metric (see :mod:`mvr.evaluation`)."""

    model_config = ConfigDict(extra="allow")

    method: str = Field("mvr", description="mvr, or study: the study's own method measured on the same data")
    modality: str
    metric: str
    precision: float | None = Field(description="precision@k; null when degenerate")
    map: float | None = Field(None, description="mean average precision")
    queries: int | None = None
    degenerate: bool = Field(False, description="the metric tied every candidate of every query")
    labels: dict[str, float | None] | None = Field(None, description="precision@k of each label's queries")


class EvaluationOut(BaseModel):
    """The latest ``mvr evaluate`` results of the catalog (``DIR/evaluation.json``)."""

    model_config = ConfigDict(extra="allow")

    k: int
    protocol: str
    created: str | None = Field(None, description="when the evaluation ran (UTC, ISO 8601)")
    videos: int | None = Field(None, description="videos in the catalog at the time")
    results: list[EvaluationRow]


class ErrorOut(BaseModel):
    """Every error: one line naming the item and the reason."""

    detail: str


# the network edge -------------------------------------------------------------------------------------------------


def check_url(url: str, allow_private: bool = False) -> None:
    """Refuse a query URL that is not http(s), or whose host resolves to a non-public address.

    Every address the name resolves to is checked, since the downloader may use any of them.

    Raises
    ------
    HTTPException
        400 for a malformed URL or an unknown host, 403 for an address the service does not reach.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HTTPException(400, f"{url}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise HTTPException(400, f"{url}: only http and https URLs are accepted")
    if not parts.hostname:
        raise HTTPException(400, f"{url}: no host name in the URL")
    if allow_private:
        return
    try:
        found = socket.getaddrinfo(parts.hostname, port or parts.scheme, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HTTPException(400, f"{url}: host {parts.hostname} not found ({exc})") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])  # drop an IPv6 zone id
        kind = _address_kind(address)
        if kind:
            literal = parts.hostname == str(address)
            what = f"is a {kind} address" if literal else f"resolves to {address}, a {kind} address"
            raise HTTPException(
                403,
                f"{url}: {parts.hostname} {what}; this server only fetches public addresses (start it with"
                " --allow-private-urls to allow others)",
            )


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Name the kind of a non-public address, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for kind, matches in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                          ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
                          ("private", address.is_private)):
        if matches:
            return kind
    return None if address.is_global else "reserved"


def _safe_filename(name: str | None) -> str:
    """A client's file name made safe to use inside our own folder: no folders, no odd characters."""
    base = Path((name or "").replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\- ]+", "_", base).strip(" .")[:120]
    return cleaned or "upload"


def _one_line(error: ValidationError | RequestValidationError) -> str:
    """The first validation problem as ``field: reason``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
    return f"{where or 'request'}: {first.get('msg', 'invalid')}"


# catalogs and query jobs -------------------------------------------------------------------------------------------


class ThreadCatalogs:
    """One open :class:`Catalog` per thread.

    A catalog's SQLite connection and its cached vector matrices are not meant for concurrent use; a connection
    per thread needs no lock, and SQLite's WAL mode lets all of them read at once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Catalog] = []

    def get(self) -> Catalog:
        """This thread's catalog, opened on first use."""
        catalog = getattr(self._local, "catalog", None)
        if catalog is None:
            catalog = Catalog.open(self.root, create=False)
            self._local.catalog = catalog
            with self._lock:
                self._opened.append(catalog)
        return catalog

    def close(self) -> None:
        """Close every thread's catalog (at shutdown)."""
        with self._lock:
            for catalog in self._opened:
                catalog.close()
            self._opened.clear()


@dataclass(frozen=True)
class QueryFeatures:
    """A query's description and search vector, as cached between queries."""

    description: dict
    vector: np.ndarray
    notes: list[str]


@dataclass
class QueryJob:
    """One query and where it stands.

    ``source`` is what the client named (URL, uploaded file name, catalog video) and ``title`` the name to show
    for a video the catalog does not hold (None: the downloaded one's); ``path`` is the file to read when it is
    local (an upload, or a catalog video's media), and ``cache_key`` names its content.
    """

    source: str
    modality: str
    metric: str
    k: int
    cache_key: str
    title: str | None = None
    url: str | None = None
    path: Path | None = None
    upload_dir: Path | None = None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    status: str = "queued"
    stage: str = "waiting for a free worker"
    progress: float = 0.0
    cached: bool = False
    notes: list[str] = field(default_factory=list)
    result: dict | None = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def snapshot(self) -> QueryStatus:
        """The job as the API shows it."""
        return QueryStatus(
            id=self.id, status=self.status, stage=self.stage, progress=self.progress, source=self.source,
            modality=self.modality, metric=self.metric, k=self.k, cached=self.cached,
            elapsed_s=round((self.finished or time.monotonic()) - self.created, 3), notes=list(self.notes),
            result=self.result, error=self.error,
        )

    @property
    def pending(self) -> bool:
        """Still waiting or running."""
        return self.status in ("queued", "running")


class ServerBusy(HTTPException):
    """The queue is full."""

    def __init__(self, pending: int) -> None:
        super().__init__(503, f"server busy: {pending} queries are already waiting or running; try again shortly")


class QueryRunner:
    """Runs query jobs on a bounded pool of worker threads, and keeps their state for polling.

    Parameters
    ----------
    settings : ServiceSettings
        Pool size, queue limit, download limits, cache sizes.
    catalogs : ThreadCatalogs
        Where each worker gets its own catalog connection.
    """

    def __init__(self, settings: ServiceSettings, catalogs: ThreadCatalogs) -> None:
        self._settings = settings
        self._catalogs = catalogs
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mvr-query")
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, QueryJob] = OrderedDict()
        self._features: OrderedDict[tuple[str, str], QueryFeatures] = OrderedDict()

    def check_capacity(self) -> None:
        """Raise :class:`ServerBusy` when no further query may wait."""
        with self._lock:
            self._check_capacity()

    def _check_capacity(self) -> None:
        pending = sum(job.pending for job in self._jobs.values())
        if pending >= self._settings.workers + self._settings.queue_limit:
            raise ServerBusy(pending)

    def submit(self, job: QueryJob) -> None:
        """Queue ``job``.

        Raises
        ------
        ServerBusy
            When ``workers + queue_limit`` queries are already pending; the job's upload is then removed.
        """
        with self._lock:
            try:
                self._check_capacity()
            except ServerBusy:
                media.remove_temp_folder(job.upload_dir)
                raise
            self._jobs[job.id] = job
            self._forget_finished()
        self._pool.submit(self._run, job)

    def status(self, job_id: str) -> QueryStatus | None:
        """The job's state, or None for an unknown (or long forgotten) id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.snapshot() if job else None

    def shutdown(self) -> None:
        """Drop the queued jobs and wait for the running ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _forget_finished(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if not job.pending]
        for job_id in finished[: max(0, len(self._jobs) - self._settings.keep_queries)]:
            del self._jobs[job_id]

    def _update(self, job: QueryJob, **changes: object) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)

    def _run(self, job: QueryJob) -> None:
        try:
            catalog = self._catalogs.get()
            self._update(job, status="running", stage="preparing", progress=0.05)
            pool = search.candidates(catalog, job.modality)  # an empty catalog fails before any download
            features = self._query_features(catalog, job)
            self._update(job, stage="ranking", progress=0.9)
            # The cache is shared by every query of the same content: the names this client used are the job's.
            description = {**features.description, "source": job.source}
            if description["id"] is None and job.title:
                description["title"] = job.title
            found = search.recommend_vector(catalog, pool, description, features.vector, job.modality, job.metric,
                                            k=job.k, notes=features.notes)
            self._update(job, status="done", stage="done", progress=1.0, result=found.to_dict(),
                         notes=found.notes)
        except MediaError as exc:
            # The reason is about this query's source, whatever temporary path the extractor saw.
            self._update(job, status="failed", stage="failed", error=f"{job.source}: {exc.reason}")
        except MvrError as exc:
            self._update(job, status="failed", stage="failed", error=str(exc))
        except Exception as exc:  # a worker must always settle its job, or the client would poll forever
            logger.exception("query %s (%s) failed", job.id, job.source)
            self._update(job, status="failed", stage="failed",
                         error=f"{job.source}: internal error ({type(exc).__name__}: {exc})")
        finally:
            media.remove_temp_folder(job.upload_dir)
            self._update(job, finished=time.monotonic())

    def _query_features(self, catalog: Catalog, job: QueryJob) -> QueryFeatures:
        key = (job.cache_key, job.modality)
        with self._lock:
            cached = self._features.get(key)
            if cached is not None:
                self._features.move_to_end(key)
                job.cached = True
                return cached
        source, title, download_dir = str(job.path), None, None
        try:
            if job.url is not None:
                source = job.url
                if catalog.find_by_source(job.url) is None:  # a URL the catalog knows needs no download
                    self._update(job, stage="downloading", progress=0.1)
                    path, title, download_dir = media.download_to_temp(
                        job.url, catalog.root / "tmp", max_bytes=self._settings.max_download_bytes,
                        timeout_s=self._settings.download_timeout_s,
                    )
                    source = str(path)
            self._update(job, stage="extracting features", progress=0.3)
            description, vector, notes = search.query_vectors(
                catalog, source, job.modality, visual_settings(catalog, None))
        finally:
            media.remove_temp_folder(download_dir)
        if description["id"] is None and title:
            description = {**description, "title": title}
        features = QueryFeatures(description=description, vector=vector, notes=notes)
        with self._lock:
            self._features[key] = features
            while len(self._features) > self._settings.feature_cache_size:
                self._features.popitem(last=False)
        return features


def store_upload(handle: BinaryIO, filename: str, tmp_root: Path, max_bytes: int) -> tuple[Path, str]:
    """Copy an uploaded file into a fresh folder under ``tmp_root``, hashing it, and check it with ffprobe.

    Returns
    -------
    path : Path
        The stored file, named after the client's file name (its stem becomes the query's title).
    content_hash : str
        Its SHA-256, the key of the feature cache.

    Raises
    ------
    HTTPException
        413 when the file is over ``max_bytes``, 415 when ffprobe finds no audio or video in it.
    """
    tmp_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root))
    path = folder / filename
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as out:
            while block := handle.read(MIB):
                size += len(block)
                if size > max_bytes:
                    raise HTTPException(413, f"{filename}: larger than the upload limit of {_megabytes(max_bytes)}")
                digest.update(block)
                out.write(block)
        try:
            media.probe(path)
        except MediaError as exc:
            # ffprobe names our temporary path; the client knows the file by its own name.
            raise HTTPException(415, f"{filename}: {exc.reason.replace(str(path), filename)}") from None
    except BaseException:
        media.remove_temp_folder(folder)
        raise
    return path, digest.hexdigest()


def _megabytes(count: int) -> str:
    return f"{count / MIB:.0f} MB" if count >= MIB else f"{count} bytes"


# the application ---------------------------------------------------------------------------------------------------


def _upload_schema() -> dict:
    """The multipart form of ``POST /api/queries``, for the OpenAPI document."""
    schema = QueryOptions.model_json_schema()
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
_ERRORS = {code: {"model": ErrorOut} for code in (400, 403, 404, 411, 413, 415, 422, 503)}


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the web application over ``settings.catalog``.

    Raises
    ------
    CatalogError
        When the folder holds no catalog.
    """
    Catalog.open(settings.catalog, create=False).close()  # fail at start-up, not on the first request
    catalogs = ThreadCatalogs(Path(settings.catalog))
    runner = QueryRunner(settings, catalogs)

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

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.get("/api/info", response_model=ServiceInfo, tags=["service"])
    def info() -> ServiceInfo:
        """The catalog's size and labels, and the search choices."""
        catalog = catalogs.get()
        return ServiceInfo(
            version=__version__, catalog=catalog.root.name, videos=len(catalog), labels=catalog.labels(),
            modalities=list(search.SEARCH_MODALITIES), metrics=list(search.METRICS),
            default_metrics=search.DEFAULT_METRICS, max_k=MAX_K, max_upload_bytes=settings.max_upload_bytes,
        )

    @app.post("/api/queries", status_code=202, response_model=QueryAccepted, responses=_ERRORS,
              openapi_extra=_QUERY_BODY, tags=["queries"])
    async def create_query(request: Request) -> QueryAccepted:
        """Start a query: JSON ``{"url" or "video_id", "modality", "metric", "k"}``, or a multipart upload
        (``file`` plus the same options as form fields). Follow it at ``GET /api/queries/{id}``."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            job = await _upload_job(request)
        elif content_type.startswith("application/json"):
            job = await _json_job(request)
        else:
            raise HTTPException(
                415, f"request: send JSON or a multipart/form-data upload, not '{content_type or 'nothing'}'")
        runner.submit(job)
        return QueryAccepted(id=job.id, status="queued", poll=f"/api/queries/{job.id}")

    async def _json_job(request: Request) -> QueryJob:
        _check_length(request, MAX_JSON_BYTES, "query")
        try:
            asked = QueryRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, _one_line(exc)) from None
        metric = asked.metric or search.DEFAULT_METRICS[asked.modality]
        if asked.url is not None:
            url = asked.url.strip()
            await run_in_threadpool(check_url, url, settings.allow_private_urls)
            return QueryJob(source=url, url=url, cache_key=f"url:{url}", modality=asked.modality, metric=metric,
                            k=asked.k)
        video = await run_in_threadpool(_video_or_404, asked.video_id)
        return QueryJob(source=video.source, path=_media_path(video), cache_key=f"sha256:{video.content_hash}",
                        modality=asked.modality, metric=metric, k=asked.k)

    async def _upload_job(request: Request) -> QueryJob:
        # The server refuses a body longer than its Content-Length, so checking the header bounds the upload
        # before any of it is stored.
        _check_length(request, settings.max_upload_bytes + FORM_OVERHEAD_BYTES, "upload")
        runner.check_capacity()
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, "upload: no file in the form (send it in the field named 'file')")
            try:
                options = QueryOptions.model_validate({key: value for key, value in form.items() if key != "file"})
            except ValidationError as exc:
                raise HTTPException(422, _one_line(exc)) from None
            filename = _safe_filename(upload.filename)
            path, content_hash = await run_in_threadpool(
                store_upload, upload.file, filename, settings.catalog / "tmp", settings.max_upload_bytes)
        metric = options.metric or search.DEFAULT_METRICS[options.modality]
        return QueryJob(source=filename, title=path.stem, path=path, upload_dir=path.parent,
                        cache_key=f"sha256:{content_hash}", modality=options.modality, metric=metric, k=options.k)

    @app.get("/api/queries/{query_id}", response_model=QueryStatus, responses=_ERRORS, tags=["queries"])
    def query_status(query_id: str) -> QueryStatus:
        """A query's status and progress; its recommendations once done, its error once failed."""
        found = runner.status(query_id)
        if found is None:
            raise HTTPException(404, f"query {query_id}: unknown (never made, or forgotten since)")
        return found

    @app.get("/api/videos", response_model=VideoPage, tags=["catalog"])
    def list_videos(
        label: str | None = Query(None, description="only videos with this label"),
        offset: int = Query(0, ge=0),
        limit: int = Query(48, ge=1, le=500),
    ) -> VideoPage:
        """The catalog's videos in id order, a page at a time."""
        videos = catalogs.get().videos(label=label)
        return VideoPage(total=len(videos), offset=offset, limit=limit, label=label,
                         items=[_video_out(video) for video in videos[offset:offset + limit]])

    @app.get("/api/videos/{video_id}", response_model=VideoOut, responses=_ERRORS, tags=["catalog"])
    def get_video(video_id: int) -> VideoOut:
        """One catalog video."""
        return _video_out(_video_or_404(video_id))

    @app.get("/api/videos/{video_id}/thumbnail", response_class=Response, responses=_ERRORS, tags=["catalog"])
    def thumbnail(video_id: int) -> Response:
        """The video's thumbnail (JPEG)."""
        _video_or_404(video_id)
        jpeg = catalogs.get().thumbnail(video_id)
        if jpeg is None:
            raise HTTPException(404, f"video {video_id}: has no thumbnail (no picture stream)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/videos/{video_id}/media", response_class=FileResponse, responses=_ERRORS, tags=["catalog"])
    def media_file(video_id: int) -> FileResponse:
        """The video's media file; answers HTTP range requests, so that a player can seek."""
        return FileResponse(_media_path(_video_or_404(video_id)))

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


def _check_length(request: Request, limit: int, item: str) -> None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, f"{item}: send a Content-Length header")
    if int(length) > limit:
        raise HTTPException(413, f"{item}: {_megabytes(int(length))} is over the limit of {_megabytes(limit)}")


def _video_out(video: Video) -> VideoOut:
    return VideoOut(**video.to_dict(), thumbnail_url=f"/api/videos/{video.id}/thumbnail",
                    media_url=f"/api/videos/{video.id}/media")


def serve(settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
