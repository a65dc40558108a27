"""Config = a YAML file + `key=value` overrides, into a dataclass; unknown keys are rejected.

Works for plain dataclasses and for `transformers.TrainingArguments` subclasses (TRL style).
Values in overrides are read as YAML, so `lr=1e-3`, `lora=true`, `sizes=[1,2]` do what they say.
Every value (file or override) is then converted to its field's declared type, or refused with
a message naming the key: `lora=no` is False (not the string "no", which Python reads as true),
`max_steps=abc` and `dataset_weights=[1,2]` are errors. A field's `metadata={"min": n}` (or
`MINIMUM` for library fields) refuses values below n.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_text

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


def yaml_error(path: str | Path, error: yaml.YAMLError) -> EmbedrlError:
    """A YAML parse error as one line naming the file, line and problem."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return EmbedrlError(f"{path}: invalid YAML{where}: {problem}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml_load(read_text(path, "config file")) or {}
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from e
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


# Library (TrainingArguments / TRL) fields below which no run can work; the library takes such values
# and fails later, deep inside, with a traceback.
MINIMUM = {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1,
           "num_generations": 2, "max_completion_length": 1}
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
          list: "a list, e.g. [a, b]", dict: "a mapping, e.g. {name: value}"}


class _Mismatch(ValueError):
    """A value that does not convert to a declared type: what was expected, the value, and where it sits
    inside the field's value (`[key]` of a mapping, `[i]` of a list)."""

    def __init__(self, expected: str, value: Any, path: str = ""):
        super().__init__(expected)
        self.value, self.path = value, path


def _inside(value: Any, hint: Any, path: str) -> Any:
    try:
        return _convert(value, hint)
    except _Mismatch as e:
        raise _Mismatch(str(e), e.value, path + e.path) from None


def _convert(value: Any, hint: Any) -> Any:
    """`value` as type `hint` (bool, int, float, str, list[...], dict[...], unions of them); other types
    (enums, library classes) are left to the config class to check."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        for member in members:  # a value that already has a member's type keeps it
            if _has_type(value, member):
                return _convert(value, member)
        problems = []
        for member in members:
            try:
                return _convert(value, member)
            except _Mismatch as e:
                problems.append(str(e))
        raise _Mismatch(" or ".join(dict.fromkeys(problems)), value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch(f"one of {', '.join(map(repr, args))}", value)
    base = origin or hint
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return str(value).strip().lower() in TRUE_WORDS
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
    elif base is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, (int, float)) and not isinstance(number, bool) and not math.isnan(number):
            return float(number)
    elif base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif base in (list, tuple):
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # one value: a one-element list
        return [_inside(v, args[0] if args else Any, f"[{i}]") for i, v in enumerate(items)]
    elif base is dict:
        if isinstance(value, dict):
            key_type, value_type = args if len(args) == 2 else (Any, Any)
            return {_convert(k, key_type): _inside(v, value_type, f"[{k!r}]") for k, v in value.items()}
    else:
        return value  # Any, enums, library classes: the config class checks them
    raise _Mismatch(_NAMES[base], value)


def _has_type(value: Any, hint: Any) -> bool:
    base = typing.get_origin(hint) or hint
    if base is bool or isinstance(value, bool):
        return base is bool and isinstance(value, bool)
    if base in (list, tuple):
        return isinstance(value, (list, tuple))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return False
    return isinstance(base, type) and isinstance(value, base)


def typed_values(cls: type, values: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """`values` converted to the types `cls` declares; a value that does not convert, or is below its
    field's minimum, is refused naming the key and where it was set (`origins`)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        where = f"(set {origins[key]})" if key in origins else "(its default)"
        try:  # None passes as is: the config class knows which fields may be unset
            out[key] = value if value is None else _convert(value, hints.get(key, Any))
        except _Mismatch as e:
            raise EmbedrlError(f"config key {key}{e.path} must be {e}, not {e.value!r} {where}") from None
        least = fields[key].metadata.get("min", MINIMUM.get(key))
        if least is not None and isinstance(out[key], (int, float)) and not isinstance(out[key], bool) \
                and out[key] < least:
            raise EmbedrlError(f"config key {key} must be at least {least}, not {value!r} {where}")
    return out


def build_config(cls: type[T], config: str | Path | None = None, overrides: list[str] | None = None,
                 **defaults: Any) -> T:
    """Merge `defaults` < YAML file < overrides into `cls(...)`, refusing keys `cls` lacks and values
    that are not of their field's type."""
    values: dict[str, Any] = dict(defaults)
    origins: dict[str, str] = {}
    if config:
        from_file = load_yaml(config)
        values.update(from_file)
        origins.update(dict.fromkeys(from_file, f"in {config}"))
    from_overrides = parse_overrides(overrides)
    values.update(from_overrides)
    origins.update(dict.fromkeys(from_overrides, "on the command line"))
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise EmbedrlError(f"unknown config key(s) for {cls.__name__}: {', '.join(hints)}")
    values = typed_values(cls, values, origins)
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
