"""Loading configs: YAML, ``KEY=VALUE`` overrides, ``${VAR}`` expansion, and
the checked conversion of nested dicts into the frozen dataclasses of either tree.

Loading rejects unknown keys (naming the dotted key and the nearest valid one), values
of the wrong type, choices outside their closed set (listing the valid ones) and numbers
outside their range (naming it).
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from s2s.config.fields import check_range
from s2s.errors import ConfigError

# A decimal number, exponent included (PyYAML reads "1e-3" and "3e-4" as strings).
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check (and lightly coerce) one leaf value against its type hint."""
    origin = typing.get_origin(hint)
    if origin is dict:
        key_t, value_t = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping")
        return {
            _convert(k, key_t, f"{key}.{k}"): _convert(v, value_t, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin is tuple and typing.get_args(hint)[1:] == (Ellipsis,):  # any length
        item = typing.get_args(hint)[0]
        values = value if isinstance(value, (list, tuple)) else [value]  # one: a 1-tuple
        return tuple(_convert(v, item, key) for v in values)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            value = float(value)  # 1e-3: YAML 1.1 reads a float without a dot as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan and .inf
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1: unquoted yes/no/on/off are true/false
            raise ConfigError(
                f"config key '{key}' must be a string, got {value!r} (YAML reads an unquoted "
                "yes, no, on or off as true or false: quote it)"
            )
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def build_tree(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}' must be a mapping")
    hints = _type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), list(names), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = build_tree(hint_t, value, dotted)
            continue
        value = _convert(value, hint_t, dotted)
        choices = names[key].metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"config key '{dotted}' is '{value}'; valid values: {', '.join(choices)}"
            )
        if names[key].metadata.get("encoding"):
            try:
                codecs.lookup(value)
            except LookupError:
                raise ConfigError(
                    f"config key '{dotted}': unknown text encoding {value!r}"
                ) from None
        limits = names[key].metadata.get("range")
        if limits is not None:
            check_range(dotted, value, limits)
        kwargs[key] = value
    return cls(**kwargs)


def refuse_other_kind(data: Any, keys: tuple[str, ...], what: str) -> None:
    """A config of the other tree (a char LM's given to translation, or the reverse)
    named as such, not by its first unknown key: ``keys`` are dotted keys only that
    tree has."""
    for key in keys:
        section, _, name = key.partition(".")
        node = data.get(section) if isinstance(data, dict) else None
        if isinstance(node, dict) and name in node:
            raise ConfigError(f"this is {what} (it sets {key})")


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), ready for YAML or a checkpoint."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_key(data: dict, path: list[str], value: Any, what: str) -> None:
    """Set a dotted key (as its parts) in a nested dict; ``what`` names it in errors. A
    mapping set on a section merges into it (``model.encoder={cell: gru}`` keeps the
    section's other keys)."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: '{part}' is not a section")
        node = child
    old = node.get(path[-1])
    if isinstance(value, dict) and isinstance(old, dict):
        merged = dict(old)
        for key, item in value.items():
            set_key(merged, [key], item, what)
        value = merged
    node[path[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict; validation happens in from_dict."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, f"override '{text}'")
    return data


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str) -> str:
    """Expand ${VAR} where VAR is set and non-empty; leave the others in place (then
    ``data.load_split`` falls back to the hub dataset)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or m.group(0), text)


def unset_variables(text: str) -> list[str]:
    return _ENV.findall(text)


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last silently: a second ``train:`` section would drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *anchor, whose keys the
                continue  # mapping's own may override
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.name}: key '{key}' appears twice in one mapping "
                    f"(lines {seen[key]} and {line})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, name: str = "<config>") -> Any:
    """YAML as ``yaml.safe_load`` reads it, but a key given twice is an error."""
    loader = _UniqueKeys(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def dump(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal values; paths (strings with a separator) that name the same file, relative to
    the working folder or not, count as equal (``../data/x`` and ``/work/data/x``)."""
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    seps = {"/", os.sep}
    if isinstance(a, str) and isinstance(b, str) and any(s in a + b for s in seps):
        return os.path.realpath(a) == os.path.realpath(b)
    return False


def diff(a: Any, b: Any) -> list[str]:
    """Dotted keys whose values differ between two configs (the same file named by two
    paths does not differ)."""
    fa, fb = _flat(to_dict(a)), _flat(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if not _same(fa.get(k), fb.get(k)))


def value(cfg: Any, key: str) -> Any:
    """The value at a dotted key (None where there is none)."""
    return _flat(to_dict(cfg)).get(key)
