"""A loopback Hugging Face Hub: the subset of the Hub's HTTP API that `huggingface_hub` and transformers use to create
repositories, commit files and download them by revision (hf-conventions.md §5), served from memory on 127.0.0.1.

Every commit is kept, so any earlier commit sha stays loadable as a ``revision``. Missing repositories, revisions and
files are answered like the Hub (status + ``X-Error-Code``), so the real client raises its real errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

_API_REPO = ("/api/models/", "/api/datasets/", "/api/spaces/")


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    branches: dict[str, str] = field(default_factory=dict)  # branch -> sha
    history: list[str] = field(default_factory=list)  # shas, oldest first

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class LoopbackHub:
    """In-memory repositories plus the request log; ``url`` is what ``HF_ENDPOINT`` must point to."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LoopbackHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commits(self, repo_id: str) -> list[str]:
        """Commit shas of ``repo_id``, oldest first (the first is the repository's creation)."""
        return list(self.repos[repo_id].history)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return dict(repo.commits[sha])

    # ------------------------------------------------------------------ state changes (under the lock)

    def create(self, repo_id: str) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            repo = _Repo()
            self._commit(repo, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
            self.repos[repo_id] = repo
            return True

    def commit(self, repo_id: str, branch: str, added: dict[str, bytes], deleted: list[str]) -> str:
        with self._lock:
            repo = self.repos[repo_id]
            files = dict(repo.commits[repo.branches[branch]])
            for path in deleted:
                files = {key: value for key, value in files.items() if key != path and not key.startswith(path + "/")}
            files.update(added)
            return self._commit(repo, branch, files)

    @staticmethod
    def _commit(repo: _Repo, branch: str, files: dict[str, bytes]) -> str:
        digest = hashlib.sha1(f"{len(repo.history)}:{branch}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        repo.history.append(sha)
        return sha


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _handler(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        # -------------------------------------------------------------- plumbing

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _repo(self, repo_id: str) -> _Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return repo

        def _revision(self, repo: _Repo, revision: str) -> str | None:
            sha = repo.resolve(revision)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
            return sha

        def _dispatch(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if path == "/api/repos/create" and self.command == "POST":
                return self._create_repo()
            if path == "/api/validate-yaml" and self.command == "POST":
                return self._validate_yaml()
            if path.startswith(_API_REPO):
                return self._api(path)
            if "/resolve/" in path and self.command in ("GET", "HEAD"):
                return self._resolve(path)
            self._error(404, "NotFound", f"{self.command} {path} is not served by the loopback Hub")

        do_GET = do_HEAD = do_POST = _dispatch

        # -------------------------------------------------------------- endpoints

        def _create_repo(self) -> None:
            payload = json.loads(self._body())
            repo_id = (
                f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            )
            if not hub.create(repo_id):
                return self._json(409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"})
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _validate_yaml(self) -> None:
            content = json.loads(self._body())["content"]
            if content.startswith("---"):
                header = content.split("---", 2)[1]
                try:
                    if not isinstance(yaml.safe_load(header) or {}, dict):
                        raise yaml.YAMLError("the metadata block is not a mapping")
                except yaml.YAMLError as error:
                    return self._json(400, {"errors": [{"message": str(error)}]})
            self._json(200, {})

        def _api(self, path: str) -> None:
            # /api/models/<org>/<name>/<action>/<revision>[/<sub path>]
            parts = path.split("/")[3:]
            repo_id, action, rest = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else ""), parts[3:]
            repo = self._repo(repo_id)
            if repo is None:
                return
            revision = rest[0] if rest else "main"
            sha = self._revision(repo, revision)
            if sha is None:
                return
            files = repo.commits[sha]
            if action == "preupload":
                wanted = json.loads(self._body())["files"]
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in wanted]
                return self._json(200, {"files": answer, "commitOid": sha})
            if action == "commit":
                return self._commit(repo_id, unquote(revision), repo)
            if action in ("", "revision"):
                siblings = [{"rfilename": name} for name in sorted(files)]
                return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "siblings": siblings})
            if action == "tree":
                prefix = "/".join(rest[1:])
                entries = [
                    {"type": "file", "path": name, "size": len(data), "oid": _git_blob_oid(data)}
                    for name, data in sorted(files.items())
                    if not prefix or name.startswith(prefix.rstrip("/") + "/")
                ]
                if prefix and not entries:
                    return self._error(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
                return self._json(200, entries)
            self._error(404, "NotFound", f"unknown API action {action!r}")

        def _commit(self, repo_id: str, branch: str, repo: _Repo) -> None:
            if branch not in repo.branches:
                return self._error(404, "RevisionNotFound", f"Branch {branch} does not exist")
            added: dict[str, bytes] = {}
            deleted: list[str] = []
            for line in self._body().splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    added[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"].rstrip("/"))
                elif item["key"] != "header":
                    return self._json(400, {"error": f"unsupported commit operation {item['key']!r}"})
            sha = hub.commit(repo_id, branch, added, deleted)
            self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha})

        def _resolve(self, path: str) -> None:
            head, filename = path.lstrip("/").split("/resolve/", 1)
            if head.startswith(("datasets/", "spaces/")):
                head = head.split("/", 1)[1]
            revision, filename = filename.split("/", 1)
            repo = self._repo(head)
            if repo is None:
                return
            sha = self._revision(repo, revision)
            if sha is None:
                return
            content = repo.commits[sha].get(filename)
            if content is None:
                self._json(
                    404,
                    {"error": f"Entry not found: {filename}"},
                    {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha},
                )
                return
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob_oid(content)}"'}
            self._send(200, content, {"Content-Type": "application/octet-stream", **headers})

    return Handler
