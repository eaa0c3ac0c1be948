"""Source kind `remote`: a file URL (s3://, gs://, https://..., or a glob of them), read with fsspec by the
parsers a local file has, so its rows are quarantined and counted the same way.

Its identity is what the server says about each file (fsspec's `info()`): an ETag, a version id, a
checksum, a modification date and the size, whichever it gives. A changed remote file therefore makes
its load step stale. A server that gives none of them leaves the URL as the only key: `plan` says so."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import RecipeError
from .local import params  # noqa: F401  (a remote path reads the same keys of a source as a local one)
from .readers import Raw, capped, parquet, parse

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# what fsspec's filesystems report about a file that changes when its bytes change (http: the response
# headers; s3: ETag, VersionId, LastModified; gcs: generation, md5Hash, crc32c, updated; local: mtime)
_VERSION_FIELDS = ("ETag", "etag", "VersionId", "version_id", "generation", "Content-MD5", "md5Hash", "Digest",
                   "checksum", "crc32c", "Last-Modified", "LastModified", "last_modified", "mtime", "updated")
UNVERSIONED = "unversioned"   # the digest when the server says nothing: the URL alone keys the step


def is_remote(path: str) -> bool:
    return _SCHEME.match(path) is not None


def claims(source) -> bool:
    return source.path is not None and is_remote(source.path)


def owns(entry: str) -> bool:
    return is_remote(entry)


def files(source) -> tuple[str, ...]:
    return (source.path,)


# --- identity ------------------------------------------------------------------------------------------

def digest(entry: str, base_dir: Path, digests) -> str:
    """A digest of what the server says about each file the URL (or glob) names; UNVERSIONED when it
    says nothing that changes with the bytes; `unreachable: ...` when it cannot be asked now."""
    try:
        fs, found = _files(entry)
        said = [(full, _version(fs.info(path))) for full, path in found]
    except Exception as e:   # RecipeError, and each filesystem's own types (OSError, aiohttp, botocore...)
        return f"unreachable: {_one_line(e)}"
    if not any(v for _, v in said):
        return UNVERSIONED
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()


def note(entry: str, value: str) -> str | None:
    """What `plan` says when the digest could not follow the file's bytes."""
    if value == UNVERSIONED:
        return (f"{entry}: the server gives no ETag, version, checksum, date or size, so the URL alone keys "
                "this step and a changed file is not seen; rerun it with --force")
    if value.startswith("unreachable"):
        return f"{entry}: cannot tell whether the file changed ({value})"
    return None


def _version(info: dict[str, Any]) -> dict[str, str]:
    out = {k: str(info[k]) for k in _VERSION_FIELDS if info.get(k) not in (None, "")}
    if info.get("size") is not None:
        out["size"] = str(info["size"])
    return out


# --- rows ------------------------------------------------------------------------------------------------

def rows(name: str, source, base_dir: Path, seed: int) -> Iterator[Raw]:
    """The rows of every file the URL names, at most `limit` of them (bad rows count too)."""
    fs, found = _files(source.path)
    return capped((_read(full, (lambda p=p: fs.open(p, "rb"))) for full, p in found), source.limit)


def _read(url: str, opener: Callable[[], Any]) -> Iterator[Raw]:
    """A file that cannot be fetched is one quarantined entry, like a local file that cannot be read."""
    try:
        if url.endswith(".parquet"):
            return parquet(opener, url)
        with opener() as f:
            data = f.read()
    except Exception as e:   # each filesystem raises its own types (OSError, aiohttp/botocore errors, ...)
        return iter([Raw(url, None, None, None, ("unreadable_file", f"{type(e).__name__}: {e}"))])
    return parse(url.rsplit("/", 1)[-1].split("?", 1)[0], data, url)


def _files(url: str) -> tuple[Any, list[tuple[str, str]]]:
    """(fsspec filesystem, [(full url, its path on the filesystem)]) for the files a URL or glob names."""
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise RecipeError(f"reading {url} needs fsspec: pip install fsspec") from None
    protocol = url.split("://", 1)[0]
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as e:
        impl = known_implementations.get(protocol, {})
        package = impl.get("class", "").split(".")[0]
        package = package if package and package != "fsspec" else None
        # fsspec's registry names the package (s3fs, gcsfs, adlfs...); its own http filesystem says what it needs
        hint = f"pip install {package}" if package else _one_line(e).split(": ", 1)[-1]
        raise RecipeError(f"reading {url}: {protocol}:// needs a filesystem package that is not installed: "
                          f"{hint}") from None
    except ValueError as e:
        raise RecipeError(f"reading {url}: {_one_line(e)}") from None
    if not any(c in path for c in "*?["):
        return fs, [(url, path)]
    try:
        return fs, [(fs.unstrip_protocol(p), p) for p in sorted(fs.glob(path))]
    except Exception as e:   # every filesystem raises its own types
        raise RecipeError(f"cannot list {url}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
