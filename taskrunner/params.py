"""Declared task parameters: checking a declaration and resolving given values.

A declaration is a list of dicts `{"name", "type", "default", "required",
"choices"}`. Values arrive as JSON (API) or as text (command line, forms);
`resolve` turns them into the declared type, fills in defaults and names every
bad parameter, so a caller can answer with one error per field.
"""

import re
from typing import Any

TYPES = ("str", "int", "float", "bool")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


class ParamError(ValueError):
    """Bad parameters; `errors` maps each parameter name to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in errors.items()))


def coerce(value: Any, type_name: str) -> Any:
    """Convert one value to `type_name`, accepting JSON values or their text form."""
    if type_name == "str":
        if isinstance(value, str):
            return value
        raise ValueError("must be a string")
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise ValueError("must be true or false")
    if type_name == "int":
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("must be an integer")
    if type_name == "float":
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError("must be a number")
    raise ValueError(f"unknown type {type_name!r}")


def normalize_declaration(declared: Any) -> list[dict[str, Any]]:
    """Check a declaration and return it in its full form; raise ParamError if bad."""
    if not isinstance(declared, list):
        raise ParamError({"params": "must be a list"})
    result: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    seen: set[str] = set()
    for index, spec in enumerate(declared):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            errors[f"#{index}"] = "each parameter needs a name"
            continue
        name = spec["name"]
        if not NAME_RE.match(name):
            errors[name] = "a name is letters, digits and underscores"
            continue
        if name in seen:
            errors[name] = "declared twice"
            continue
        seen.add(name)
        type_name = spec.get("type") or "str"
        if type_name not in TYPES:
            errors[name] = f"type must be one of {', '.join(TYPES)}"
            continue
        try:
            choices = spec.get("choices")
            if choices is not None:
                if not isinstance(choices, list) or not choices:
                    raise ValueError("choices must be a non-empty list")
                choices = [coerce(choice, type_name) for choice in choices]
            default = spec.get("default")
            if default is not None:
                default = coerce(default, type_name)
                if choices is not None and default not in choices:
                    raise ValueError("the default is not one of the choices")
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        result.append(
            {
                "name": name,
                "type": type_name,
                "default": default,
                "required": default is None,
                "choices": choices,
            }
        )
    if errors:
        raise ParamError(errors)
    return result


def resolve(declared: list[dict[str, Any]], given: Any) -> dict[str, Any]:
    """Values for every declared parameter, defaults filled in; ParamError names the bad ones."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ParamError({"params": "must be an object of name: value"})
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    known = {spec["name"] for spec in declared}
    for name in given:
        if name not in known:
            errors[str(name)] = "unknown parameter"
    for spec in declared:
        name = spec["name"]
        if name not in given or given[name] is None:
            if spec["default"] is None:
                errors[name] = "required"
            else:
                values[name] = spec["default"]
            continue
        try:
            value = coerce(given[name], spec["type"])
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        if spec["choices"] is not None and value not in spec["choices"]:
            errors[name] = "must be one of " + ", ".join(str(c) for c in spec["choices"])
            continue
        values[name] = value
    if errors:
        raise ParamError(errors)
    return values


def as_argument(value: Any) -> str:
    """The text of a parameter in argv: bool is `true`/`false`, the rest as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(argv: list[str], values: dict[str, Any]) -> list[str]:
    """Replace each argv element that is exactly `{NAME}` by that parameter's value.

    Only whole elements are replaced, and each stays one argument whatever it
    contains: there is no shell, so there is nothing to inject into.
    """
    result = []
    for arg in argv:
        if len(arg) > 2 and arg[0] == "{" and arg[-1] == "}" and arg[1:-1] in values:
            result.append(as_argument(values[arg[1:-1]]))
        else:
            result.append(arg)
    return result
