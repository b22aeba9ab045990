"""People labelling in a live Label Studio, through ``label-studio-sdk`` (``pip install 'curate[labelstudio]'``).

:class:`LabelStudioAnnotator` finds its project by title (or creates it, with a ``Choices``
labelling config from the label set), pushes each batch once as tasks that carry curate's item id
in ``data.curate_id``, and on every later call pulls the finished annotations and yields them;
while any asked item is unanswered it raises :class:`~curate.annotate.base.AwaitingHumanLabels`,
so the loop pauses and ``curate resume`` continues. Existing tasks are found by ``curate_id``, so
no item is pushed twice, whatever restarts happen in between.

Each task gets one prediction (model version ``curate``):

* its ``result`` is the machine's label, with the machine's confidence as the result's
  ``score``, when one is known: the LLM's label of an item a hybrid annotator routed to people
  (:class:`RecordPredictions` collects them);
* its ``score`` is curate's acquisition score, negated: Label Studio's "Uncertainty sampling"
  queue (community edition) serves the *lowest* prediction score first, and curate acquires the
  highest first, so the negation makes the queue follow curate's order. The score itself is in
  ``data.curate_score`` and the item's place in curate's order in ``data.curate_rank`` (Data
  Manager columns). The loop hands each round's selection scores to :meth:`~LabelStudioAnnotator.use_scores`
  (of every annotator that has it, inside a hybrid too); where a strategy gives none (random), or
  for a round resumed after its selection, the request's order (curate's priority order) stands
  in: ``1 - rank / n``.

The server and token come from ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` (a legacy token,
or a personal access token). The token is never logged or shown in errors or ``repr``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from curate.annotate.base import Annotation, AwaitingHumanLabels
from curate.annotate.human import check_labels, import_answers
from curate.budget import Prices
from curate.errors import ConfigError, CurateError, DataError, MissingDependencyError, did_you_mean

__all__ = ["LabelStudioAnnotator", "LabelStudioError", "RecordPredictions", "label_config"]

logger = logging.getLogger(__name__)

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"
DEFAULT_URL = "http://localhost:8080"  # label-studio start's default
UNCERTAINTY = "Uncertainty sampling"
_OPTIONS = ("project", "url", "api_key_env", "model_version", "timeout")


class LabelStudioError(CurateError, RuntimeError):
    """The Label Studio server could not be reached or refused a request."""


def label_config(labels: Sequence[Any]) -> str:
    """The labelling config: the item's ``text`` and one single-choice ``label`` control (the same
    one that :func:`curate.annotate.human.export_batch` writes beside a Label Studio file)."""
    choices = "\n".join(f"    <Choice value={quoteattr(str(label))}/>" for label in labels)
    return (f'<View>\n  <Text name="text" value="$text"/>\n  <Choices name="label" toName="text" choice="single">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def _choices_of(config: str) -> list[str] | None:
    """The values of the ``label`` Choices control of a labelling config, or None if it has none."""
    try:
        root = ET.fromstring(config or "")
    except ET.ParseError:
        return None
    for node in root.iter("Choices"):
        if node.get("name") == "label" and node.get("toName") == "text":
            return [c.get("value") for c in node.iter("Choice")]
    return None


class LabelStudioAnnotator:
    """People answering in the Label Studio project titled ``project`` (see the module docstring).

    Args:
        labels: the label set (at least two distinct labels); answers outside it are a DataError.
        project: the project's title (found, or created), or its numeric id (found).
        url: the server (default: ``$LABEL_STUDIO_URL``, else ``http://localhost:8080``).
        api_key: the token; default ``$<api_key_env>``. Keep it out of recipes: they are saved.
        model_version: the predictions' model version, also set as the project's on creation (the
            uncertainty queue only reads predictions of the project's model version).
        client: a ``label_studio_sdk.LabelStudio`` (or a stand-in with the same methods); built
            on first use by default.
    """

    name = "labelstudio"

    def __init__(self, labels: Sequence[Any], *, project: str | int = "curate", url: str | None = None,
                 api_key: str | None = None, api_key_env: str = KEY_ENV, model_version: str = "curate",
                 timeout: float = 60.0, client: Any = None) -> None:
        self.lookup = check_labels(labels, "LabelStudioAnnotator")
        self.labels = list(labels)
        if isinstance(project, bool) or not isinstance(project, (str, int)) or str(project).strip() == "":
            raise ConfigError(f"The 'project' parameter of LabelStudioAnnotator must be a project title or id. "
                              f"Got {project!r} instead.")
        self.project = project
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.model_version = model_version
        self.timeout = timeout
        self._client = client
        self._api_key = api_key
        if client is None:
            if importlib.util.find_spec("label_studio_sdk") is None:
                raise MissingDependencyError("The labelstudio annotator needs label-studio-sdk: "
                                             "pip install 'curate[labelstudio]'.")
            if not (api_key or os.environ.get(api_key_env)):
                raise ConfigError(f"The labelstudio annotator needs an API token in ${api_key_env} (Label Studio: "
                                  "Account & Settings -> Access Token). Set it in the environment, not in the recipe.")
        self.predictions_: dict[int, tuple[Any, float | None]] = {}  # machine labels, by item id
        self.scores_: dict[int, float] = {}                          # acquisition scores, by item id
        self.project_id_: int | None = None

    @classmethod
    def from_options(cls, labels: Sequence[Any], options: Mapping[str, Any], *, where: str = "annotator.label_studio"):
        """From a recipe's ``label_studio:`` mapping (keys: project, url, api_key_env, model_version, timeout)."""
        options = dict(options or {})
        if "api_key" in options:
            raise ConfigError(f"{where}.api_key: keep the token out of the recipe (it is saved next to the run's "
                              f"outputs); put it in ${options.get('api_key_env', KEY_ENV)} instead.")
        unknown = [k for k in options if k not in _OPTIONS]
        if unknown:
            raise ConfigError(f"Unknown key '{where}.{unknown[0]}'.{did_you_mean(str(unknown[0]), _OPTIONS)} "
                              f"Known keys here: {', '.join(_OPTIONS)}.")
        return cls(labels, **options)

    def __repr__(self) -> str:  # never the token
        return f"LabelStudioAnnotator(project={self.project!r}, url={self.url!r}, labels={self.labels!r})"

    # ------------------------------------------------------------------ what curate knows about an item

    def suggest(self, item_id: int, label: Any, confidence: float | None = None) -> None:
        """A machine label for an item, pushed as its task's prediction (if it is pushed later)."""
        self.predictions_[int(item_id)] = (label, None if confidence is None else float(confidence))

    def use_scores(self, ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray | None) -> None:
        """This round's acquisition scores (higher = acquire first) of the items about to be asked
        for (``Selection.scores``; None: the strategy gives none). They replace the last round's."""
        self.scores_ = {}
        if scores is None:
            return
        for i, s in zip(np.asarray(ids).tolist(), np.asarray(scores, dtype=np.float64).tolist(), strict=True):
            if np.isfinite(s):
                self.scores_[int(i)] = float(s)

    # ------------------------------------------------------------------ the annotator

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).tolist()]
        if not ids:
            return
        project = self._project()
        asked = set(ids)
        tasks = self._tasks(project, asked)
        answers = self._answers(project, [tasks[i] for i in ids if i in tasks], asked)
        for item_id in ids:
            if item_id in answers:
                task_id, label = answers[item_id]
                yield Annotation(item_id, label, "human", None, human_labels=1, note=f"label studio task {task_id}")
        new = [i for i in ids if i not in tasks]
        if new:
            self._push(project, pool, ids, new)
        waiting = len(ids) - len(answers)
        if waiting:
            raise AwaitingHumanLabels(f"{self.url}/projects/{project}", waiting)

    def worst_case_micros(self, prices: Prices) -> int:
        return prices.micros(human_labels=1)

    # ------------------------------------------------------------------ the server

    def client(self):
        """The SDK client (built on first use)."""
        if self._client is None:
            try:
                from label_studio_sdk import LabelStudio
            except ImportError as err:
                raise MissingDependencyError("The labelstudio annotator needs label-studio-sdk: "
                                             f"pip install 'curate[labelstudio]' ({err}).") from None
            key = self._api_key or os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"The labelstudio annotator needs an API token in ${self.api_key_env}.")
            self._client = LabelStudio(base_url=self.url, api_key=key, timeout=self.timeout)
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        """One SDK call, its failures as LabelStudioError (naming the server and the token's
        variable, never the token)."""
        import httpx

        try:
            return fn(*args, **kwargs)
        except httpx.TransportError as err:
            raise LabelStudioError(f"Cannot reach Label Studio at {self.url} to {what} ({type(err).__name__}: {err}). "
                                   f"Start it (label-studio start) or set ${URL_ENV}.") from None
        except Exception as err:
            status = getattr(err, "status_code", None)
            if status is None:
                raise
            if status in (401, 403):
                raise LabelStudioError(f"Label Studio at {self.url} refused the token in ${self.api_key_env} "
                                       f"(HTTP {status}) when asked to {what}. Use a personal access token, or a "
                                       "legacy token with legacy tokens enabled for the organization.") from None
            raise LabelStudioError(f"Label Studio at {self.url} answered HTTP {status} when asked to {what}: "
                                   f"{getattr(err, 'body', '')}") from None

    def _project(self) -> int:
        """The project's id: found by id or title (its label set refreshed if it differs), or created."""
        if self.project_id_ is not None:
            return self.project_id_
        client = self.client()
        config = label_config(self.labels)
        if isinstance(self.project, int):
            found = [self._call(f"get project {self.project}", client.projects.get, id=int(self.project))]
        else:
            listed = self._call(f"find project '{self.project}'", lambda: list(client.projects.list(title=self.project)))
            found = [p for p in listed if _get(p, "title") == self.project]
        if len(found) > 1:
            raise ConfigError(f"{len(found)} Label Studio projects at {self.url} are titled '{self.project}' (ids "
                              f"{sorted(_get(p, 'id') for p in found)}): give the project's id instead.")
        if not found:
            made = self._call(f"create project '{self.project}'", client.projects.create, title=str(self.project),
                              label_config=config, sampling=UNCERTAINTY, model_version=self.model_version,
                              description="Items chosen by curate's active learning; curate_id is curate's item id.")
            self.project_id_ = int(_get(made, "id"))
            logger.info("label studio: created project %d '%s' at %s", self.project_id_, self.project, self.url)
            return self.project_id_
        project = found[0]
        self.project_id_ = int(_get(project, "id"))
        have = _choices_of(_get(project, "label_config") or "")
        if have is None or sorted(have) != sorted(map(str, self.labels)):
            # Refreshed to curate's label set: the answers are read against it.
            self._call(f"update the labelling config of project {self.project_id_}", client.projects.update,
                       id=self.project_id_, label_config=config)
            logger.info("label studio: project %d's choices %s refreshed to %s", self.project_id_, have, self.labels)
        return self.project_id_

    def _tasks(self, project: int, asked: set[int]) -> dict[int, dict]:
        """The project's tasks of the asked items, by curate id (tasks without one are not curate's)."""
        client = self.client()
        rows = self._call(f"list the tasks of project {project}", lambda: [_plain(t) for t in client.tasks.list(project=project)])
        tasks: dict[int, dict] = {}
        for task in rows:
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            raw = data.get("curate_id")
            if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip().lstrip("-").isdigit():
                continue
            item_id = int(raw)
            if item_id not in asked:
                continue
            if item_id in tasks:
                raise DataError(f"Label Studio project {project} at {self.url} holds item {item_id} twice (tasks "
                                f"{tasks[item_id].get('id')} and {task.get('id')}): delete one of them.")
            tasks[item_id] = task
        return tasks

    def _answers(self, project: int, tasks: list[dict], asked: set[int]) -> dict[int, tuple[Any, Any]]:
        """``{item id: (task id, label)}`` for the tasks with a kept annotation, read by
        :func:`~curate.annotate.human.import_answers` (the rules of a Label Studio export file:
        cancelled annotations skipped, ground truth first, disagreement an error)."""
        if not tasks:
            return {}
        with tempfile.TemporaryDirectory(prefix="curate-ls-") as folder:
            path = Path(folder) / "tasks.json"
            path.write_text(json.dumps(tasks, ensure_ascii=False, default=str), encoding="utf-8")
            try:
                labels = import_answers(path, labels=self.labels, ids=asked, fmt="labelstudio")
            except DataError as err:
                raise DataError(str(err).replace(str(path), f"Label Studio project {project} at {self.url}")) from None
        task_of = {int(t["data"]["curate_id"]): t.get("id") for t in tasks}
        return {i: (task_of[i], label) for i, label in labels.items()}

    def _push(self, project: int, pool, ids: list[int], new: list[int]) -> None:
        """Import the new items as tasks, each with its prediction (see the module docstring)."""
        rank = {item_id: k for k, item_id in enumerate(ids)}
        scored = all(i in self.scores_ for i in new)
        texts = pool.texts(new)
        tasks = []
        for item_id, text in zip(new, texts, strict=True):
            priority = self.scores_[item_id] if scored else 1.0 - rank[item_id] / len(ids)
            result = []
            if item_id in self.predictions_:
                label, confidence = self.predictions_[item_id]
                if label is not None and str(label) in self.lookup:
                    result.append({"from_name": "label", "to_name": "text", "type": "choices",
                                   "value": {"choices": [str(label)]},
                                   **({} if confidence is None else {"score": confidence})})
            tasks.append({"data": {"text": text, "curate_id": item_id, "curate_rank": rank[item_id] + 1,
                                   "curate_score": self.scores_.get(item_id)},
                          "predictions": [{"model_version": self.model_version, "score": -float(priority),
                                           "result": result}]})
        client = self.client()
        self._call(f"import {len(tasks)} task(s) into project {project}", client.projects.import_tasks, id=project,
                   request=tasks)
        for item_id in new:  # pushed: what was kept for them is not needed again
            self.predictions_.pop(item_id, None)
            self.scores_.pop(item_id, None)
        machine = sum(1 for t in tasks if t["predictions"][0]["result"])
        logger.info("label studio: pushed %d task(s) to project %d (%d with a machine label, scores %s)", len(tasks),
                    project, machine, "from the acquisition" if scored else "from the order")


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _plain(obj: Any) -> dict:
    """An SDK model (pydantic) as plain JSON data."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return dict(obj.dict())


class RecordPredictions:
    """A machine annotator passed through unchanged, whose labels and confidences become the
    predictions of the items later pushed to Label Studio (a hybrid's LLM: the label of an item it
    routes to people is dropped from the record the loop sees, so it is taken here)."""

    def __init__(self, inner, sink: LabelStudioAnnotator) -> None:
        self.inner = inner
        self.sink = sink
        self.name = getattr(inner, "name", type(inner).__name__)

    def annotate(self, pool, ids: np.ndarray, *, labeled: Mapping[int, Any] | None = None) -> Iterator[Annotation]:
        for a in self.inner.annotate(pool, ids, labeled=labeled):
            if a.ok:
                self.sink.suggest(a.item_id, a.label, a.confidence)
            yield a

    def worst_case_micros(self, prices: Prices) -> int:
        return self.inner.worst_case_micros(prices)

    def __getattr__(self, name: str) -> Any:  # the rest of the machine's interface (item_micros, backend...)
        if name.startswith("__") or name in ("inner", "sink"):
            raise AttributeError(name)
        return getattr(self.inner, name)

