"""Reading import files as a stream of bounded lines: plain functions with no database access.

A file may be gzipped, which is recognised by its first two bytes whatever its name. Lines are read
with io's `readline(limit)`, so a hostile file (a gzip bomb, one line of gigabytes) never has more
than one limited piece of it in memory at a time: before this, a 287 KB .gz took 1.06 GB of memory
and a 2 MB .gz holding one 2 GB line ended in MemoryError.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
# Pieces read while measuring a file or skipping the rest of an over-long line.
CHUNK_BYTES = 1024 * 1024


class ImportFileError(ValueError):
    """The file as a whole cannot be imported: unreadable, corrupt, or too large once decompressed."""


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, counting every line of the file, blank ones included.
    end: int  # Offset just after this line in the decompressed stream: where a resumed read starts.
    data: bytes | None  # Without the line ending; None for a line over the length limit.


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _too_large(path: Path, limit: int) -> ImportFileError:
    return ImportFileError(
        f"{path.name} decompresses to more than {_megabytes(limit)}, the limit of an import "
        f"(IMPORT_MAX_DECOMPRESSED_BYTES). Split the file and import the parts."
    )


def _unreadable(path: Path, error: Exception) -> ImportFileError:
    return ImportFileError(f"{path.name}: cannot be read ({error or type(error).__name__}).")


def decompressed_size(path: Path, *, limit: int) -> int:
    """The size of the file's contents once decompressed, read through once without keeping any of it.

    Done before anything is stored, so a gzip bomb or a corrupt archive is refused as a whole
    instead of after some of its batches were committed; stops as soon as `limit` is passed.
    """
    size = 0
    try:
        with _open(path) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise _too_large(path, limit)
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, error) from None
    return size


def lines_read(path: Path, *, start: int = 0, start_line: int = 0, max_line_bytes: int, limit: int) -> Iterator[Line]:
    """The lines of a (possibly gzipped) file from decompressed offset `start`, each at most
    `max_line_bytes` long; a longer line is skipped piece by piece and given with `data` None."""
    position, number = start, start_line
    try:
        with _open(path) as stream:
            # A gzip stream seeks forward by decompressing and discarding, in bounded pieces.
            stream.seek(start)
            while data := stream.readline(max_line_bytes + 1):
                position += len(data)
                number += 1
                if len(data) > max_line_bytes and not data.endswith(b"\n"):
                    data = None
                    while (piece := stream.readline(CHUNK_BYTES)) and position <= limit:
                        position += len(piece)
                        if piece.endswith(b"\n"):
                            break
                if position > limit:
                    raise _too_large(path, limit)
                yield Line(number=number, end=position, data=None if data is None else data.rstrip(b"\r\n"))
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, error) from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not part of JSON")


def json_row(data: bytes):
    """One line's JSON value; ValueError (with a reason to show) for anything that is not strict JSON.

    Python's decoder accepts NaN and Infinity, which JSON does not have, and recurses once per
    nesting level, so a line of 100,000 "[" would otherwise end the import with a RecursionError.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    except ValueError as error:
        raise ValueError(f"not valid JSON ({error})") from None
