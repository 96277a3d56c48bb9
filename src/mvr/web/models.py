"""The REST API's typed models: requests, answers and errors, with the choices read from the registries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from mvr.index.base import METRICS
from mvr.retrieval.targets import DEFAULT_MIX_LENGTH, DEFAULT_PATH_LENGTH, search_targets

if TYPE_CHECKING:  # annotations only
    from mvr.store import Video

MAX_K = 50

MAX_WALK = 500
"""The longest mix or path the API makes."""
MAX_SEEDS = 50
"""The most seed (or avoided) videos of one mix."""

MAX_VIDEO_ID = 2**63 - 1
"""SQLite's largest integer: a larger id cannot name a video."""

QueryState = Literal["queued", "running", "done", "failed"]
# Ids are whole numbers as JSON writes them: true, 1.0 and "1" are not ids.
VideoId = Annotated[StrictInt, Field(ge=1, le=MAX_VIDEO_ID)]
# Literal over the registries' tuples keeps the accepted values and the OpenAPI enums in step with mvr's.
Modality = Literal[search_targets()]  # type: ignore[valid-type]
Metric = Literal[METRICS]  # type: ignore[valid-type]


class SearchOptions(BaseModel):
    """How to measure: the modality, the distance metric and, for fused search, the weights."""

    model_config = ConfigDict(extra="forbid")

    modality: Modality = Field("audio", description="audio, visual, or fused (the multimodal search)")
    metric: Metric | None = Field(None, description="distance metric; by default the modality's own (for a tuned"
                                                    " fused search, each space's tuned one)")
    weights: dict[str, float] | str | None = Field(
        None, description="fused search only: each space's weight, as an object or as text 'audio=0.7,visual=0.3';"
                          " by default the catalog's tuned weights (mvr tune), else equal ones")


class QueryOptions(SearchOptions):
    """How to search: the modality, the distance metric and how many results."""

    k: int = Field(5, ge=1, le=MAX_K, description="how many recommendations")


class QueryRequest(QueryOptions):
    """A query by URL, or by a video of the catalog; a file is sent as a multipart upload instead."""

    url: str | None = Field(None, description="http(s) URL: YouTube, any site yt-dlp knows, or a direct media link")
    video_id: VideoId | None = Field(None, description="a catalog video whose neighbours to find")

    @model_validator(mode="after")
    def _one_source(self) -> "QueryRequest":
        if (self.url is None) == (self.video_id is None):
            raise ValueError("give either url or video_id")
        return self


class MixRequest(SearchOptions):
    """A play queue that flows from seed videos and away from avoided ones (``mvr mix``)."""

    seeds: list[VideoId] = Field(min_length=1, max_length=MAX_SEEDS,
                                 description="catalog videos to be more like; the queue starts with the first")
    avoid: list[VideoId] = Field(default_factory=list, max_length=MAX_SEEDS,
                                 description="catalog videos to be less like; never played, nor their groups")
    n: StrictInt = Field(DEFAULT_MIX_LENGTH, ge=1, le=MAX_WALK, description="how many videos the queue holds")


class PathRequest(SearchOptions):
    """A path of videos from one catalog video to another (``mvr path``)."""

    start: VideoId = Field(description="the first video (A)")
    end: VideoId = Field(description="the last video (B)")
    n: StrictInt = Field(DEFAULT_PATH_LENGTH, ge=2, le=MAX_WALK, description="how many videos, A and B included")


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
    group: str | None = Field(None, description="its track (a catalog video's group), for marking same-track results")


class SpaceReasonOut(BaseModel):
    """Why a fused result is close, in one space (see ``docs/evaluation.md``, "Explained results")."""

    distance: float = Field(description="the space's raw distance to the query")
    metric: Metric
    weight: float
    score: float = Field(description="the space's weighted z-score: the spaces' scores add up to the fused distance")
    similarity: float = Field(description="share of the query's other candidates farther in this space (0-1)")
    groups: dict[str, float] | None = Field(
        description="each feature group's share of the distance (or similarity, see groups_measure); null where"
                    " the metric does not split by group")
    groups_measure: str | None


class MatchOut(BaseModel):
    """One recommended video (the fields of ``mvr query --json --explain``)."""

    rank: int
    id: int
    title: str
    label: str | None
    source: str
    group: str | None = Field(None, description="its track: results that share the query's are excerpts of it")
    distance: float
    similarity: float | None = Field(None, description="share of the query's other candidates farther away (0-1);"
                                                       " null where a large catalog's approximate index ranked it")
    why: dict[str, SpaceReasonOut] | None = Field(None, description="fused search: space -> why it is close")


