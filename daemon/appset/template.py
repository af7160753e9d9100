"""ApplicationSet templating: Argo CD's fasttemplate `{{param}}` form and a Go-template subset.

Both forms are applied to every string of a template (mapping keys included), recursively.
Where Argo CD would silently produce a broken Application, gitopsd refuses instead:

- fasttemplate: a tag naming an unknown parameter is an error. Argo CD leaves `{{tag}}` in the
  output verbatim, which ships names such as `{{nmae}}-web` to the cluster.
- Go template: `missingkey=error` is the default, not just the recommended option, and printing
  a nil value (Go's `<no value>`) is an error under it. `goTemplateOptions` may still select
  `missingkey=default`, `zero` or `invalid` to get Go's `<no value>` behaviour back.

The Go-template engine implements what ApplicationSet templates use: field chains (`.a.b`, `$`,
`$.a`), string / number / bool / nil literals, parenthesised sub-pipelines, `|` pipelines,
`{{- ... -}}` whitespace trimming, comments, `if` / `else if` / `else` / `end`, `range` and
`with` (with `$k, $v :=` / `$v :=` declarations and `else`), and the functions in `FUNCTIONS`.
Anything else (`define`, free-standing variable declarations, methods, ...) raises
`TemplateError` naming the construct. Notification templates use the same engine.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from daemon.errors import ConfigError

_FAST_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
_DNS_INVALID = re.compile(r"[^-a-z0-9.]")
_MAX_DNS_NAME = 253
_SPACE = " \t\r\n"
_MISSINGKEY = ("error", "default", "zero", "invalid")


class TemplateError(ConfigError):
    """An ApplicationSet template could not be rendered; the message names field and cause."""


def normalize(name: str) -> str:
    """Argo CD's `SanitizeName`: lower-case, `[^-a-z0-9.]` -> `-`, at most 253 chars, trimmed."""
    name = _DNS_INVALID.sub("-", name.lower())[:_MAX_DNS_NAME]
    return name.strip("-.")


