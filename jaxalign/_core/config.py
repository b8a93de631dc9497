"""Config files as pydantic schemas: strict values, unknown keys refused, every problem named.

One home for the rules every jaxalign config follows (the study configs of
``jaxalign.studies.config``, the fine-tuning configs of
``jaxalign.finetune``): a config is a tree of :class:`Section` tables that

* reject unknown keys (a typo must not be silently ignored) and validate
  their defaults; scalars are strict (:data:`Int`, :data:`Float`,
  :data:`Str`, :data:`Bool`: a TOML string ``"5"`` is not an integer,
  ``true`` is not 1, 1.5 is not an int);
* report all problems together as one :class:`ConfigError` (a
  ``ValueError``), one line each: ``section.key: what is wrong (allowed:
  ...)``, prefixed with the file's name when the config came from one.

A package subclasses :class:`ConfigError` to name its kind of config
(``subject``) and :class:`Section` to raise it (``config_error``); a root
section may add ``literal_hints`` (a key's allowed values in words, for keys
whose allowed values are a union) and ``input_error_kinds`` (its custom
pydantic error types whose message is followed by the offending value).
Cross-field checks raise :func:`custom` (one problem) or :func:`cross`
(several, each on its own key). :func:`read_toml` reads a file with the same
errors.
"""

from __future__ import annotations

import contextvars
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Strict, Tag, ValidationError
from pydantic_core import PydanticCustomError

__all__ = [
    "Bool",
    "ConfigError",
    "Float",
    "Int",
    "Section",
    "Str",
    "canonical",
    "choices",
    "cross",
    "custom",
    "problems",
    "read_toml",
]

# Scalars are strict: a TOML string "5" is not an integer, true is not 1, 1.5
# is not an int. (Containers stay lax so Python callers may pass tuples.)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an int is accepted and stored as a float
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists every ``"key: what is wrong"``.

    ``subject`` (a class attribute) names the kind of config in the message
    ("N problems in the <subject>:").
    """

    subject: ClassVar[str] = "config"

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        self.source = None if source is None else str(source)
        where = f"{self.source}: " if self.source else ""
        n = len(self.problems)
        head = f"{where}{n} problem{'s' if n != 1 else ''} in the {self.subject}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


# ---------------------------------------------------------------- base model


_NESTED = contextvars.ContextVar("jaxalign_config_nested", default=False)


class Section(BaseModel):
    """Shared rules: unknown keys rejected, defaults validated, immutable.

    Subclasses set ``config_error`` (the :class:`ConfigError` subclass
    raised), and on a root section ``literal_hints`` and
    ``input_error_kinds`` (see the module docstring).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    config_error: ClassVar[type[ConfigError]] = ConfigError
    literal_hints: ClassVar[dict[str, str]] = {}
    input_error_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **data):
        # pydantic calls a custom __init__ for nested tables too: only the
        # outermost call turns the errors into a ConfigError
        if _NESTED.get():
            super().__init__(**data)
            return
        token = _NESTED.set(True)
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise type(self).config_error(problems(error, type(self))) from None
        finally:
            _NESTED.reset(token)

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        """Validate plain data (a dict as TOML gives it); raises ConfigError listing every problem."""
        return cls._validate(obj, None, *args, **kwargs)

    @classmethod
    def _validate(cls, obj, source, *args, **kwargs):
        token = _NESTED.set(True)
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as error:
            raise cls.config_error(problems(error, cls), source) from None
        finally:
            _NESTED.reset(token)

    def _canonical(self) -> dict:
        """JSON-ready settings with kind-dependent defaults filled in (for hashing)."""
        out = {}
        for name in type(self).model_fields:
            out[name] = canonical(getattr(self, name))
        return out


def canonical(value):
    """A section's (or a list of sections') ``_canonical`` settings; other values as they are."""
    if isinstance(value, Section):
        return value._canonical()
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def custom(message: str, **ctx):
    """A problem found by a validator (``raise custom("... {x}", x=...)``), reported on its table."""
    return PydanticCustomError("config", message, ctx or None)


def cross(found):
    """Raise problems found across fields: each ``(key, message)`` becomes its own line."""
    if found:
        raise PydanticCustomError("cross", "{problems}", {"problems": tuple(found)})


def choices(values) -> str:
    """``'a', 'b'``: allowed values as they are written in a message."""
    return ", ".join(repr(v) for v in values)