class FusionOut(BaseModel):
    """How a fused search combined the spaces."""

    method: str
    weights: dict[str, float]
    metrics: dict[str, Metric]
    projections: dict[str, str] = Field(
        default_factory=dict, description="space -> the projection learned from the catalog's labels in which it is"
                                          " measured (\"lda\"), from the catalog's tuning")
    weights_from: Literal["equal", "tuned", "explicit"]


class RecommendationOut(BaseModel):
    """The answer to a query (the JSON of ``mvr query --json --explain``)."""

    query: QueryDescription
    modality: Modality
    metric: Metric
    results: list[MatchOut]
    fusion: FusionOut | None = None
    tied_at_cut: bool = Field(False, description="the last result ties with candidates left out (ties go by video"
                                                 " id ascending)")


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

    @classmethod
    def of(cls, video: Video) -> "VideoOut":
        """A catalog video with the API's addresses of its thumbnail and media."""
        return cls(**video.to_dict(), thumbnail_url=f"/api/videos/{video.id}/thumbnail",
                   media_url=f"/api/videos/{video.id}/media")


class StepOut(BaseModel):
    """One video of a mix or a path."""

    position: int = Field(description="its place, from 1")
    video: VideoOut
    distance: float | None = Field(description="the search's distance from the previous video; null for the first")
    score: float | None = Field(description="the blended score that chose it (lower is nearer); null for a video"
                                            " the request placed (a mix's first seed, a path's ends)")


class PathStepOut(StepOut):
    """One video of a path, with its distance to the path's end."""

    distance_to_end: float | None = Field(description="the search's distance from the end (B); never grows along"
                                                      " the path")


class WalkOut(BaseModel):
    """What a mix and a path answer alike."""

    modality: Modality
    metric: Metric
    notes: list[str] = Field(description="why fewer videos came than were asked for, if so")
    fusion: FusionOut | None = None


class MixOut(WalkOut):
    """A play queue (the JSON of ``mvr mix --json``, with each video's addresses)."""

    seeds: list[VideoOut]
    avoid: list[VideoOut]
    items: list[StepOut]


class PathOut(WalkOut):
    """A path from ``start`` to ``end`` (the JSON of ``mvr path --json``, with each video's addresses)."""

    start: VideoOut
    end: VideoOut
    items: list[PathStepOut]


class VideoPage(BaseModel):
    """One page of the catalog's videos."""

    total: int
    offset: int
    limit: int
    label: str | None
    title: str | None = None
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
    allow_indexing: bool = Field(False, description="the server adds videos (POST /api/videos): it was started with"
                                                    " --allow-indexing")


