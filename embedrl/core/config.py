"""Config = a YAML file + `key=value` overrides, into a dataclass; unknown keys are rejected.

Works for plain dataclasses and for `transformers.TrainingArguments` subclasses (TRL style).
Values in overrides are read as YAML, so `lr=1e-3`, `lora=true`, `sizes=[1,2]` do what they say.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from embedrl.core.errors import EmbedrlError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `1e-3` is a float, and only true/false are booleans
    (so `save_strategy: no` stays the string "no", as Hugging Face configs mean it)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[0-9][0-9_]*[eE][-+]?[0-9]+|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EmbedrlError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise EmbedrlError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise EmbedrlError(f"{path}: expected a mapping of key: value at the top level")
    return data


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EmbedrlError(f"override {item!r} is not of the form key=value")
        try:
            out[key.strip().replace("-", "_")] = yaml_load(value)
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = value
    return out


def build_config(cls: type[T], config: str | Path | None = None, overrides: list[str] | None = None,
                 **defaults: Any) -> T:
    """Merge `defaults` < YAML file < overrides into `cls(...)`, refusing keys `cls` lacks."""
    values: dict[str, Any] = dict(defaults)
    if config:
        values.update(load_yaml(config))
    values.update(parse_overrides(overrides))
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise EmbedrlError(f"unknown config key(s) for {cls.__name__}: {', '.join(hints)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise EmbedrlError(f"invalid {cls.__name__}: {e}") from e


def own_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields `cls` and its embedrl bases declare, base first (not those it inherits from
    TRL / transformers, whose own docs list them)."""
    seen: dict[str, dataclasses.Field] = {}
    all_fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for klass in reversed(cls.__mro__):
        if klass.__module__.split(".")[0] == "embedrl":
            for name in vars(klass).get("__annotations__", {}):
                if name in all_fields:
                    seen[name] = all_fields[name]
    return list(seen.values())


def describe_fields(cls: type, width: int = 88) -> str:
    """A config class's own fields as `--help` text: name, default, help; ends naming the library config
    whose fields are accepted too."""
    import textwrap

    lines = [f"{cls.__name__} fields (in the YAML file as key: value, or key=value after the command):"]
    for f in own_fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {f.name} (default: {default!r})")
        help_text = f.metadata.get("help", "")
        if help_text:
            lines += textwrap.wrap(help_text, width, initial_indent="      ", subsequent_indent="      ")
    library = next((k for k in cls.__mro__[1:] if k.__module__.split(".")[0] != "embedrl"
                    and dataclasses.is_dataclass(k)), None)
    if library is not None:
        lines.append(f"\nEvery {library.__module__.split('.')[0]}.{library.__name__} field can be set too "
                     "(e.g. learning_rate, max_steps, output_dir, seed, save_steps, report_to).")
    return "\n".join(lines)
