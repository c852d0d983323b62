"""Which files to mask: files, folders (recursively) and globs, each with a unique key."""
from __future__ import annotations

import glob
import os
import pathlib
import zlib

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class InputError(ValueError):
    """The inputs name nothing to mask, or two inputs would write the same files."""


def gather(specs: list[str]) -> tuple[list[tuple[str, pathlib.Path]], list[str]]:
    """(key, path) for every picture the specs name, sorted by key, and warnings for specs that name
    nothing. A folder's pictures are keyed by their path inside it; a file or a glob
    match by its path relative to the current folder (its name when outside)."""
    found: dict[str, pathlib.Path] = {}
    warnings = []
    for spec in specs:
        path = pathlib.Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                warnings.append(f"{spec}: no pictures in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for file in files:
                _add(found, file.relative_to(path).as_posix(), file)
        elif path.is_file():
            _add(found, _key_of(path), path)
        elif glob.has_magic(spec):
            matches = sorted(pathlib.Path(m) for m in glob.glob(spec, recursive=True) if os.path.isfile(m))
            if not matches:
                warnings.append(f"{spec}: no file matches this pattern")
            for match in matches:
                _add(found, _key_of(match), match)
        else:
            warnings.append(f"{spec}: no such file or folder")
    return sorted(found.items()), warnings


def _key_of(path: pathlib.Path) -> str:
    try:
        return path.resolve().relative_to(pathlib.Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _add(found: dict, key: str, path: pathlib.Path) -> None:
    previous = found.get(key)
    if previous is not None and previous.resolve() != path.resolve():
        raise InputError(f"{previous} and {path} would both be saved as '{key}'; give their parent folder "
                         "instead, or mask them in separate runs with separate --out folders.")
    found[key] = path


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' (1-based) -> (i, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard: expected i/N such as 1/4, received {text!r}") from None
    if not (count >= 1 and 1 <= index <= count):
        raise InputError(f"--shard: need 1 <= i <= N, received {text!r}")
    return index, count


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Stable across runs and machines (CRC-32 of the key), so adding files never moves others."""
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(key.encode()) % count == index - 1
