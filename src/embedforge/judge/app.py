"""The FastAPI app of ``embedforge judge``: the page and a small JSON API over a :class:`JudgeSession`."""

from __future__ import annotations

from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.judge.page import PAGE
from embedforge.judge.session import JudgeSession


def create_app(session: JudgeSession):
    """The app: ``GET /`` the page; ``GET /api/state``; ``POST /api/queries`` ``{text, passage}``,
    ``/api/judge`` ``{qid, did, grade}``, ``/api/undo``, ``/api/score``; ``GET /api/passage``.
    A bad request is ``400 {"error": "..."}``."""
    from fastapi import Body, FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="embedforge judge", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(EmbedforgeError)
    def _bad(_request: Any, exc: EmbedforgeError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return session.view()

    @app.post("/api/queries")
    def add_query(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return session.add_query(str(body.get("text", "")), body.get("passage"))

    @app.post("/api/judge")
    def judge(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        try:
            grade = int(body["grade"])
            qid, did = str(body["qid"]), str(body["did"])
        except (KeyError, TypeError, ValueError):
            raise EmbedforgeError("a judgement needs qid, did and an integer grade") from None
        return session.judge(qid, did, grade)

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        return session.undo()

    @app.get("/api/passage")
    def passage() -> dict[str, str]:
        return session.passage()

    @app.post("/api/score")
    def score() -> dict[str, Any]:
        return session.score()

    return app
