"""A local HTTP server standing in for Slack and webhook receivers: it records every request
and answers from a per-path script."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when the server received the request
    name: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class StandIn:
    """``POST /<name>``: answers from a per-name script (then 200 "ok"), records every request."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.always: dict[str, int] = {}
        app = Starlette(routes=[Route("/{name:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def _handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        script = self.scripts.get(name)
        if script:
            status, headers = script.pop(0)
        else:
            status, headers = self.always.get(name, 200), {}
        self.hits.append(Hit(time.monotonic(), name, status, dict(request.headers), body))
        text = {200: "ok", 404: "channel_not_found", 429: "rate_limited"}.get(status, "error")
        return PlainTextResponse(text, status_code=status, headers=headers)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    def url(self, name: str) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/{name}"

    def of(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.name == name]