def read_toml(path, error: type[ConfigError] = ConfigError, what: str = "config file") -> dict:
    """The tables of a TOML file; FileNotFoundError naming it, or ``error`` for bad TOML syntax."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise error([f"not valid TOML: {exc}"], source=path) from None
    except UnicodeDecodeError as exc:
        raise error([f"not a UTF-8 text file ({exc})"], source=path) from None


# ------------------------------------------------------------ error messages


def _unwrap(tp):
    """Strip Annotated / Optional; return (type, metadata list)."""
    meta = []
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            args = typing.get_args(tp)
            tp, meta = args[0], meta + list(args[1:])
            continue
        if origin is Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, meta


def _union_member(tp, tag):
    for arg in typing.get_args(tp):
        inner, meta = _unwrap(arg)
        if any(isinstance(m, Tag) and m.tag == tag for m in meta):
            return arg
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for key in ("kind", "method"):
                f = inner.model_fields.get(key)
                if f is not None and f.default == tag:
                    return arg
    return None


def _walk(root, loc):
    """Display path of a pydantic error location, the type it ends on, and the model holding its last key."""
    parts, tp, holder = [], root, None
    for item in loc:
        tp, _ = _unwrap(tp)
        if typing.get_origin(tp) is Union:  # a tagged union: this item is the tag, not shown
            member = _union_member(tp, item)
            if member is not None:
                tp = member
                continue
            return parts + [str(item)], Any, holder
        if isinstance(item, int):
            parts.append(f"[{item}]")
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            holder = tp
            parts.append(str(item))
            field = tp.model_fields.get(item)
            if field is None:
                tp = Any
            elif field.metadata:
                tp = Annotated[(field.annotation, *field.metadata)]
            else:
                tp = field.annotation
            continue
        parts.append(str(item))
        tp = Any
    return parts, _unwrap(tp)[0], holder


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += p if p.startswith("[") or not out else "." + p
    return out


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _tags(tp) -> list[str]:
    tags = []
    for arg in typing.get_args(tp):
        _, meta = _unwrap(arg)
        tags += [m.tag for m in meta if isinstance(m, Tag)]
    return tags


def _tag_key(tp) -> str:
    """The key that picks a union member: 'method' for [encoding], else 'kind'."""
    for arg in typing.get_args(tp):
        inner, meta = _unwrap(arg)
        tags = [m.tag for m in meta if isinstance(m, Tag)]
        if isinstance(inner, type) and issubclass(inner, BaseModel) and tags:
            for key in ("kind", "method"):
                field = inner.model_fields.get(key)
                if field is not None and field.default == tags[0]:
                    return key
    return "kind"


def problems(error: ValidationError, root) -> list[str]:
    """One line per problem of a pydantic error raised validating ``root``: ``section.key: what is wrong (allowed: ...)``."""
    out = []
    hints = getattr(root, "literal_hints", {})
    shown = ("config", *getattr(root, "input_error_kinds", ()))
    for e in error.errors(include_url=False):
        parts, tp, holder = _walk(root, e["loc"])
        kind, ctx = e["type"], e.get("ctx") or {}
        where = _path(parts)
        if kind == "cross":  # several problems found across the fields of one table
            out.extend(f"{_key(where, key)}: {msg}" for key, msg in ctx["problems"])
        elif kind == "extra_forbidden":
            allowed = ", ".join(holder.model_fields) if holder is not None else "?"
            out.append(f"{where}: unknown key (allowed: {allowed})")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            key = _tag_key(tp)
            allowed = choices(_tags(tp))
            if kind == "union_tag_invalid":
                out.append(f"{_key(where, key)}: unknown {key} {ctx.get('tag')!r} (allowed: {allowed})")
            else:
                out.append(f"{_key(where, key)}: required (allowed: {allowed})")
        elif kind == "missing":
            out.append(f"{where}: required")
        elif kind == "literal_error" and where in hints:
            out.append(f"{where}: {_short(e['input'])} is not allowed (allowed: {hints[where]})")
        elif kind == "literal_error":
            expected = str(ctx.get("expected", "")).replace(" or ", ", ")
            out.append(f"{where}: {_short(e['input'])} is not allowed (allowed: {expected})")
        elif kind in shown:
            out.append(f"{where or '(top level)'}: {e['msg']} (got {_short(e.get('input'))})"
                            if kind != "config" else f"{where or '(top level)'}: {e['msg']}")
        else:
            msg = _MESSAGES.get(kind, e["msg"])
            if callable(msg):
                msg = msg(ctx)
            out.append(f"{where or '(top level)'}: {msg} (got {_short(e.get('input'))})")
    return out


_MESSAGES = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "string_type": "expected a string", "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "list_type": "expected a list", "tuple_type": "expected a list",
    "model_type": "expected a table", "model_attributes_type": "expected a table", "dict_type": "expected a table",
    "greater_than_equal": lambda c: f"must be >= {_num(c.get('ge'))}",
    "greater_than": lambda c: f"must be > {_num(c.get('gt'))}",
    "less_than_equal": lambda c: f"must be <= {_num(c.get('le'))}",
    "less_than": lambda c: f"must be < {_num(c.get('lt'))}",
    "too_short": lambda c: f"needs at least {c.get('min_length')} item(s)",
    "too_long": lambda c: f"takes at most {c.get('max_length')} item(s)",
    "finite_number": "must be a finite number",
}


def _num(x):
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
