"""Run with Label Studio's own interpreter (its virtual environment, `make labelstudio`): through
label-studio-sdk, create a project with dalkit's labeling interface, import dalkit's tasks, post the
annotations a person would (answers.json: item -> list of choices in order; "SKIP" = a skipped task),
then download Label Studio's JSON export.

    python labelstudio_client.py URL TOKEN TASKS.json CONFIG.xml ANSWERS.json EXPORT.json
"""

from __future__ import annotations

import json
import sys
import time

import httpx
from label_studio_sdk import LabelStudio


def main(url: str, token: str, tasks_path: str, config_path: str, answers_path: str, out: str) -> None:
    ls = LabelStudio(base_url=url, api_key=token)
    with open(config_path) as fh:
        config = fh.read()
    project = ls.projects.create(title="dalkit round trip", label_config=config)
    with open(tasks_path) as fh:
        tasks = json.load(fh)
    ls.projects.import_tasks(id=project.id, request=tasks)
    with open(answers_path) as fh:
        answers = json.load(fh)
    for task in ls.tasks.list(project=project.id):
        for choice in answers.get(task.data["item"], []):
            if choice == "SKIP":
                ls.annotations.create(id=task.id, result=[], was_cancelled=True)
            else:
                ls.annotations.create(id=task.id, result=[{
                    "from_name": "label", "to_name": "image", "type": "choices",
                    "value": {"choices": [choice]}}])
            time.sleep(0.01)  # distinct timestamps: the later annotation is the newer one
    r = httpx.get(f"{url}/api/projects/{project.id}/export", params={"exportType": "JSON"},
                  headers={"Authorization": f"Token {token}"}, timeout=120)
    r.raise_for_status()
    with open(out, "w") as fh:
        fh.write(r.text)


if __name__ == "__main__":
    main(*sys.argv[1:7])
