"""Indexing on a Ray cluster: prepare as Ray tasks, extraction in Ray actors that load each model once.

``mvr index --engine ray [--address HOST:PORT] [--media-store DIR]`` runs each item's two tasks on a cluster and
streams the results back, as futures, to the single catalog writer in this process
(:mod:`mvr.ingest.pipeline`), which commits them in the order of the sources exactly as with the local engine:
the same ids, summary, progress bar and per-item errors, and a re-run skips what is committed.

How the media travels. A local file is the driver's: no cluster node is assumed to see its path, so its bytes are
put into Ray's object store once and the prepare task (probe, hash) and the extraction actor read them from there.
A URL is downloaded by the prepare task on whichever node runs it; its bytes come back through the object store
(the catalog in this process needs a copy) and go from there to the actor, without passing through the driver
twice. With ``media_store`` (a folder every node and the driver mount, say NFS), the prepare task writes the media
there under its content hash instead, and only the path travels.

Faults. A prepare task whose worker process dies is retried ``retries`` times by Ray (``max_retries``); an actor
that dies is restarted ``retries`` times, reloading its models, and its unfinished task is retried
(``max_restarts``, ``max_task_retries``). After that the item fails with a reason, a fresh actor takes the dead
one's place, and the batch goes on. Leaving the batch early (Ctrl-C, an error) cancels what is still queued or
running on the cluster for it (:meth:`RayExecutor.shutdown`).

This module is the only one that imports ``ray`` (an optional extra, ``pip install 'mvr[cluster]'``);
:data:`mvr.ingest.executors.EXECUTORS` imports it only when the ray engine is chosen.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import ray.exceptions

from mvr import media
from mvr.config import prepare_process_environment
from mvr.errors import MvrError, UsageError
from mvr.features import Extractor, build_extractors
from mvr.ingest.executors import IngestExecutor
from mvr.ingest.policy import SourcePolicy
from mvr.ingest.resolve import ResolvedMedia
from mvr.ingest.sources import SourceItem
from mvr.ingest.tasks import Extracted, ExtractionPlan, Failed, extract, failure_reason, prepare

RETRIES = 2
"""How many times a task whose worker died is run again (and a dead actor restarted) before its item fails."""

# Errors that say the cluster lost the work (a worker process, an actor or a node died), not that the item is bad.
_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
         ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError)


@dataclass(frozen=True)
class _Prepared:
    """What a prepare task found out about one item on its node (the media itself travels beside it)."""

    name: str  # the media file's name: its suffix tells ffmpeg and the catalog what it is
    title: str | None
    info: media.MediaInfo
    content_hash: str
    store_path: str | None = None  # the media in the shared store, when there is one


@dataclass(frozen=True)
class ClusterMedia(ResolvedMedia):
    """A resolved item as the driver sees it, with where an actor finds the media.

    Attributes
    ----------
    payload : ray.ObjectRef or None
        The media's bytes in the object store (none when the media is in the shared store).
    store_path : str or None
        The media's path in the shared media store.
    """

    payload: ray.ObjectRef | None = None
    store_path: str | None = None


@ray.remote(max_retries=RETRIES, num_returns=2, num_cpus=0, scheduling_strategy="SPREAD")
def _prepare_task(item: SourceItem, payload: bytes | None, policy: SourcePolicy,
                  store: str | None) -> tuple[_Prepared | Failed, bytes | None]:
    """Prepare one item on a cluster node: download a URL (or write a driver's file's bytes), probe, hash.

    It asks for no CPU slot: the actors hold every slot, and a prepare task mostly waits on the network or on
    ffprobe; the pipeline bounds how many run at once. Returns what was found, and the media's bytes when they
    must travel back through the object store (a URL's, without a shared store).
    """
    with tempfile.TemporaryDirectory(prefix="mvr-prepare-") as scratch:
        if payload is None:  # a URL: downloaded on this node, into this node's scratch folder
            found = prepare(item, Path(scratch), policy)
        else:  # a driver's file: its bytes under its own name, so that errors and suffixes read as locally
            local = Path(scratch) / Path(item.source).name
            local.write_bytes(payload)
            found = prepare(replace(item, source=str(local)), Path(scratch), policy)
        if isinstance(found, Failed):
            return found, None
        meta = _Prepared(found.path.name, found.title, found.info, found.content_hash)
        try:
            if store is not None:
                stored = _store(Path(store), found.path, found.content_hash)
                return replace(meta, store_path=str(stored)), None
            return meta, (found.path.read_bytes() if payload is None else None)
        except OSError as exc:  # a full or unwritable store fails the item, as a full disk does locally
            return Failed(failure_reason(exc)), None
        finally:
            found.cleanup()


def _store(store: Path, path: Path, content_hash: str) -> Path:
    """Copy media into the shared store under its content hash; the rename makes it appear whole or not at all."""
    target = store / content_hash[:2] / f"{content_hash}{path.suffix.lower() or '.bin'}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
    return target


class _ExtractionActor:
    """One CPU slot's extractors, built and loaded once when the actor starts (and again if Ray restarts it)."""

    def __init__(self, plan: ExtractionPlan) -> None:
        prepare_process_environment()  # this worker process is an edge too: before any model is loaded
        self._threads = plan.runtime.threads
        self._extractors: dict[str, Extractor] = {}
        self._failure: str | None = None
        try:
            self._extractors = build_extractors(plan.options, plan.runtime)
            for extractor in self._extractors.values():
                extractor.load()
        except MvrError as exc:
            self._failure = failure_reason(exc)  # every extraction reports it, where the user sees it

    def extract(self, payload: bytes | None, meta: _Prepared) -> Extracted | Failed:
        """Extract one item, from the bytes the object store brought or from the shared store's file."""
        if self._failure is not None:
            return Failed(self._failure)
        if meta.store_path is not None:
            return extract(self._resolved(Path(meta.store_path), meta), self._extractors, self._threads)
        with tempfile.TemporaryDirectory(prefix="mvr-extract-") as scratch:
            local = Path(scratch) / meta.name
            local.write_bytes(payload)
            return extract(self._resolved(local, meta), self._extractors, self._threads)

    def pid(self) -> int:
        """This actor's process id (a test kills it to check that the batch survives)."""
        return os.getpid()

    @staticmethod
    def _resolved(path: Path, meta: _Prepared) -> ResolvedMedia:
        return ResolvedMedia(meta.name, path, meta.title, meta.info, meta.content_hash)


class RayExecutor(IngestExecutor):
    """Runs indexing's tasks on a Ray cluster; ``workers`` is the cluster's CPU slots (or ``max_actors``).

    Parameters
    ----------
    plan : ExtractionPlan
        The extractors' options and run-time settings; each actor gets one CPU thread (it holds one slot).
    address : str, optional
        The cluster: ``HOST:PORT`` of its head, ``auto`` for the one this machine belongs to, or None for Ray's
        own rule (``$RAY_ADDRESS``, else a running local cluster, else a new one on this machine). Ignored when
        this process is already connected (``ray.init`` was called before).
    media_store : Path, optional
        A folder that every node and this process share; media go there under their content hash instead of
        through the object store.
    max_actors : int, optional
        At most this many extraction actors (by default one per CPU slot of the cluster).
    retries : int
        How many times work lost with its worker is run again before its item fails.

    Raises
    ------
    UsageError
        When the cluster cannot be reached or has no CPU slot.
    """

    def __init__(self, plan: ExtractionPlan, *, address: str | None = None, media_store: Path | None = None,
                 max_actors: int | None = None, retries: int = RETRIES) -> None:
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                # Workers' output stays in the cluster's logs, so that the command line prints what the local
                # engine prints; Ray's own start-up lines are for its logs too.
                ray.init(address=address, namespace="mvr", log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"Ray cluster {address or '(default)'}: cannot connect ({exc})") from None
        slots = int(ray.cluster_resources().get("CPU", 0))
        if slots < 1:
            self._disconnect()
            raise UsageError(f"Ray cluster {address or '(default)'}: no CPU slot to run extraction on")
        self.workers = min(slots, max_actors) if max_actors else slots
        self._plan = ExtractionPlan(plan.options, plan.runtime.with_threads(1))
        self._store = str(Path(media_store).resolve()) if media_store is not None else None
        self._retries = retries
        self._actor_class = ray.remote(_ExtractionActor).options(
            num_cpus=1, max_restarts=retries, max_task_retries=retries, scheduling_strategy="SPREAD")
        self._actors: dict[ray.actor.ActorHandle, int] = {}  # actor -> its unfinished extractions
        self._outstanding: set[ray.ObjectRef] = set()  # what Ctrl-C cancels
        self._lock = threading.Lock()  # the two above change on Ray's callback threads too
        # Writing a URL's bytes into the driver's copy waits on the object store: off the writer's thread.
        self._local = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mvr-ray")

    # prepare ---------------------------------------------------------------------------------------------------

    def prepare(self, item: SourceItem, tmp_dir: Path, policy: SourcePolicy) -> Future:
        """Start an item's prepare task on the cluster; the future's result is a ClusterMedia or a Failed."""
        payload = None
        if not media.is_url(item.source):
            try:
                payload = ray.put(Path(item.source).read_bytes())
            except OSError:  # missing, a folder, unreadable: fails here with the local engine's own reason
                return self._local.submit(prepare, item, tmp_dir, policy)
        meta_ref, bytes_ref = _prepare_task.remote(item, payload, policy, self._store)
        outer: Future = Future()

        def then(done: Future) -> None:
            try:
                self._local.submit(self._prepared, done, outer, item, tmp_dir, payload, bytes_ref)
            except RuntimeError:  # the executor is shutting down: the batch is over
                outer.set_result(Failed("cancelled"))

        self._watch(meta_ref, then)
        return outer

    def _prepared(self, done: Future, outer: Future, item: SourceItem, tmp_dir: Path,
                  payload: ray.ObjectRef | None, bytes_ref: ray.ObjectRef) -> None:
        """Turn a prepare task's result into the driver's ClusterMedia (or the item's failure)."""
        try:
            meta = done.result()
            if isinstance(meta, Failed):
                outer.set_result(meta)
            elif payload is not None:  # the driver's own file: the catalog copies it from where it is
                outer.set_result(self._media(item, Path(item.source), meta, payload=payload))
            elif meta.store_path is not None:
                outer.set_result(self._media(item, Path(meta.store_path), meta))
            else:  # a URL's download: the catalog needs a copy here, the actor reads the object store's
                folder = Path(tempfile.mkdtemp(dir=_made(tmp_dir), prefix="ray-"))
                try:
                    path = folder / meta.name
                    path.write_bytes(ray.get(bytes_ref))
                except BaseException:
                    media.remove_temp_folder(folder)
                    raise
                outer.set_result(self._media(item, path, meta, payload=bytes_ref, temp_dir=folder))
        except BaseException as exc:  # lost or cancelled on the cluster: the item's failure
            outer.set_result(self._failed(exc))

    @staticmethod
    def _media(item: SourceItem, path: Path, meta: _Prepared, **where: object) -> ClusterMedia:
        return ClusterMedia(item.source, path, meta.title, meta.info, meta.content_hash, **where)

    # extract ---------------------------------------------------------------------------------------------------

    def extract(self, resolved: ResolvedMedia) -> Future:
        """Start an item's extraction on the least busy actor; an Extracted or a Failed."""
        if not isinstance(resolved, ClusterMedia):  # only this executor's prepare makes what an actor can read
            raise TypeError(f"the ray engine extracts what it prepared, not {type(resolved).__name__}")
        actor = self._pick_actor()
        meta = _Prepared(resolved.path.name, resolved.title, resolved.info, resolved.content_hash,
                         resolved.store_path)
        ref = actor.extract.remote(resolved.payload, meta)
        outer: Future = Future()
        self._watch(ref, lambda done: self._extracted(done, outer, actor))
        return outer

    def _pick_actor(self) -> ray.actor.ActorHandle:
        """The actor with the fewest unfinished extractions; a new one while some slot has none (lazily, so that a
        small batch on a large cluster loads as many models as it needs)."""
        with self._lock:
            idle = [actor for actor, load in self._actors.items() if load == 0]
            if idle:
                actor = idle[0]
            elif len(self._actors) < self.workers:
                actor = self._actor_class.remote(self._plan)
                self._actors[actor] = 0
            else:
                actor = min(self._actors, key=self._actors.__getitem__)
            self._actors[actor] += 1
        return actor

    def _extracted(self, done: Future, outer: Future, actor: ray.actor.ActorHandle) -> None:
        try:
            outer.set_result(done.result())
            dead = False
        except BaseException as exc:
            outer.set_result(self._failed(exc))
            dead = isinstance(exc, ray.exceptions.RayActorError)
        with self._lock:
            if actor in self._actors:
                self._actors[actor] -= 1
                if dead:  # out of restarts: the next extraction starts a fresh actor in its place
                    del self._actors[actor]

    # both ------------------------------------------------------------------------------------------------------

    def _watch(self, ref: ray.ObjectRef, then: Callable[[Future], None]) -> None:
        """Remember ``ref`` until it is done (to cancel it), and call ``then`` with its future when it is."""
        with self._lock:
            self._outstanding.add(ref)

        def finished(done: Future) -> None:
            with self._lock:
                self._outstanding.discard(ref)
            then(done)

        ref.future().add_done_callback(finished)

    def _failed(self, exc: BaseException) -> Failed:
        """An item's reason for work the cluster lost or cancelled, or for anything else that went wrong."""
        if isinstance(exc, _LOST):
            return Failed(f"the cluster lost its worker ({type(exc).__name__}) after {1 + self._retries} tries")
        if isinstance(exc, ray.exceptions.TaskCancelledError):
            return Failed("cancelled")
        return Failed(failure_reason(exc))

    def extraction_pids(self) -> list[int]:
        """Process ids of the extraction actors started so far (each answers once it has loaded its models)."""
        with self._lock:
            actors = list(self._actors)
        return ray.get([actor.pid.remote() for actor in actors], timeout=120)

    def shutdown(self) -> None:
        """Cancel this batch's work still on the cluster, stop the actors, and disconnect if this made the link.

        After a whole batch nothing is outstanding; after Ctrl-C this is what stops the cluster's work for it.
        """
        with self._lock:
            outstanding, self._outstanding = list(self._outstanding), set()
            actors, self._actors = list(self._actors), {}
        for ref in outstanding:
            ray.cancel(ref)  # a queued task never starts; a running prepare task is interrupted
        for actor in actors:
            ray.kill(actor, no_restart=True)  # a running extraction ends with its process
        self._local.shutdown(wait=True, cancel_futures=True)
        self._disconnect()

    def _disconnect(self) -> None:
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
