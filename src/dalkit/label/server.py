"""The labeling page's server: a thin HTTP layer over :class:`~dalkit.label.project.Project`.

Every request needs the token printed in the URL (query ``token=`` or header ``X-Dalkit-Token``);
without it the answer is 401.  It listens on 127.0.0.1 unless ``--host`` says otherwise, and even then
the token is required.  A label is answered 200 only after its journal entry is fsynced, so the page
confirms exactly what is on disk.  "Train and query next" runs the round in a background thread (torch
releases the interpreter lock in its kernels, so the page keeps answering); its stage and progress
(epoch k of E, then the query) are polled.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from dalkit.checks import short
from dalkit.errors import DalkitError
from dalkit.label.project import Project

STATIC = Path(__file__).parent / "static"
THUMB_SIDE = 160


TRAIN_SHARE = 0.8
"""The part of a round's progress bar given to training when no earlier round measured the split."""


class RoundWorker:
    """Runs one round at a time in a background thread and reports its stage and progress.

    ``status["progress"]`` is the round's position, fed by :func:`~dalkit.experiment.round.run_round`'s
    progress callback: ``phase`` (starting, train, query, done), ``epoch`` / ``epochs`` (k of E,
    ``epochs`` None until training starts or for the random initial batch) and ``fraction`` of the
    bar in [0, 1], non-decreasing: training fills the share of the round the last trained round spent
    training (``train_s / (train_s + query_s)`` from rounds.jsonl; :data:`TRAIN_SHARE` before any),
    the query the rest.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.share = TRAIN_SHARE
        self.status: dict[str, Any] = {"running": False, "stage": "idle", "error": None, "started": None,
                                       "finished": None, "batch": None, "progress": None}

    def start(self, budget: int | None) -> bool:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return False
            self.status = {"running": True, "stage": "starting", "error": None, "started": time.time(),
                           "finished": None, "batch": None,
                           "progress": {"phase": "starting", "epoch": 0, "epochs": None, "fraction": 0.0}}
            self.thread = threading.Thread(target=self._run, args=(budget,), daemon=True, name="dalkit-round")
            self.thread.start()
            return True

    def _stage(self, text: str) -> None:
        self.status["stage"] = text

    def _progress(self, phase: str, done: int, total: int) -> None:
        last = self.status["progress"]
        if phase == "train":
            self.status["progress"] = {"phase": "train", "epoch": done, "epochs": total,
                                       "fraction": round(self.share * done / total, 4)}
        else:  # the query: the training share is full, the rest fills when the batch is picked
            frac = self.share + (1 - self.share) * done / total
            self.status["progress"] = {"phase": "query", "epoch": last["epoch"], "epochs": last["epochs"],
                                       "fraction": round(frac, 4)}

    def _measured_share(self) -> float:
        """The last trained round's training share of its time (TRAIN_SHARE before any)."""
        for b in reversed(self.project.batches()):
            train, query = b.get("train_s"), b.get("query_s")
            if b.get("round") is not None and train is not None and query is not None and train + query > 0:
                return min(0.95, max(0.05, train / (train + query)))
        return TRAIN_SHARE

    def _run(self, budget: int | None) -> None:
        try:
            self.share = self._measured_share()
            batch = self.project.next_batch(budget, on_stage=self._stage, on_progress=self._progress)
            last = self.status["progress"]
            self.status.update(batch=batch["batch"], stage="done",
                               progress={"phase": "done", "epoch": last["epoch"], "epochs": last["epochs"],
                                         "fraction": 1.0})
        except DalkitError as exc:
            self.status.update(error=str(exc), stage="failed")
        except Exception as exc:  # noqa: BLE001 - shown on the page, printed in full here
            traceback.print_exc()
            self.status.update(error=f"{type(exc).__name__}: {short(str(exc))[1:-1]}", stage="failed")
        finally:
            self.status.update(running=False, finished=time.time())

    def snapshot(self) -> dict[str, Any]:
        out = dict(self.status)
        out["progress"] = dict(out["progress"]) if out.get("progress") else None
        if out["started"] is not None:
            out["elapsed_s"] = round((out["finished"] or time.time()) - out["started"], 1)
        return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(project_dir: str | Path, token: str, static_dir: Path = STATIC) -> Starlette:
    """The ASGI app of a project's labeling page (``static_dir``: where ``/static/...`` is served from)."""
    project = Project(project_dir)
    worker = RoundWorker(project)
    # warm up what the first page load needs (the journal's state, Pillow's codecs), so a person's first
    # batch of thumbnails is not also the server's start-up
    project.status()
    if project.items:
        project.image_bytes(project.items[0].item, THUMB_SIDE)

    def authorised(request: Request) -> bool:
        given = request.headers.get("x-dalkit-token") or request.query_params.get("token") or ""
        return hmac.compare_digest(given.encode(), token.encode())

    def guarded(handler):  # noqa: ANN001, ANN202 - a Starlette endpoint
        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return _error(401, "missing or wrong token: open the URL that dalkit label serve printed")
            try:
                return await handler(request)
            except DalkitError as exc:
                return _error(400, str(exc))
        return endpoint

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise DalkitError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise DalkitError("the request body must be a JSON object")
        return data

    def field(data: dict[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str):
            raise DalkitError(f"the request needs {name!r} as a string")
        return value

    def batch_view() -> dict[str, Any] | None:
        batch = project.current_batch()
        if batch is None:
            return None
        state = project.state()
        items = []
        for j, item in enumerate(batch["items"]):
            st = state.get(item)
            it = project.items[project.index[item]] if item in project.index else None
            items.append({
                "item": item, "path": it.path if it else None,
                "guess": project.classes[batch["guess"][j]] if batch.get("guess") else None,
                "confidence": batch["confidence"][j] if batch.get("confidence") else None,
                "label": st.label if st and not st.ood else None, "ood": bool(st and st.ood),
            })
        return {"batch": batch["batch"], "round": batch.get("round"), "items": items,
                "val_acc": batch.get("val_acc")}

    async def index(request: Request) -> Response:
        # the script is fetched with the token too (every path needs it)
        html = (static_dir / "index.html").read_text(encoding="utf-8").replace(
            'src="static/app.js"', f'src="static/app.js?token={quote(token)}"')
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["path"]
        target = safe_path(static_dir, name)
        if target is None:
            return _error(404, f"no such file: {short(name)[1:-1]}")
        return FileResponse(target)

    async def state(request: Request) -> Response:
        return JSONResponse({"classes": project.classes, "batch": batch_view(), "status": project.status(),
                             "round": worker.snapshot(), "method": project.config.method})

    async def image(request: Request) -> Response:
        item = request.path_params["item"]
        if item not in project.index:
            return _error(404, f"unknown item {short(item)}")
        data, suffix = project.image_bytes(item, THUMB_SIDE)
        media = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                 ".bmp": "image/bmp", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff"}
        return Response(data, media_type=media.get(suffix, "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=3600"})

    async def label(request: Request) -> Response:
        data = await body(request)
        entry = project.label(field(data, "item"), field(data, "label"), "page")
        return JSONResponse({"ok": True, "seq": entry["seq"], "item": entry["item"], "label": entry["label"]})

    async def ood(request: Request) -> Response:
        data = await body(request)
        entry = project.mark_ood(field(data, "item"), "page")
        return JSONResponse({"ok": True, "seq": entry["seq"], "item": entry["item"], "ood": True})

    async def undo(request: Request) -> Response:
        data = await body(request)
        entry = project.undo(field(data, "item"), "page")
        st = project.state().get(entry["item"])
        return JSONResponse({"ok": True, "seq": entry["seq"], "item": entry["item"],
                             "label": st.label if st and not st.ood else None, "ood": bool(st and st.ood)})

    async def next_round(request: Request) -> Response:
        data = await body(request)
        budget = data.get("budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise DalkitError(f"budget must be a positive integer, got {short(budget)}")
        if not worker.start(budget):
            return _error(409, "a round is already running")
        return JSONResponse({"ok": True, "round": worker.snapshot()}, status_code=202)

    async def round_status(request: Request) -> Response:
        return JSONResponse(worker.snapshot())

    async def selection_map(request: Request) -> Response:
        from dalkit.label.selection_map import project_map_png

        return Response(project_map_png(project), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", guarded(index)),
        Route("/static/{path:path}", guarded(static)),
        Route("/api/state", guarded(state)),
        Route("/api/image/{item}", guarded(image)),
        Route("/api/label", guarded(label), methods=["POST"]),
        Route("/api/ood", guarded(ood), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
        Route("/api/next", guarded(next_round), methods=["POST"]),
        Route("/api/round", guarded(round_status)),
        Route("/api/map.png", guarded(selection_map)),
    ]
    app = Starlette(routes=routes)
    app.state.project = project
    app.state.worker = worker
    return app


def safe_path(root: Path, name: str) -> Path | None:
    """``root / name`` if it is a regular file inside ``root`` (no ``..``, no absolute path, no symbolic
    link leading out), else None."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("..", "", ".") for p in parts):
        return None
    target = (root / name).resolve()
    try:
        target.relative_to(root.resolve())
    except ValueError:
        return None
    return target if target.is_file() else None


def serve(project_dir: str | Path, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None) -> None:
    """Serve the labeling page until interrupted; prints the URL with its token."""
    import uvicorn

    token = token or secrets.token_urlsafe(16)
    app = create_app(project_dir, token)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"dalkit label: open http://{shown}:{port}/?token={token}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
