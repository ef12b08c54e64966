"""A local stand-in of the Hugging Face Hub HTTP API: repo creation, preupload and commits.

Enough of the API for ``HfApi.create_repo`` + ``HfApi.upload_folder`` with small files (sent
inline in the commit, "regular" upload mode). Records every request and the files that arrive.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.validated: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append(("POST", self.path, dict(self.headers)))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(body)
                    repo = (
                        f"{req['organization']}/{req['name']}"
                        if req.get("organization")
                        else req["name"]
                    )
                    hub.repos[repo] = req
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if parts == [
                    "api",
                    "validate-yaml",
                ]:  # the card's metadata, checked before a commit
                    meta = yaml.safe_load(json.loads(body)["content"].split("---")[1])
                    if not isinstance(meta, dict):
                        return self._reply(400, {"error": "metadata is not a mapping"})
                    hub.validated.append(meta)
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:2] == ["api", "models"] and parts[4:5] == ["preupload"]:
                    files = json.loads(body)["files"]
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                    return self._reply(200, {"files": modes, "commitOid": "0" * 40})
                if parts[:2] == ["api", "models"] and parts[4:5] == ["commit"]:
                    repo = "/".join(parts[2:4])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            hub.files.setdefault(repo, {})[value["path"]] = base64.b64decode(
                                value["content"]
                            )
                    url = f"{hub.url}/{repo}/commit/{'a' * 40}"
                    return self._reply(
                        200, {"commitUrl": url, "commitOid": "a" * 40, "success": True}
                    )
                return self._reply(404, {"error": f"fake hub: no POST {self.path}"})

            def do_GET(self) -> None:  # noqa: N802
                hub.requests.append(("GET", self.path, dict(self.headers)))
                self._reply(404, {"error": f"fake hub: no GET {self.path}"})

        return Handler
