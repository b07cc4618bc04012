"""A small Hugging Face Hub on 127.0.0.1: the part of its HTTP API that huggingface_hub's downloads use.

What huggingface_hub 2.x asks for when it downloads a model repository, and how this server answers:

- ``GET /api/models/{repo}/revision/{rev}``: ``{"id", "sha"}``; ``snapshot_download`` resolves a branch to a commit.
- ``GET /api/models/{repo}/tree/{rev}?recursive=...``: every file with its size, git oid and, for LFS files, the
  sha256 (one page, no ``Link`` header).
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: small git files answer 200 with ``ETag`` (the git blob sha1),
  ``X-Repo-Commit`` and ``Content-Length``. LFS files answer 302 to the CDN with ``X-Linked-Etag`` (their sha256),
  ``X-Linked-Size`` and ``X-Repo-Commit``, as the Hub does. Unknown revisions and files answer 404 with the Hub's
  ``X-Error-Code``.
- ``HEAD``/``GET /cdn/{sha256}``: the bytes, honouring ``Range: bytes=a-[b]`` with 206 and ``Content-Range``.

The CDN is this same server under the name ``localhost``: huggingface_hub sees another host, so it takes the file's
metadata from the redirect and downloads from the ``Location``, as it does against the real CDN.

Faults for tests: ``cut_first_get[path] = n`` closes the connection after ``n`` body bytes on the first GET of that
file; ``serve_instead[path] = data`` serves other bytes than the sha256 it advertises. ``requests`` records every
request as a :class:`Seen`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

#: Files stored in git rather than LFS (the Hub's default .gitattributes sends the model formats to LFS).
GIT_SUFFIXES = (".json", ".md", ".txt", ".gitattributes")
COMMIT = "d1770d1770d1770d1770d1770d1770d1770d1770"


def git_blob_sha1(data: bytes) -> str:
    """The oid git gives a blob (what the Hub sends as the ETag of a file stored in git)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    """The repository ``repo_id`` at one commit, served on ``url`` once :meth:`start` ran."""

    repo_id: str
    files: dict[str, bytes]
    branch: str = "main"
    commit: str = COMMIT
    cut_first_get: dict[str, int] = field(default_factory=dict)
    serve_instead: dict[str, bytes] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _cut_done: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_lfs(self, path: str) -> bool:
        return not path.endswith(GIT_SUFFIXES)

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def gets_of(self, path: str) -> list[Seen]:
        """The GET requests that fetched the bytes of ``path`` (from the CDN for LFS files)."""
        target = f"/cdn/{self.sha256(path)}" if self.is_lfs(path) else f"/{self.repo_id}/resolve/"
        return [s for s in self.requests if s.method == "GET" and s.path.startswith(target)
                and (self.is_lfs(path) or s.path.endswith("/" + path))]

    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------------------------------ answers

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append(Seen(method, path, range_header))

    def _tree(self) -> list[dict]:
        entries: dict[str, dict] = {}
        for path, data in sorted(self.files.items()):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha1(folder.encode()), "size": 0,
                                            "path": folder})
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if self.is_lfs(path):
                entry["lfs"] = {"oid": self.sha256(path), "size": len(data), "pointerSize": 134}
            entries[path] = entry
        return list(entries.values())

    def _cut_now(self, path: str) -> int | None:
        """The byte count after which to drop this GET, once per file."""
        with self._lock:
            if path in self.cut_first_get and path not in self._cut_done:
                self._cut_done.add(path)
                return self.cut_first_get[path]
        return None


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            log.debug("fake hub: %s", format % args)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        # ------------------------------------------------------------------------------------ routing

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub._record(self.command, path, self.headers.get("Range"))
            api = f"/api/models/{hub.repo_id}/"
            resolve = f"/{hub.repo_id}/resolve/"
            if path.startswith(api + "revision/"):
                revision = path[len(api + "revision/"):]
                if not self._known(revision):
                    return
                return self._json({"id": hub.repo_id, "sha": hub.commit,
                                   "siblings": [{"rfilename": p} for p in sorted(hub.files)]}, body)
            if path.startswith(api + "tree/"):
                revision = path[len(api + "tree/"):].split("/", 1)[0]
                if not self._known(revision):
                    return
                return self._json(hub._tree(), body)
            if path.startswith(resolve):
                revision, _, file = path[len(resolve):].partition("/")
                return self._resolve(revision, file, body)
            if path.startswith("/cdn/"):
                return self._cdn(path[len("/cdn/"):], body)
            self._empty(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})

        def _known(self, revision: str) -> bool:
            if revision in (hub.branch, hub.commit):
                return True
            self._empty(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": f"Invalid rev id: {revision}"})
            return False

        def _resolve(self, revision: str, file: str, body: bool) -> None:
            if not self._known(revision):
                return
            if file not in hub.files:
                self._empty(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                  "X-Repo-Commit": hub.commit})
                return
            data = hub.files[file]
            if hub.is_lfs(file):
                sha = hub.sha256(file)
                host = f"localhost:{hub.port}"
                self._empty(302, {"Location": f"http://{host}/cdn/{sha}", "X-Linked-Etag": f'"{sha}"',
                                  "X-Linked-Size": str(len(data)), "X-Repo-Commit": hub.commit,
                                  "ETag": f'"{git_blob_sha1(data)}"'})
                return
            self._bytes(file, data, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": hub.commit}, body)

        def _cdn(self, sha: str, body: bool) -> None:
            match = [p for p in hub.files if hub.is_lfs(p) and hub.sha256(p) == sha]
            if not match:
                self._empty(404, {})
                return
            file = match[0]
            self._bytes(file, hub.serve_instead.get(file, hub.files[file]), {"ETag": f'"{sha}"'}, body)

        # ------------------------------------------------------------------------------------ writing

        def _bytes(self, file: str, data: bytes, headers: Mapping[str, str], body: bool) -> None:
            start, end = 0, len(data) - 1
            status = 200
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                start, end = int(first), int(last) if last else len(data) - 1
                status = 206
            part = data[start:end + 1]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(part)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not body:
                return
            cut = hub._cut_now(file)
            if cut is not None:
                self.wfile.write(part[:cut])
                self.wfile.flush()
                self.close_connection = True  # the client sees fewer bytes than Content-Length promised
                return
            for offset in range(0, len(part), 1 << 20):
                self.wfile.write(part[offset:offset + (1 << 20)])

        def _json(self, payload: object, body: bool) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _empty(self, status: int, headers: Mapping[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
