"""Declared task parameters: checking a declaration and resolving given values.

A declaration is a list of dicts `{"name", "type", "default", "required",
"choices"}`, and for `str` parameters optionally `"allow_dash": true` and
`"pattern": REGEX` (present only when set). Values arrive as JSON (API) or as text
(command line, forms); `resolve` turns them into the declared type, fills in
defaults and names every bad parameter, so a caller can answer with one error
per field.

Values end up in a child's argv, so a `str` value is held to two rules there:
- it may not begin with `-` unless its declaration says `allow_dash`, so a
  value cannot become an option of the child program (`--upload-pack=...`,
  `-oProxyCommand=...`);
- when the declaration gives a `pattern`, the whole value must match it
  (`re.fullmatch`).
"""

import math
import re
from typing import Any

TYPES = ("str", "int", "float", "bool")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `--opt={NAME}`: an option bound to a parameter's value in one argument, so
# the value can never be read as an option of its own.
BOUND_OPTION_RE = re.compile(r"^(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]*=)\{([A-Za-z_][A-Za-z0-9_]*)\}$")
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
        number = None
        if isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                raise ValueError("must be a finite number") from None
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is None:
            raise ValueError("must be a number")
        # nan, inf and 1e999 (inf) parse, but no database stores them in JSON.
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    raise ValueError(f"unknown type {type_name!r}")


def check_str_value(value: str, *, allow_dash: bool, pattern: str | None) -> None:
    """The argv rules of a `str` value (see the module docstring); ValueError if broken."""
    if value.startswith("-") and not allow_dash:
        raise ValueError(
            "must not begin with '-' (it could be read as an option of the program); "
            "the task's declaration does not allow it"
        )
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise ValueError(f"must match the pattern {pattern}")


def _checked_pattern(pattern: Any) -> str | None:
    if pattern is None or pattern == "":
        return None
    if not isinstance(pattern, str):
        raise ValueError("pattern must be a regular expression (text)")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
    return pattern


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
            allow_dash = spec.get("allow_dash", False)
            if not isinstance(allow_dash, bool):
                raise ValueError("allow_dash must be true or false")
            pattern = _checked_pattern(spec.get("pattern"))
            if type_name != "str" and (allow_dash or pattern is not None):
                raise ValueError("allow_dash and pattern apply to str parameters only")
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
            # The declared values obey the same rules as given ones, so a
            # default or a choice can never be what the rules refuse.
            if type_name == "str":
                for value in [*(choices or []), *([] if default is None else [default])]:
                    try:
                        check_str_value(value, allow_dash=allow_dash, pattern=pattern)
                    except ValueError as exc:
                        raise ValueError(f"{value!r} {exc}") from None
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        full = {
            "name": name,
            "type": type_name,
            "default": default,
            "required": default is None,
            "choices": choices,
        }
        # The extensions appear only when they say something, so a
        # declaration in the contract's original shape reads back unchanged.
        if allow_dash:
            full["allow_dash"] = True
        if pattern is not None:
            full["pattern"] = pattern
        result.append(full)
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
        if spec["type"] == "str":
            try:
                check_str_value(
                    value,
                    allow_dash=spec.get("allow_dash", False),
                    pattern=spec.get("pattern"),
                )
            except ValueError as exc:
                errors[name] = str(exc)
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
    """Replace each argv element that is exactly `{NAME}` or `--opt={NAME}`.

    Only those whole elements are replaced, and each stays one argument
    whatever it contains: there is no shell. A value is still read by the
    child's own option parser, though, which is why `resolve` refuses a `str`
    value beginning with `-` unless declared; `--opt={NAME}` binds the value to
    its option, so even a value beginning with `-` stays that option's value.
    """
    result = []
    for arg in argv:
        if len(arg) > 2 and arg[0] == "{" and arg[-1] == "}" and arg[1:-1] in values:
            result.append(as_argument(values[arg[1:-1]]))
            continue
        bound = BOUND_OPTION_RE.match(arg)
        if bound is not None and bound.group(2) in values:
            result.append(bound.group(1) + as_argument(values[bound.group(2)]))
            continue
        result.append(arg)
    return result