class IndexOptions(BaseModel):
    """What to record with a video added to the catalog; blank fields are left out."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(None, max_length=100, description="its label (genre, style); none by default")
    title: str | None = Field(None, max_length=200, description="its title; by default the site's title or the"
                                                                " file's name")

    @field_validator("label", "title")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return (" ".join(value.split()) or None) if value is not None else None


class IndexRequest(IndexOptions):
    """A video to add by URL; a file is sent as a multipart upload instead."""

    url: str = Field(description="http(s) URL: YouTube, any site yt-dlp knows, or a direct media link")


class IndexAccepted(QueryAccepted):
    """A video to add, taken into the queue."""


class IndexStatus(BaseModel):
    """Where adding a video stands; once done, ``video`` is the catalog's video (``existing``: it was already
    there, with the same content), once failed, ``error`` says why."""

    id: str
    status: QueryState
    stage: str
    progress: float = Field(ge=0.0, le=1.0)
    source: str
    label: str | None
    title: str | None
    elapsed_s: float
    existing: bool = Field(description="the catalog already held this content: nothing was added")
    video: VideoOut | None
    notes: list[str]
    error: str | None


class EvaluationRow(BaseModel):
    """Precision of one method, modality and metric (see :mod:`mvr.evaluation`)."""

    model_config = ConfigDict(extra="allow")

    method: str = Field("mvr", description="mvr; study: the study's own method measured on the same data; tuned:"
                                           " the tuned fusion, cross-validated; adaptive: the query-adaptive"
                                           " fusion; learned: one space with its learned projection,"
                                           " cross-validated")
    modality: str
    metric: str
    precision: float | None = Field(description="precision@k; null when degenerate")
    map: float | None = Field(None, description="mean average precision")
    queries: int | None = None
    degenerate: bool = Field(False, description="the metric tied every candidate of every query")
    labels: dict[str, float | None] | None = Field(None, description="precision@k of each label's queries")
    chance: float | None = Field(None, description="precision@k of a random ranking under the same protocol")
    tied_at_cut: int = Field(0, description="queries whose k-th result tied with a candidate left out")
    default: bool = Field(False, description="this row measures what mvr searches by default on this catalog")


class EvaluationFold(BaseModel):
    """One cross-validation fold of the tuned fusion: what was tuned without its queries."""

    queries: int
    weights: dict[str, float]
    metrics: dict[str, str]
    projections: list[str] = Field(default_factory=list,
                                   description="the spaces measured in a projection learned on the other folds")
    tuned: bool = Field(description="false: too few labels in the other folds, equal weights kept")
    training_score: float | None = Field(None, description="precision@k on the videos tuned on (in-sample)")


class EvaluationTuned(BaseModel):
    """The tuned fusion (or one space tuned alone), scored only by cross-validation over groups
    (:mod:`mvr.evaluation.crossval`)."""

    result: EvaluationRow
    folds: list[EvaluationFold]


class EvaluationOut(BaseModel):
    """The latest ``mvr evaluate`` results of the catalog (``DIR/evaluation.json``)."""

    model_config = ConfigDict(extra="allow")

    k: int
    protocol: str
    created: str | None = Field(None, description="when the evaluation ran (UTC, ISO 8601)")
    videos: int | None = Field(None, description="videos in the catalog at the time")
    queries: str | None = Field(None, description="with protocol 'queries': the catalog the queries came from")
    defaults: dict[str, dict[str, str]] | None = Field(
        None, description="each method's own metric per search target (method -> target -> metric)")
    fusion: dict[str, str | dict[str, float]] | None = Field(
        None, description="each method's fusion, and mvr's equal weights")
    catalog_tuned: bool = Field(False, description="the catalog was tuned (mvr tune): its fused default is the"
                                                   " tuned fusion")
    results: list[EvaluationRow]
    tuned: EvaluationTuned | None = Field(None, description="the tuned fusion, cross-validated (loo only)")
    adaptive: EvaluationRow | None = Field(None, description="the query-adaptive fusion (loo only)")
    learned: dict[str, EvaluationTuned] = Field(
        default_factory=dict, description="space -> that space alone with its learned projection where the folds"
                                          " keep one, cross-validated (loo only)")


class MapPointOut(BaseModel):
    """One video on the collection's map."""

    id: int
    title: str
    label: str | None
    x: float
    y: float


class MapMethodOut(BaseModel):
    """How the map's points were placed (``mvr.retrieval.collection_map``)."""

    name: str = Field(description="the layout method: tsne")
    library: str = Field(description="the library and its version")
    perplexity: float
    neighbours: int = Field(description="neighbours per video in the graph the layout reads")
    iterations: int
    seed: int


class KeyframeMatchOut(BaseModel):
    """The keyframe of a result that looks most like a keyframe of the query (``mvr.retrieval.keyframe_match``)."""

    query: int = Field(description="the query's video id")
    result: int = Field(description="the result's video id")
    query_keyframe: int = Field(description="the query's keyframe, 0-based among its keyframes in video order")
    result_keyframe: int = Field(description="the result's keyframe, 0-based")
    query_keyframes: int = Field(description="how many keyframes of the query were compared")
    result_keyframes: int = Field(description="how many keyframes of the result were compared")
    similarity: float = Field(description="cosine similarity of the two keyframes' CNN embeddings (-1 to 1)")
    query_image: str = Field(description="the query's keyframe as the network saw it: a data: address (JPEG)")
    result_image: str = Field(description="the result's keyframe: a data: address (JPEG)")


class MapOut(BaseModel):
    """The collection's 2-D map in one search target (the JSON of ``mvr map --json``); only distances between
    points mean anything."""

    space: Modality
    metric: Metric
    method: MapMethodOut
    fusion: FusionOut | None = None
    points: list[MapPointOut] = Field(description="every video that has the target's spaces, in id order")


class ErrorOut(BaseModel):
    """Every error: one line naming the item and the reason."""

    detail: str
