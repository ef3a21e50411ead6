"""A local stand-in for the Hugging Face Hub's file-download protocol, for tests.

The hub is unreachable from the test machines, and a mock of the client would test nothing of it. This serves
files over real HTTP the way the hub does, so `hf_hub_download(..., endpoint=hub.endpoint)` runs unchanged.

What huggingface_hub 2.4.0 does on `/{repo_id}/resolve/{revision}/{filename}`, and so what this imitates:
- HEAD for metadata: X-Repo-Commit and an ETag are required (X-Linked-Etag preferred); size comes from
  X-Linked-Size, else Content-Length. The ETag names the cache blob: the file's sha256, as for LFS files.
- GET for the body; after a dropped connection it retries, with `Range: bytes=N-` once it has written data.
- 404s are told apart by X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound.
Left out on purpose: Xet headers (X-Xet-Hash, Link rel="xet-auth"), which switch the client to Xet; and the
hub's 302 to a CDN, since the client follows same-host redirects on HEAD and wants the metadata at the target.
Every response closes its connection, so no pooled keep-alive socket outlives the server.

Set HF_HUB_DISABLE_TELEMETRY=1 before importing huggingface_hub: otherwise building the User-Agent makes one
GET to `{HF_ENDPOINT}/api/agent-harnesses` (huggingface.co by default; `endpoint=` does not apply to it).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

# "cut": every GET body stops at the file's midpoint and the connection closes, so retries never get past
#        it: the client retries 5 times, 1 s apart, then raises httpx2.RemoteProtocolError.
# "cut_once": only the first GET is cut; the client retries (with Range if the file is over 10 MiB) and succeeds.
# "short": GET declares and sends half the body; the client fails its size check at once with OSError.
Failure = Literal["cut", "cut_once", "short"] | None
FileKey = tuple[str, str, str]  # (repo_id, revision, filename)

_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 64 * 1024


def commit_for(repo_id: str, revision: str) -> str:
    """The fixed commit a revision resolves to; a 40-hex revision is already a commit."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HubStandIn:
    """Serves `{(repo_id, revision, filename): local path}` on 127.0.0.1 in a background thread."""

    def __init__(self, files: Mapping[FileKey, Path], failure: Failure = None) -> None:
        self.files = {key: Path(path) for key, path in files.items()}
        self.etags = {key: _sha256(path) for key, path in self.files.items()}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.ranges: list[str] = []  # Range headers received, to assert resumes
        self.failure: Failure = failure
        self._cut_done = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def set_failure(self, mode: Failure) -> None:
        self.failure, self._cut_done = mode, False

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    hub: HubStandIn

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-body (or our own "cut") is expected, not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def _route(self) -> None:
        hub = self.server.hub
        hub.requests.append((self.command, self.path))
        match = _RESOLVE.match(urlsplit(self.path).path)
        if not match:  # e.g. /api/...: a bare 404, which the client reports as HfHubHTTPError
            return self._error(None, "Not Found")
        repo_id, revision, filename = match[1], unquote(match[2]), unquote(match[3])
        commit = commit_for(repo_id, revision)
        known = [key for key in hub.files if key[0] == repo_id]
        if not known:
            return self._error("RepoNotFound", "Repository not found")
        if all(commit_for(repo_id, key[1]) != commit for key in known):
            return self._error("RevisionNotFound", f"Invalid rev id: {revision}")
        key = next((k for k in known if k[2] == filename and commit_for(repo_id, k[1]) == commit), None)
        if key is None:  # the hub names the commit here; the client caches the miss under .no_exist/
            return self._error("EntryNotFound", "Entry not found", commit)
        self._serve(hub, key, commit)

    do_GET = do_HEAD = _route

    def _serve(self, hub: HubStandIn, key: FileKey, commit: str) -> None:
        path = hub.files[key]
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        if (range_header := self.headers.get("Range")) is not None:
            hub.ranges.append(range_header)
            match = _RANGE.match(range_header.strip())
            start, end = (int(match[1]), min(int(match[2] or size - 1), size - 1)) if match else (size, 0)
            if start >= size or end < start:
                return self._reply(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            status = 206
        length = sent = end - start + 1
        if self.command == "GET":
            if hub.failure == "short":
                length = sent = length // 2
            elif hub.failure == "cut" or (hub.failure == "cut_once" and not hub._cut_done):
                hub._cut_done = True
                sent = max(0, min(length, size // 2 - start))
        etag = f'"{hub.etags[key]}"'
        headers = {
            "X-Repo-Commit": commit,
            "ETag": etag,
            "X-Linked-Etag": etag,
            "X-Linked-Size": str(size),
            "Content-Length": str(length),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._reply(status, headers)
        if self.command == "GET":
            with path.open("rb") as f:
                f.seek(start)
                while sent > 0 and (block := f.read(min(_CHUNK, sent))):
                    self.wfile.write(block)
                    sent -= len(block)

    def _error(self, code: str | None, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"X-Error-Message": message, "Content-Type": "application/json", "Content-Length": str(len(body))}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._reply(404, headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reply(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
