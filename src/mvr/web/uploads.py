"""Uploaded files: streamed once from the request to their place under the catalog's temporary folder, hashed
and probed on the way."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from mvr import media
from mvr.errors import MediaError
from mvr.ingest.policy import MIB

UPLOAD_FIELD = "file"
# The form's other fields are a query's few options: short values, few of them.
MAX_FORM_FIELDS = 8
MAX_FIELD_BYTES = 1024


@dataclass
class Upload:
    """A received upload.

    Attributes
    ----------
    path : Path
        The stored file, named after the client's file name (its stem becomes the query's title), alone in its
        folder: removing ``path.parent`` removes the upload.
    filename : str
        The client's file name made safe (:func:`safe_filename`).
    content_hash : str
        Its SHA-256, the key of the feature cache.
    fields : dict of str to str
        The form's other fields.
    """

    path: Path
    filename: str
    content_hash: str
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(name: str | None) -> str:
    """A client's file name made safe to use inside our own folder: no folders, no odd characters."""
    base = Path((name or "").replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\- ]+", "_", base).strip(" .")[:120]
    return cleaned or "upload"


class _FormReader:
    """The callbacks of a streaming multipart parser: the file part goes straight to disk, counted and hashed;
    the other parts are kept as short text fields."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self.filename = ""
        self.digest = hashlib.sha256()
        self.size = 0
        self._out: BinaryIO | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._field_name: str | None = None
        self._field_value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_data, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._header_name = self._header_value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options and name != UPLOAD_FIELD:
            raise HTTPException(400, f"upload: no file in the form's field '{UPLOAD_FIELD}' (it sends one in"
                                     f" '{name}')")
        if name == UPLOAD_FIELD and b"filename" in options:
            if self.path is not None:
                raise HTTPException(400, "upload: send one file only")
            self.filename = safe_filename(options[b"filename"].decode("utf-8", "replace"))
            self.path = self.folder / self.filename
            self._out = open(self.path, "wb")
            self._field_name = None
            return
        if len(self.fields) >= MAX_FORM_FIELDS:
            raise HTTPException(400, f"upload: more than {MAX_FORM_FIELDS} form fields")
        self._field_name = name
        self._field_value = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        block = data[start:end]
        if self._field_name is not None:
            self._field_value += block
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise HTTPException(413, f"upload: form field '{self._field_name}' is over {MAX_FIELD_BYTES} bytes")
            return
        if self._out is None:
            return
        self.size += len(block)
        if self.size > self.max_bytes:
            raise HTTPException(413, f"{self.filename}: larger than the upload limit of {megabytes(self.max_bytes)}")
        self.digest.update(block)
        self._out.write(block)

    def _part_end(self) -> None:
        if self._field_name is not None:
            self.fields[self._field_name] = self._field_value.decode("utf-8", "replace")
            self._field_name = None
        elif self._out is not None:
            self._out.close()
            self._out = None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_upload(request: Request, tmp_root: Path, max_bytes: int) -> Upload:
    """Stream a ``multipart/form-data`` request's file (field ``file``) into a fresh folder under ``tmp_root``,
    hashing it as it arrives, then check it with ffprobe. The body is read once and written once.

    Raises
    ------
    HTTPException
        400 for a form that is not well-formed or holds no file, 413 when the file is over ``max_bytes``, 415
        when ffprobe finds no audio or video in it. Nothing is left on disk then.
    """
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "upload: the multipart/form-data content type names no boundary")
    tmp_root.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later start sweep what a killed server left (mvr.store.catalog.sweep_leftovers).
    folder = Path(tempfile.mkdtemp(prefix=f"upload-{os.getpid()}-", dir=tmp_root))
    reader = _FormReader(folder, max_bytes)
    try:
        try:
            parser = MultipartParser(boundary, reader.callbacks())
            async for chunk in request.stream():
                await run_in_threadpool(parser.write, chunk)
            parser.finalize()
        except ClientDisconnect:
            raise HTTPException(400, "upload: the client went away before sending the whole body") from None
        except FormParserError as exc:
            raise HTTPException(400, f"upload: not a well-formed multipart/form-data body ({exc})") from None
        finally:
            reader.close()
        if reader.path is None:
            raise HTTPException(400, f"upload: no file in the form (send it in the field named '{UPLOAD_FIELD}')")
        path, filename = reader.path, reader.filename
        try:
            await run_in_threadpool(media.probe, path)
        except MediaError as exc:
            # ffprobe names our temporary path; the client knows the file by its own name.
            raise HTTPException(415, f"{filename}: {exc.reason.replace(str(path), filename)}") from None
    except BaseException:
        media.remove_temp_folder(folder)
        raise
    return Upload(path=path, filename=filename, content_hash=reader.digest.hexdigest(), fields=reader.fields)


def megabytes(count: int) -> str:
    return f"{count / MIB:.0f} MB" if count >= MIB else f"{count} bytes"
