"""Names from outside (partition keys, job names, vendor ids) made into safe, reversible file names.

Dagster accepts dynamic partition keys such as ``../escape`` or ``/absolute/key``, and a vendor
answers with ids we do not control; joined onto a folder unchanged, either writes outside it.
Every such name goes through :func:`safe_file_name`: letters, digits, ``-`` and ``_`` stay as
they are (so dates and shard names read unchanged on disk), every other byte of its UTF-8 is
written ``%XX``, as in a URL. A name of only safe characters cannot be ``.``, ``..``, absolute
or contain a separator, and :func:`name_from_file_name` gives the original back. A name too long
for a file system keeps a readable head and a digest of the whole instead (not reversible; the
ledger and the run's metadata hold the key itself).
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from batch_pipelines.core.errors import InvalidInputError

_SAFE = re.compile(r"[A-Za-z0-9_-]")
# File systems allow 255 bytes per name; leave room for suffixes such as ".parquet" and ".part".
MAX_FILE_NAME = 200
_DIGEST_CHARS = 32


def safe_file_name(name: str) -> str:
    """``name`` as one path component that stays inside its folder (``../x`` -> ``%2E%2E%2Fx``)."""
    if not name:
        raise InvalidInputError("an empty name cannot become a file name (an empty partition key or job name?)")
    escaped = "".join(ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in _utf8(ch)) for ch in name)
    if len(escaped) <= MAX_FILE_NAME:
        return escaped
    head = escaped[: MAX_FILE_NAME - _DIGEST_CHARS - 1]
    cut = head.rfind("%", len(head) - 2)
    if cut != -1:
        head = head[:cut]  # never end on half of a %XX
    return f"{head}~{hashlib.sha256(_utf8(name)).hexdigest()[:_DIGEST_CHARS]}"


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (not valid UTF-8) still gets a name rather than a crash.
    return text.encode("utf-8", "surrogatepass")


def name_from_file_name(file_name: str) -> str:
    """The original name of a :func:`safe_file_name` result (one that was not shortened)."""
    return unquote(file_name, errors="surrogatepass")
