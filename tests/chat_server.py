"""An OpenAI-compatible `/chat/completions` endpoint for tests: each reply is a Python function of the
request, so a test states what a model would answer and checks what embedrl makes of it."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


def text_of(body: dict[str, Any]) -> str:
    """The text of the request's last message (a plain string, or its text parts joined by newlines)."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def choices(texts: list[str]) -> dict[str, Any]:
    return {"choices": [{"index": i, "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)]}


def first_token(probabilities: dict[str, float]) -> dict[str, Any]:
    """A one-token reply whose top_logprobs give these tokens these probabilities."""
    top = [{"token": token, "logprob": math.log(p)} for token, p in probabilities.items()]
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                         "logprobs": {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                                   "top_logprobs": top}]}}]}


class ChatServer:
    """`with ChatServer(reply) as server:` serves `reply(request body) -> response JSON` at `server.url`;
    `server.requests` keeps every request body."""

    def __init__(self, reply: Callable[[dict[str, Any]], dict[str, Any]]):
        self.reply, self.requests = reply, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                payload = json.dumps(outer.reply(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