def scalar_text(value: Any) -> str:
    """A scalar as fasttemplate parameters hold it: Go's `%v`, but `null` as the empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def render_template(
    template: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    go_template: bool,
    options: Sequence[str],
    where: str,
    keep_unknown: bool = False,
) -> dict[str, Any]:
    """`template` with every string (keys and values) rendered against `params`.

    fasttemplate params are flat dotted keys (`metadata.labels.env`); Go-template params are
    nested mappings (`.metadata.labels.env`). `keep_unknown` (fasttemplate only) leaves unknown
    tags verbatim as Argo CD does; it is meant for interpolating a matrix child's own config,
    where tags may name the child's parameters rather than its sibling's.
    """
    strict = _strict(options, where) if go_template else True

    def one(text: str, path: str) -> str:
        if "{{" not in text:
            return text
        if go_template:
            return _render_go(text, params, strict=strict, where=f"{where}: {path}")
        return _render_fast(text, params, keep_unknown=keep_unknown, where=f"{where}: {path}")

    rendered = _walk(dict(template), one, "")
    assert isinstance(rendered, dict)
    return rendered


def render_string(
    text: str,
    params: Mapping[str, Any],
    *,
    go_template: bool,
    options: Sequence[str],
    where: str,
) -> str:
    """One string rendered like a template field (used for generator `values`)."""
    if "{{" not in text:
        return text
    if go_template:
        return _render_go(text, params, strict=_strict(options, where), where=where)
    return _render_fast(text, params, keep_unknown=False, where=where)


def _walk(value: Any, render: Callable[[str, str], str], path: str) -> Any:
    if isinstance(value, str):
        return render(value, path or "(value)")
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            new_key = render(key, sub) if isinstance(key, str) else key
            out[new_key] = _walk(item, render, sub)
        return out
    if isinstance(value, list):
        return [_walk(item, render, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _strict(options: Sequence[str], where: str) -> bool:
    strict = True
    for option in options:
        key, _, val = str(option).partition("=")
        if key.strip() != "missingkey" or val.strip() not in (
            "error",
            "default",
            "zero",
            "invalid",
        ):
            raise TemplateError(
                f"{where}: goTemplateOptions: unsupported option {option!r} "
                "(supported: missingkey=error|default|zero|invalid)"
            )
        strict = val.strip() == "error"
    return strict


# --- fasttemplate ----------------------------------------------------------------------------


def _render_fast(text: str, params: Mapping[str, Any], *, keep_unknown: bool, where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        tag = match.group(1).strip()
        value = params.get(tag) if tag else None
        if isinstance(value, str):
            return value
        if keep_unknown:
            return match.group(0)
        if not tag:
            raise TemplateError(f"{where}: empty parameter reference '{{{{}}}}'")
        known = ", ".join(sorted(params)[:20]) or "none"
        raise TemplateError(
            f"{where}: parameter {tag!r} is not defined by the generator "
            f"(available: {known}); Argo CD would leave '{{{{{tag}}}}}' in the output"
        )

    out = _FAST_TAG.sub(replace, text)
    rest = _FAST_TAG.sub("", text)
    if "{{" in rest and not keep_unknown:
        raise TemplateError(f"{where}: '{{{{' without a closing '}}}}' in {text!r}")
    return out


# --- Go template: lexing ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>/\*.*?\*/)
  | (?P<str>"(?:\\.|[^"\\])*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:\\.|[^'\\])+')
  | (?P<decl>:=|=)
  | (?P<comma>,)
  | (?P<pipe>\|)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<var>\$\w*(?:\.[A-Za-z_]\w*)*)
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
  | (?P<field>(?:\.[A-Za-z_]\w*)+|\.)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<other>.)
    """,
    re.X | re.S,
)
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break"}
_KEYWORDS |= {"continue"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    spaced: bool = False  # whitespace came before it (`(f x) .y` is two operands)


@dataclass(frozen=True, slots=True)
class _Operand:
    kind: str  # field | var | lit | func | sub
    path: tuple[str, ...] = ()
    value: Any = None
    sub: tuple[tuple[_Operand, ...], ...] = ()


_Pipeline = tuple[tuple[_Operand, ...], ...]


@dataclass(frozen=True, slots=True)
class _Action:
    pipeline: _Pipeline


@dataclass(frozen=True, slots=True)
class _If:
    branches: tuple[tuple[_Pipeline, tuple[_Node, ...]], ...]
    otherwise: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Range:
    """`range [$k, ]$v := PIPE` (or `range PIPE`) ... [else ...] end; `with` when `is_with`."""

    names: tuple[str, ...]
    pipeline: _Pipeline
    body: tuple[_Node, ...]
    otherwise: tuple[_Node, ...]
    is_with: bool = False


_Node = str | _Action | _If | _Range


def _split_actions(text: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", inner)] with `{{-`/`-}}` trimming already applied."""
    parts: list[tuple[str, str]] = []
    i, n = 0, len(text)
    trim_next = False
    while True:
        j = text.find("{{", i)
        chunk = text[i:] if j < 0 else text[i:j]
        if trim_next:
            chunk = chunk.lstrip(_SPACE)
        k = j + 2
        if j >= 0 and text.startswith("-", k) and k + 1 < n and text[k + 1] in _SPACE:
            chunk = chunk.rstrip(_SPACE)
            k += 2
        parts.append(("text", chunk))
        if j < 0:
            return parts
        end = _find_close(text, k)
        if end < 0:
            raise _Syntax(f"unclosed action starting at {text[j : j + 20]!r}")
        inner = text[k:end]
        trim_next = len(inner) >= 2 and inner[-1] == "-" and inner[-2] in _SPACE
        if trim_next:
            inner = inner[:-1]
        parts.append(("action", inner))
        i = end + 2


def _find_close(text: str, pos: int) -> int:
    quote = ""
    while pos < len(text):
        c = text[pos]
        if quote:
            if c == "\\" and quote != "`":
                pos += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if close < 0:
                return -1
            pos = close + 2
            continue
        elif text.startswith("}}", pos):
            return pos
        pos += 1
    return -1


class _Syntax(Exception):
    """A parse problem; turned into TemplateError with the field's location."""


def _tokens(inner: str) -> list[_Tok]:
    out: list[_Tok] = []
    spaced = False
    for m in _TOKEN.finditer(inner):
        kind = m.lastgroup or "other"
        if kind in ("ws", "comment"):
            spaced = True
            continue
        if kind == "other":
            raise _Syntax(f"unexpected character {m.group()!r} in {{{{{inner}}}}}")
        out.append(_Tok(kind, m.group(), spaced))
        spaced = False
    return out


# --- Go template: parsing --------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _split_actions(text)
        self.pos = 0

    def parse(self) -> tuple[_Node, ...]:
        nodes, stop = self._nodes()
        if stop is not None:
            raise _Syntax(f"unexpected {{{{{stop[0]}}}}} without a matching {{{{if}}}}")
        return nodes

    def _nodes(self) -> tuple[tuple[_Node, ...], tuple[str, list[_Tok]] | None]:
        """Nodes up to the end, or up to an `else` / `end` (returned as the stop)."""
        nodes: list[_Node] = []
        while self.pos < len(self.items):
            kind, payload = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                if payload:
                    nodes.append(payload)
                continue
            toks = _tokens(payload)
            if not toks:
                if payload.strip().startswith("/*"):
                    continue
                raise _Syntax("empty action {{}}")
            head = toks[0]
            if head.kind == "ident" and head.text in ("else", "end"):
                return tuple(nodes), (head.text, toks[1:])
            if head.kind == "ident" and head.text == "if":
                nodes.append(self._if(toks[1:]))
            elif head.kind == "ident" and head.text in ("range", "with"):
                nodes.append(self._range(toks[1:], is_with=head.text == "with"))
            elif head.kind == "ident" and head.text in _KEYWORDS:
                raise _Syntax(f"{{{{{head.text}}}}} is not supported by gitopsd's Go templates")
            else:
                nodes.append(_Action(_pipeline(toks)))
        return tuple(nodes), None

    def _range(self, toks: list[_Tok], *, is_with: bool) -> _Range:
        word = "with" if is_with else "range"
        names: tuple[str, ...] = ()
        decl = next((i for i, t in enumerate(toks) if t.kind == "decl"), -1)
        if decl >= 0:
            head = [t for t in toks[:decl] if t.kind != "comma"]
            if (
                not head
                or len(head) > (1 if is_with else 2)
                or any(t.kind != "var" or "." in t.text or t.text == "$" for t in head)
            ):
                raise _Syntax(f"bad variable declaration in {{{{{word}}}}}")
            names, toks = tuple(t.text for t in head), toks[decl + 1 :]
        pipe = _pipeline(toks)
        body, stop = self._nodes()
        if stop is None:
            raise _Syntax(f"{{{{{word}}}}} without {{{{end}}}}")
        otherwise: tuple[_Node, ...] = ()
        if stop[0] == "else":
            if stop[1]:
                raise _Syntax(f"{{{{else {stop[1][0].text}}}}} is not supported in {word}")
            otherwise, stop = self._nodes()
            if stop is None or stop[0] != "end":
                raise _Syntax(f"{{{{else}}}} without {{{{end}}}} in {word}")
        if stop[1]:
            raise _Syntax("unexpected tokens after {{end}}")
        return _Range(names, pipe, body, otherwise, is_with)

    def _if(self, cond: list[_Tok]) -> _If:
        branches: list[tuple[_Pipeline, tuple[_Node, ...]]] = []
        pipe = _pipeline(cond)
        while True:
            body, stop = self._nodes()
            if stop is None:
                raise _Syntax("{{if}} without {{end}}")
            branches.append((pipe, body))
            word, rest = stop
            if word == "end":
                if rest:
                    raise _Syntax("unexpected tokens after {{end}}")
                return _If(tuple(branches), ())
            if rest and rest[0].kind == "ident" and rest[0].text == "if":
                pipe = _pipeline(rest[1:])
                continue
            if rest:
                raise _Syntax(f"{{{{else {rest[0].text}}}}} is not supported")
            otherwise, stop = self._nodes()
            if stop is None or stop[0] != "end" or stop[1]:
                raise _Syntax("{{else}} without {{end}}")
            return _If(tuple(branches), otherwise)


def _pipeline(toks: list[_Tok]) -> _Pipeline:
    if not toks:
        raise _Syntax("missing value for command")
    if any(t.kind == "decl" for t in toks):
        raise _Syntax("variable declarations ($x := ...) are not supported")
    commands: list[tuple[_Operand, ...]] = []
    it = iter(_group(toks))
    current: list[_Operand] = []
    for item in it:
        if isinstance(item, _Tok) and item.kind == "pipe":
            if not current:
                raise _Syntax("missing command before '|'")
            commands.append(tuple(current))
            current = []
            continue
        current.append(_operand(item))
    if not current:
        raise _Syntax("missing command after '|'")
    commands.append(tuple(current))
    for cmd in commands:
        if cmd[0].kind != "func" and len(cmd) > 1:
            raise _Syntax("arguments given to a non-function (methods are not supported)")
    for cmd in commands[1:]:
        if cmd[0].kind != "func":
            raise _Syntax("only functions may follow '|'")
    return tuple(commands)


def _group(toks: list[_Tok]) -> Iterator[_Tok | list[_Tok]]:
    """Tokens with each parenthesised group collected into a list (a field chain right after
    the group, as in `(index .items 0).name`, is its last element, a "chain" token)."""
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "rp":
            raise _Syntax("unexpected ')'")
        if tok.kind != "lp":
            yield tok
            i += 1
            continue
        depth, j = 1, i + 1
        while j < len(toks) and depth:
            depth += {"lp": 1, "rp": -1}.get(toks[j].kind, 0)
            j += 1
        if depth:
            raise _Syntax("unclosed '('")
        group = toks[i + 1 : j - 1]
        if j < len(toks) and toks[j].kind == "field" and not toks[j].spaced:
            group = [*group, _Tok("chain", toks[j].text)]
            j += 1
        yield group
        i = j


def _operand(item: _Tok | list[_Tok]) -> _Operand:
    if isinstance(item, list):
        if item and item[-1].kind == "chain":
            chain = tuple(p for p in item[-1].text.split(".") if p)
            return _Operand("sub", path=chain, sub=_pipeline(item[:-1]))
        return _Operand("sub", sub=_pipeline(item))
    kind, text = item.kind, item.text
    if kind == "field":
        return _Operand("field", path=tuple(p for p in text.split(".") if p))
    if kind == "var":
        name, *path = text.split(".")
        return _Operand("var", path=tuple(path), value=name)
    if kind == "str":
        try:
            return _Operand("lit", value=json.loads(text))
        except ValueError:
            raise _Syntax(f"unsupported escape in string literal {text}") from None
    if kind == "raw":
        return _Operand("lit", value=text[1:-1])
    if kind == "num":
        clean = text.replace("_", "")
        if re.fullmatch(r"[+-]?\d+", clean):
            return _Operand("lit", value=int(clean))
        if clean.lower().lstrip("+-").startswith("0x"):
            return _Operand("lit", value=int(clean, 16))
        return _Operand("lit", value=float(clean))
    if kind == "ident":
        if text in ("true", "false"):
            return _Operand("lit", value=text == "true")
        if text == "nil":
            return _Operand("lit", value=None)
        if text in _KEYWORDS:
            raise _Syntax(f"unexpected keyword {text!r}")
        if text not in FUNCTIONS and text not in ("and", "or"):
            raise _Syntax(f"function {text!r} is not supported by gitopsd's Go templates")
        return _Operand("func", value=text)
    if kind == "char":
        raise _Syntax("character literals are not supported")
    raise _Syntax(f"unexpected {text!r}")


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> tuple[_Node, ...]:
    return _Parser(text).parse()


# --- Go template: execution ------------------------------------------------------------------


class _Fail(Exception):
    """An execution problem; turned into TemplateError with the field's location."""


def _render_go(text: str, data: Mapping[str, Any], *, strict: bool, where: str) -> str:
    try:
        nodes = _parse(text)
        return _Exec(data, strict).run(nodes)
    except (_Syntax, _Fail) as e:
        raise TemplateError(f"{where}: {e} (in template {_short(text)!r})") from None


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


class _Exec:
    def __init__(self, data: Mapping[str, Any], strict: bool) -> None:
        self.data = data
        self.strict = strict
        self.dot: Any = data  # `.`: the data, or the element a range / with is on
        self.vars: dict[str, Any] = {}  # $name -> value, declared by range / with

    def run(self, nodes: tuple[_Node, ...]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Action):
                value = self.pipeline(node.pipeline)
                if value is None and self.strict:
                    raise _Fail("the action produced no value (nil); use default or if")
                out.append("<no value>" if value is None else go_print(value))
            elif isinstance(node, _Range):
                out.append(self.range(node))
            else:
                for cond, body in node.branches:
                    if truth(self.pipeline(cond)):
                        out.append(self.run(body))
                        break
                else:
                    out.append(self.run(node.otherwise))
        return "".join(out)

    def range(self, node: _Range) -> str:
        """`range` over a list (index, element) or a map (key, value, in key order), or
        `with` a value; the body sees the element as `.`, the `else` runs when empty."""
        value = self.pipeline(node.pipeline)
        items: list[tuple[Any, Any]]
        if node.is_with:
            items = [(None, value)] if truth(value) else []
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif value is None:
            items = []
        else:
            raise _Fail(f"range can't iterate over {go_print(value)}")
        if not items:
            return self.run(node.otherwise)
        saved_dot, saved_vars = self.dot, dict(self.vars)
        out: list[str] = []
        try:
            for key, item in items:
                self.dot = item
                if len(node.names) == 1:
                    self.vars[node.names[0]] = item
                elif len(node.names) == 2:
                    self.vars[node.names[0]], self.vars[node.names[1]] = key, item
                out.append(self.run(node.body))
        finally:
            self.dot, self.vars = saved_dot, saved_vars
        return "".join(out)

    def pipeline(self, pipe: _Pipeline) -> Any:
        value: Any = None
        for i, cmd in enumerate(pipe):
            value = self.command(cmd, piped=i > 0, value=value)
        return value

    def command(self, cmd: tuple[_Operand, ...], *, piped: bool, value: Any) -> Any:
        head = cmd[0]
        if head.kind != "func":
            return self.operand(head)
        name = str(head.value)
        if name in ("and", "or"):
            return self.logic(name, cmd[1:], piped=piped, value=value)
        args = [self.operand(op) for op in cmd[1:]]
        if piped:
            args.append(value)
        try:
            return FUNCTIONS[name](*args)
        except _Fail as e:
            raise _Fail(f"error calling {name}: {e}") from None
        except TypeError:
            raise _Fail(
                f"wrong number or type of arguments for {name} ({len(args)} given)"
            ) from None

    def logic(self, name: str, ops: tuple[_Operand, ...], *, piped: bool, value: Any) -> Any:
        if not ops and not piped:
            raise _Fail(f"wrong number of args for {name}: want at least 1 got 0")
        thunks: list[Callable[[], Any]] = [functools.partial(self.operand, op) for op in ops]
        if piped:
            thunks.append(lambda: value)
        result: Any = None
        for thunk in thunks:
            result = thunk()
            if truth(result) != (name == "and"):
                return result
        return result

    def operand(self, op: _Operand) -> Any:
        if op.kind == "lit":
            return op.value
        if op.kind == "sub":
            value = self.pipeline(op.sub)
            return self.field(value, op.path, "(...)") if op.path else value
        if op.kind == "func":
            return self.command((op,), piped=False, value=None)
        if op.kind == "var":
            name = str(op.value or "$")
            if name == "$":
                return self.field(self.data, op.path, "$")
            if name not in self.vars:
                raise _Fail(f"undefined variable {name}")
            return self.field(self.vars[name], op.path, name)
        return self.field(self.dot, op.path, "")

    def field(self, base: Any, path: tuple[str, ...], shown: str) -> Any:
        value = base
        for name in path:
            shown = f"{shown}.{name}"
            if isinstance(value, Mapping):
                if name in value:
                    value = value[name]
                elif self.strict:
                    raise _Fail(f"map has no entry for key {name!r} (evaluating {shown})")
                else:
                    value = None
            elif value is None:
                raise _Fail(f"nil value evaluating {shown}")
            else:
                raise _Fail(f"can't evaluate field {name} in type {_type(value)} ({shown})")
        return value


# --- Go template: values and functions -------------------------------------------------------


def truth(value: Any) -> bool:
    """Go template truthiness: false, 0, nil and empty strings / lists / maps are false."""
    if value is None:
        return False
    if isinstance(value, bool | int | float | str | list | tuple | dict):
        return bool(value)
    return True


def go_print(value: Any, *, nested: bool = False) -> str:
    """A value as Go's `fmt.Print` shows it (lists as `[a b]`, maps as `map[k:v]`)."""
    if value is None:
        return "<nil>" if nested else "<no value>"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v, nested=True) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{k}:{go_print(value[k], nested=True)}" for k in sorted(value, key=str))
        return "map[" + " ".join(items) + "]"
    return str(value)


def _go_float(value: float) -> str:
    """Go's `%v` for a float64: shortest digits, exponent form below 1e-4 and from 1e6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exp = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exp, int)
    text = "".join(map(str, digits))
    point = len(text) + exp  # position of the decimal point
    x = point - 1
    head = "-" if sign else ""
    if x < -4 or x >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{head}{mantissa}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    if point <= 0:
        return f"{head}0.{'0' * -point}{text}"
    if point >= len(text):
        return head + text + "0" * (point - len(text))
    return f"{head}{text[:point]}.{text[point:]}"


def _type(value: Any) -> str:
    return {
        str: "string",
        bool: "bool",
        int: "int",
        float: "float64",
        list: "[]interface {}",
        dict: "map[string]interface {}",
    }.get(type(value), type(value).__name__)


def _str(value: Any, fn: str) -> str:
    if not isinstance(value, str):
        raise _Fail(f"{fn} expects a string, got {_type(value)} {go_print(value)!r}")
    return value


def _empty(value: Any) -> bool:
    return not truth(value)


def _default(default: Any, *given: Any) -> Any:
    if not given or _empty(given[0]):
        return default
    return given[0]


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _quote(*values: Any) -> str:
    return " ".join(_go_quote(go_print(v)) for v in values if v is not None)


def _squote(*values: Any) -> str:
    return " ".join(f"'{go_print(v)}'" for v in values if v is not None)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                raise _Fail(f"map key must be a string, got {_type(key)}")
            item = item.get(key)
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _Fail(f"cannot index a list with {_type(key)}")
            if not 0 <= key < len(item):
                raise _Fail(f"index out of range: {key}")
            item = item[key]
        elif item is None:
            raise _Fail("index of untyped nil")
        else:
            raise _Fail(f"can't index item of type {_type(item)}")
    return item


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return _type(value)


def _comparable(a: Any, b: Any, ordered: bool) -> None:
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        raise _Fail(f"incompatible types for comparison: {_type(a)} and {_type(b)}")
    allowed = ("number", "string") if ordered else ("number", "string", "bool", "nil")
    if ka not in allowed:
        raise _Fail(f"invalid type for comparison: {_type(a)}")


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _Fail("missing argument for comparison")
    for b in others:
        if a is None or b is None:
            if a is b:
                return True
            continue
        _comparable(a, b, ordered=False)
        if a == b:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        _comparable(a, b, ordered=True)
        return op(a, b)

    return compare


def _printf(fmt: Any, *args: Any) -> str:
    fmt = _str(fmt, "printf")
    queue = list(args)
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?(.)", fmt, re.S):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if not queue:
            raise _Fail(f"missing argument for %{verb} in {fmt!r}")
        out.append(_verb(verb, queue.pop(0), flags, width, prec))
    out.append(fmt[pos:])
    if queue:
        raise _Fail(f"{len(queue)} extra argument(s) for {fmt!r}")
    return "".join(out)


def _verb(verb: str, arg: Any, flags: str, width: str | None, prec: str | None) -> str:
    if verb in "sv":
        text = go_print(arg, nested=True)
        if prec is not None and verb == "s":
            text = text[: int(prec)]
    elif verb == "q":
        text = _go_quote(go_print(arg, nested=True))
    elif verb == "d":
        if not isinstance(arg, int) or isinstance(arg, bool):
            raise _Fail(f"%d needs an integer, got {_type(arg)} {go_print(arg)!r}")
        text = f"{arg:+d}" if "+" in flags else str(arg)
    elif verb == "t":
        if not isinstance(arg, bool):
            raise _Fail(f"%t needs a bool, got {_type(arg)}")
        text = go_print(arg)
    elif verb == "f":
        if not isinstance(arg, int | float) or isinstance(arg, bool):
            raise _Fail(f"%f needs a number, got {_type(arg)}")
        text = f"{float(arg):.{6 if prec is None else int(prec)}f}"
    else:
        raise _Fail(f"verb %{verb} is not supported (use %s %v %q %d %t %f)")
    if width:
        if "-" in flags:
            return text.ljust(int(width))
        return text.rjust(int(width), "0" if "0" in flags and verb in "df" else " ")
    return text


def _len(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict):
        return len(value)
    raise _Fail(f"len of type {_type(value)}")


def _join(sep: Any, items: Any) -> str:
    if not isinstance(items, list | tuple):
        raise _Fail(f"join expects a list, got {_type(items)}")
    return _str(sep, "join").join(go_print(i, nested=True) for i in items)


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": lambda sub, s: _str(sub, "contains") in _str(s, "contains"),
    "default": _default,
    "empty": _empty,
    "eq": _eq,
    "ge": _ordered(lambda a, b: a >= b),
    "gt": _ordered(lambda a, b: a > b),
    "hasPrefix": lambda p, s: _str(s, "hasPrefix").startswith(_str(p, "hasPrefix")),
    "hasSuffix": lambda p, s: _str(s, "hasSuffix").endswith(_str(p, "hasSuffix")),
    "index": _index,
    "join": _join,
    "le": _ordered(lambda a, b: a <= b),
    "len": _len,
    "lower": lambda s: _str(s, "lower").lower(),
    "lt": _ordered(lambda a, b: a < b),
    "ne": lambda a, b: not _eq(a, b),
    "normalize": lambda s: normalize(_str(s, "normalize")),
    "not": lambda v: not truth(v),
    "printf": _printf,
    "quote": _quote,
    "replace": lambda old, new, s: _str(s, "replace").replace(
        _str(old, "replace"), _str(new, "replace")
    ),
    "squote": _squote,
    "toJson": _to_json,
    "trim": lambda s: _str(s, "trim").strip(),
    # sprig's trunc: the first n characters (the last -n when n is negative).
    "trunc": lambda n, s: _str(s, "trunc")[: int(n)] if int(n) >= 0 else _str(s, "trunc")[int(n) :],
    "trimPrefix": lambda p, s: _str(s, "trimPrefix").removeprefix(_str(p, "trimPrefix")),
    "trimSuffix": lambda p, s: _str(s, "trimSuffix").removesuffix(_str(p, "trimSuffix")),
    "upper": lambda s: _str(s, "upper").upper(),
}
"""Functions available to Go templates (Go builtins and the Sprig / Argo CD ones listed)."""
