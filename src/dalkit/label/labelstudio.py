"""Label Studio round trip: the current batch out as tasks (image reference + the model's guess as a
prediction), Label Studio's JSON export back in as labels.

A task carries the item id in ``data.item``, so ids survive the trip whatever Label Studio numbers its
tasks.  On import the latest annotation of each task wins (by ``updated_at``, then ``created_at``, then
``id``); cancelled (skipped) annotations and annotations without a choice are ignored; every choice is
checked against the project's classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dalkit.checks import short
from dalkit.errors import DatasetFormatError, LabelError

if TYPE_CHECKING:
    from dalkit.label.project import Project

FROM_NAME, TO_NAME = "label", "image"


def labeling_config(classes: list[str]) -> str:
    """The Label Studio labeling interface for a project: one image, one single choice."""
    choices = "".join(f'<Choice value="{_xml(c)}"/>' for c in classes)
    return (f'<View><Image name="{TO_NAME}" value="$image"/>'
            f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single">{choices}</Choices></View>')


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def batch_tasks(project: Project, image_url: str | None = None) -> list[dict[str, Any]]:
    """Label Studio tasks for the project's current batch.

    Args:
        image_url: prefix of the image URL; the item's path (URL-quoted) is appended.  Default: Label
            Studio's local-file URL ``/data/local-files/?d=`` + the absolute path (start Label Studio with
            ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and a document root above the images).
    Raises:
        LabelError: the project has no batch yet.
    """
    batch = project.current_batch()
    if batch is None:
        raise LabelError("the project has no batch yet; run dalkit label next first")
    root = Path(project.source["path"])
    root = root if project.source["kind"] == "folder" else root.parent
    tasks = []
    for j, item in enumerate(batch["items"]):
        it = project.items[project.index[item]]
        if image_url is None:
            url = "/data/local-files/?d=" + quote(str((root / it.path).resolve()).lstrip("/"))
        else:
            url = image_url + quote(it.path)
        task: dict[str, Any] = {"data": {"image": url, "item": item, "path": it.path}}
        if batch.get("guess") is not None:
            guess, score = project.classes[batch["guess"][j]], float(batch["confidence"][j])
            task["predictions"] = [{
                "model_version": f"dalkit-{project.config.method}-round{batch.get('round')}",
                "score": score,
                "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "value": {"choices": [guess]}, "score": score}],
            }]
        tasks.append(task)
    return tasks


def _choice(annotation: dict[str, Any]) -> list[str] | None:
    for r in annotation.get("result") or []:
        if isinstance(r, dict) and r.get("type") == "choices":
            choices = (r.get("value") or {}).get("choices")
            if isinstance(choices, list):
                return choices
    return None


def read_export(path: str | Path, classes: list[str]) -> list[tuple[int, str, str]]:
    """(task number, item id, label) from a Label Studio JSON export (a list of tasks).

    Raises:
        DatasetFormatError: not a Label Studio JSON export.
        LabelError: a task without ``data.item``, a choice not among ``classes``, several choices.
    """
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else short(str(exc))[1:-1]
        raise DatasetFormatError(f"cannot read Label Studio export {path}: {reason}") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DatasetFormatError(f"{path} is not a Label Studio JSON export (a list of tasks)")
    rows = []
    for k, task in enumerate(tasks, start=1):
        done = [a for a in task.get("annotations") or []
                if isinstance(a, dict) and not a.get("was_cancelled") and _choice(a)]
        if not done:
            continue  # not annotated, skipped or cancelled
        item = (task.get("data") or {}).get("item")
        if not isinstance(item, str):
            raise LabelError(f"{path} task {task.get('id', k)} has no data.item (the dalkit item id); "
                             "import tasks exported by dalkit label export --format label-studio")
        latest = max(done, key=lambda a: (str(a.get("updated_at") or ""), str(a.get("created_at") or ""),
                                          a.get("id") if isinstance(a.get("id"), int) else -1))
        choices = _choice(latest)
        if len(choices) != 1:
            raise LabelError(f"{path} task {task.get('id', k)}: {len(choices)} choices {short(choices)}; "
                             "each task needs exactly one class")
        if choices[0] not in classes:
            raise LabelError(f"{path} task {task.get('id', k)}: unknown class {short(choices[0])}; the "
                             f"classes are {', '.join(classes)}")
        rows.append((k, item, choices[0]))
    return rows
