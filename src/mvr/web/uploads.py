"""Uploaded files: stored once, hashed and probed, under the catalog's temporary folder."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException

from mvr import media
from mvr.errors import MediaError
from mvr.ingest.policy import MIB


def safe_filename(name: str | None) -> str:
    """A client's file name made safe to use inside our own folder: no folders, no odd characters."""
    base = Path((name or "").replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\- ]+", "_", base).strip(" .")[:120]
    return cleaned or "upload"


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
    # The pid in the name lets a later start sweep what a killed server left (mvr.store.catalog.sweep_leftovers).
    folder = Path(tempfile.mkdtemp(prefix=f"upload-{os.getpid()}-", dir=tmp_root))
    path = folder / filename
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as out:
            while block := handle.read(MIB):
                size += len(block)
                if size > max_bytes:
                    raise HTTPException(413, f"{filename}: larger than the upload limit of {megabytes(max_bytes)}")
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


def megabytes(count: int) -> str:
    return f"{count / MIB:.0f} MB" if count >= MIB else f"{count} bytes"
