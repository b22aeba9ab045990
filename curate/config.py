"""Recipe blocks every paradigm shares (pool, lm, prices, stop, annotator, generate...), as nested
dataclasses that YAML recipes mirror one to one, and the one recipe loader.

Precedence: defaults < YAML < ``--set a.b=value``. Unknown keys are errors with a suggestion
("Unknown key 'acquire.budjet'. Did you mean 'acquire.batch_size'?"); values are checked in
``__post_init__``. Every run writes its resolved config next to its outputs.
"""

from __future__ import annotations

import dataclasses
import math
import string
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.errors import ConfigError, did_you_mean
from curate.models import DEFAULT_LM

__all__ = ["AcquireConfig", "AnnotatorConfig", "ExecutorConfig", "GenerateConfig", "IndexConfig", "InitConfig", "LMConfig", "LearnerConfig",
           "PoolConfig", "PricesConfig", "StopConfig", "apply_overrides", "check_template", "from_dict", "load_recipe", "read_recipe",
           "to_dict"]


@dataclass
class PoolConfig:
    path: str = ""
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    id_column: str | None = None
    split: str = "train"


@dataclass
class IndexConfig:
    kind: str = "auto"


@dataclass
class InitConfig:
    strategy: str = "random"
    size: int = 25
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"init.size must be at least 1. Got {self.size} instead.")


@dataclass
class AcquireConfig:
    strategy: str = "entropy"
    batch_size: int = 25
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"acquire.batch_size must be at least 1. Got {self.batch_size} instead.")


@dataclass
class LMConfig:
    backend: str = "hf"
    model: str = DEFAULT_LM
    device: str = "auto"
    base_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the backend's own arguments (vLLM engine args...)

    def __post_init__(self) -> None:
        from curate.backends import KINDS

        if self.backend not in KINDS:
            raise ConfigError(f"lm.backend must be one of {', '.join(KINDS)}. Got '{self.backend}' instead."
                              f"{did_you_mean(self.backend, KINDS)}")
        if self.base_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.base_url)
            if parts.password or parts.username:
                # The recipe is saved in the run folder and URLs appear in messages: a key there leaks.
                host = parts.hostname or "host"
                redacted = f"{parts.scheme}://***@{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
                raise ConfigError(f"lm.base_url carries credentials ({redacted}); curate saves recipes in the run "
                                  "folder, so a key there would be stored and shown. Give the URL without them and "
                                  "the key in the OPENAI_API_KEY environment variable.")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"lm.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1. "
                                  f"Got {self.base_url!r} instead.")
        for key in ("api_key",):
            if key in self.options:
                raise ConfigError(f"lm.options.{key}: curate saves recipes in the run folder, so a key there would "
                                  "be stored; put it in the OPENAI_API_KEY environment variable instead.")


@dataclass
class AnnotatorConfig:
    kind: str = "gold"               # gold | llm | human | labelstudio | hybrid
    column: str = "label"            # gold: where the labels are
    instruction: str = "Classify the text. Answer with one of: {labels}."
    template: str = "{text}"
    shots: int = 0                   # llm: in-context examples retrieved from the labelled set
    verbalizers: dict[str, str] = field(default_factory=dict)
    threshold: float = 0.9           # hybrid: keep LLM labels at or above this confidence
    queue_dir: str | None = None     # human/hybrid: where batches are exported and answers read
    queue_format: str = "jsonl"      # jsonl | csv | labelstudio
    human: str = "queue"             # hybrid: "queue" (people, via queue_dir), "gold" (simulated people) or "labelstudio"
    label_studio: dict[str, Any] = field(default_factory=dict)  # labelstudio: project, url, api_key_env (never the key)

    def __post_init__(self) -> None:
        for name in ("instruction", "template"):
            check_template(getattr(self, name), f"annotator.{name}")
        kinds = ("gold", "llm", "human", "labelstudio", "hybrid")
        if self.kind not in kinds:
            raise ConfigError(f"annotator.kind must be one of {', '.join(kinds)}. Got '{self.kind}' instead."
                              f"{did_you_mean(self.kind, kinds)}")


@dataclass
class LearnerConfig:
    kind: str = "logreg"
    C: float = 10.0
    # Pseudo-labels from the classifier's confident predictions (curate.learners.ClassSelfTraining:
    # threshold, max_fraction); absent: off.
    self_training: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.C > 0:
            raise ConfigError(f"learner.C (the inverse regularisation strength) must be > 0. Got {self.C} instead.")
        if self.self_training is not None:
            from curate.learners.classifier import ClassSelfTraining

            ClassSelfTraining.of(self.self_training)   # checked now, before anything is bought


@dataclass
class PricesConfig:
    human_per_label: float = 0.0
    llm_input_per_million: float = 0.0
    llm_output_per_million: float = 0.0
    currency: str = "USD"
    batch_discount: float = 0.0  # share off token prices of batch-API requests (OpenAI's Batch API: 0.5)

    def __post_init__(self) -> None:
        for name in ("human_per_label", "llm_input_per_million", "llm_output_per_million"):
            if getattr(self, name) < 0:
                raise ConfigError(f"prices.{name} must be >= 0. Got {getattr(self, name)} instead.")
        if not 0 <= self.batch_discount <= 1:
            raise ConfigError(f"prices.batch_discount is the share taken off batch-API token prices, between 0 and 1 "
                              f"(0.5: half price). Got {self.batch_discount} instead.")
        if not self.currency.strip():
            raise ConfigError("prices.currency must name a currency (e.g. USD).")


@dataclass
class StopConfig:
    rounds: int | None = 10
    labels: int | None = None
    money: float | None = None
    plateau_window: int | None = None
    plateau_min_gain: float = 0.005
    stable_kappa: float | None = None
    stable_window: int = 1
    stop_set_size: int = 500
    combine: str = "any"             # any | all (the budgets always apply)

    def __post_init__(self) -> None:
        if self.combine not in ("any", "all"):
            raise ConfigError(f"stop.combine must be 'any' or 'all'. Got '{self.combine}' instead.")
        for name in ("rounds", "labels", "plateau_window"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"stop.{name} must be at least 1 (or null for no limit). Got {value} instead.")
        for name in ("stable_window", "stop_set_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"stop.{name} must be at least 1. Got {getattr(self, name)} instead.")
        if self.money is not None and self.money < 0:
            raise ConfigError(f"stop.money must be >= 0 (or null for no money budget). Got {self.money} instead.")
        if self.stable_kappa is not None and not -1 < self.stable_kappa <= 1:
            # Cohen's kappa lies in [-1, 1]: above 1 the rule can never fire, at -1 it always does.
            raise ConfigError(f"stop.stable_kappa is an agreement (Cohen's kappa) in (-1, 1], e.g. 0.99. "
                              f"Got {self.stable_kappa} instead.")


@dataclass
class GenerateConfig:
    """Generation as a query source of the loop (``curate.generate.GenerationQuery``): in due rounds
    the recipe's LM writes ``per_round`` accepted candidates that join the pool before selection."""

    kind: str = "labelled"           # labelled (label-conditioned, balanced) | coverage (uncovered clusters)
    task: str = ""                   # what the examples are, e.g. "movie review sentiment"
    per_round: int = 8
    every: int = 1
    first_round: int = 1             # 0: the seed round generates too (cold start)
    label: str = "annotate"          # annotate (rows go through acquisition + annotation) | intended (keep it)
    max_candidates: int | None = None  # written per round at most (default 4 x per_round)
    batch_size: int = 8
    temperature: float = 0.9
    max_new_tokens: int = 40
    min_chars: int = 12
    max_chars: int = 400
    dup_threshold: float = 0.92      # cosine at which a candidate duplicates the pool or another
    label_threshold: float = 0.5     # labelled: the LM must give the intended label this probability (0 = off)
    judge_threshold: float = 0.0     # Ask-LLM quality threshold (0 = off)

    def __post_init__(self) -> None:
        if self.kind not in ("labelled", "coverage"):
            raise ConfigError(f"generate.kind must be 'labelled' or 'coverage'. Got '{self.kind}' instead."
                              f"{did_you_mean(self.kind, ('labelled', 'coverage'))}")
        if self.label not in ("annotate", "intended"):
            raise ConfigError(f"generate.label must be 'annotate' or 'intended'. Got '{self.label}' instead.")
        if self.kind == "coverage" and self.label == "intended":
            raise ConfigError("generate.kind 'coverage' writes unlabelled candidates: use generate.label 'annotate'.")
        for name in ("per_round", "every", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generate.{name} must be at least 1. Got {getattr(self, name)} instead.")


@dataclass
class ExecutorConfig:
    """Where the embarrassingly parallel work runs (:mod:`curate.executor`): ``local`` (in process,
    the default) or ``ray`` (Ray Data workers; ``address`` of a cluster such as ``ray://head:10001``
    or ``auto``, or none for a Ray started on this machine)."""

    kind: str = "local"              # local | ray
    address: str | None = None
    num_workers: int = 2
    batch_size: int = 256            # items per worker call
    num_cpus: int | None = None      # a local Ray's CPUs (default: min(num_workers, this machine's))

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ConfigError(f"executor.kind must be 'local' or 'ray'. Got '{self.kind}' instead."
                              f"{did_you_mean(self.kind, ('local', 'ray'))}")
        for name in ("num_workers", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"executor.{name} must be at least 1. Got {getattr(self, name)} instead.")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"executor.num_cpus must be at least 1 (or null). Got {self.num_cpus} instead.")


# ---------------------------------------------------------------------------------------------


def check_template(template: str, where: str, fields: Iterable[str] | None = None) -> list[str]:
    """The ``{field}`` names of a ``str.format`` template, or a ConfigError naming ``where`` when
    it is malformed (an unclosed brace) or, given ``fields``, names one that is not among them."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(f"{where} is not a valid template ({err}): write fields as {{column}} and a literal "
                          f"brace as {{{{ or }}}}. Got {template!r}.") from None
    if any(not n or not n.isidentifier() for n in names):
        raise ConfigError(f"{where}: every field of a template is a name in braces, e.g. {{text}}. Got {template!r}.")
    if fields is not None:
        known = list(fields)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{where} uses {', '.join('{' + n + '}' for n in unknown)}, which is not among the fields "
                              f"there are: {', '.join(known)}.{did_you_mean(unknown[0], known)}")
    return names


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping of keys to values. Got {type(data).__name__} instead.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            options = [f"{where}.{n}" if where else n for n in names]
            raise ConfigError(f"Unknown key '{path}'.{did_you_mean(path, options)} Known keys here: {', '.join(names)}.")
        kwargs[key] = _coerce(hints[key], value, path)
    _check_shared_fields(kwargs, where)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"Bad config at '{where or 'top level'}': {err}.") from None


def _check_shared_fields(kwargs: dict, where: str) -> None:
    """Rules for fields that mean the same in every recipe: a seed seeds numpy (>= 0), a label set
    names each class once."""
    prefix = f"{where}." if where else ""
    seed = kwargs.get("seed")
    if isinstance(seed, int) and seed < 0:
        raise ConfigError(f"'{prefix}seed' must be >= 0. Got {seed} instead.")
    labels = kwargs.get("labels")
    if isinstance(labels, list):
        seen = [str(x) for x in labels]
        twice = sorted({x for x in seen if seen.count(x) > 1})
        if twice:
            raise ConfigError(f"'{prefix}labels' names {', '.join(repr(x) for x in twice)} more than once: each class "
                              f"once, please. Got {labels}.")


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a mapping. Got {value!r} instead.")
        return dict(value)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"'{path}' must be a list. Got {value!r} instead.")
        return list(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"'{path}' must be a finite number (null where there is no limit). Got {value!r} instead.")
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"'{path}' must be {hint.__name__}. Got {value!r} ({type(value).__name__}) instead.")
    return value


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str], cls: type | None = None) -> dict:
    """Apply ``a.b=value`` overrides. Where the recipe class ``cls`` says the key is a string, the
    value is taken as written (``--set prompt.input_template={premise}`` is that text; quote it in
    YAML quotes to use YAML escapes, ``null`` clears an optional one); elsewhere it is parsed as YAML
    (numbers, lists, null...), and a value YAML cannot read is an error naming the key."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE (e.g. acquire.batch_size=50). Got '{item}' instead.")
        value = _override_value(key, raw, _hint_at(cls, key.split(".")) if cls is not None else None)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _hint_at(cls: Any, parts: list[str]) -> Any:
    """The type of the field at ``parts`` under dataclass ``cls`` (None where it is not known)."""
    hint: Any = cls
    for part in parts:
        hint = _strip_optional(hint)
        if not dataclasses.is_dataclass(hint):
            return None
        hints = typing.get_type_hints(hint)
        if part not in hints:
            return None
        hint = hints[part]
    return hint


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _override_value(key: str, raw: str, hint: Any) -> Any:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if _strip_optional(hint) is str:
        if optional and raw in ("null", "~"):
            return None
        if not (raw[:1] in ("'", '"') and raw[-1:] == raw[:1] and len(raw) > 1):
            return raw  # a string as written: no YAML surprises ({a} a mapping, 1e3 a number, yes a bool)
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        detail = _yaml_problem(err)
        raise ConfigError(f"--set {key}=...: the value is not valid YAML ({detail}). Quote text values, e.g. "
                          f"--set '{key}=\"...\"'.") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, from 1)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def read_recipe(path: str | Path, missing_hint: str = "") -> dict:
    """A recipe file's data, as YAML gives it (a mapping), with clear errors for a missing file or bad YAML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Recipe '{path}' does not exist.{missing_hint}")
    if not path.is_file():
        raise ConfigError(f"Recipe '{path}' is not a file (a recipe is a YAML file).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the recipe as UTF-8.") from None
    except OSError as err:
        raise ConfigError(f"Recipe '{path}' cannot be read: {err.strerror}.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys to values. Got {type(data).__name__} instead.")
    return data


def load_recipe(cls: type, path: str | Path | None = None, overrides: list[str] | None = None, *,
                data: dict | None = None, pools: tuple[str, ...] = ("pool", "eval"), require_pool: bool = True,
                missing_hint: str = "") -> Any:
    """A recipe dataclass ``cls``: defaults, then the YAML file at ``path`` (or ``data``), then
    ``a.b=value`` overrides. Relative paths of the ``pools`` fields are resolved against the file's
    folder when they exist there. Every paradigm's recipe loader is this one. The ``paradigm`` key
    (which paradigm a recipe is for) is read by :func:`curate.runs.start_run`, not by ``cls``."""
    base = Path(".")
    if path is not None:
        data = read_recipe(path, missing_hint)
        base = Path(path).parent
    data = {k: v for k, v in (data or {}).items() if k != "paradigm"}
    config = from_dict(cls, apply_overrides(data, overrides or [], cls))
    for name in pools:
        pool = getattr(config, name)
        if pool is not None and pool.path and not Path(pool.path).is_absolute() and (base / pool.path).exists():
            pool.path = str((base / pool.path).resolve())
    if require_pool and not config.pool.path:
        raise ConfigError("The recipe names no pool: set pool.path.")
    return config
