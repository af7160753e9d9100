"""The condition language of Argo Rollouts' analysis (`successCondition: result[0] >= 0.95`).

Argo Rollouts evaluates conditions with expr (github.com/expr-lang/expr). No maintained Python
library implements that language, and Python's own `eval` must never see a template's text, so
this is a small parser and evaluator for the part of expr that analysis conditions use:

- literals: numbers, strings, `true`, `false`, `nil`, arrays `[a, b]`;
- `result` (the metric's value), member access `a.b`, indexing `a[0]` (negative from the end);
- operators, loosest first: `? :`, `??`, `||`/`or`, `&&`/`and`, `==` `!=` `<` `<=` `>` `>=`
  `in` `not in` `contains` `startsWith` `endsWith` `matches`, `+` `-`, `*` `/` `%`, `**`/`^`,
  unary `!`/`not` and `-`;
- functions: `len`, `abs`, `max`, `min`, `sum`, `mean`, `isNaN`, `isInf`, `isNil`, `asInt`,
  `asFloat`, `default(x, fallback)`, and the predicates `all`, `any`, `none`, `one`,
  `filter`, `map`, `count` over `#` (the current element).

Errors (unknown names, wrong types, an index out of range) raise `ExprError`; the analysis
records them as the measurement's Error, as Argo Rollouts does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ExprError(ValueError):
    """A condition that does not parse or cannot be evaluated."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>\*\*|==|!=|<=|>=|&&|\|\||\?\?|[-+*/%^<>!()\[\],.?:#]))"
)
MAX_LENGTH = 4096
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, str, name, op, end
    text: str


def _tokens(text: str) -> list[_Tok]:
    if len(text) > MAX_LENGTH:
        raise ExprError(f"condition longer than {MAX_LENGTH} characters")
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"unexpected character {text[pos:].strip()[:1]!r} at {pos}")
        kind = m.lastgroup or "op"
        out.append(_Tok(kind, m.group(kind)))
        pos = m.end()
    out.append(_Tok("end", ""))
    return out


Node = tuple[Any, ...]
_BINARY = [
    ("??",),
    ("||", "or"),
    ("&&", "and"),
    (
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "in",
        "not in",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
    ),
    ("+", "-"),
    ("*", "/", "%"),
]


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self, offset: int = 0) -> _Tok:
        return self.toks[min(self.i + offset, len(self.toks) - 1)]

    def take(self, text: str | None = None) -> _Tok:
        tok = self.peek()
        if text is not None and tok.text != text:
            raise ExprError(f"expected {text!r}, found {tok.text or 'the end'!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.ternary()
        if self.peek().kind != "end":
            raise ExprError(f"unexpected {self.peek().text!r}")
        return node

    def ternary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError("condition nested too deeply")
        cond = self.binary(0)
        if self.peek().text == "?":
            self.take()
            yes = self.ternary()
            self.take(":")
            no = self.ternary()
            cond = ("if", cond, yes, no)
        self.depth -= 1
        return cond

    def _op(self, level: int) -> str | None:
        tok = self.peek()
        if level == 3 and tok.text == "not" and self.peek(1).text == "in":
            return "not in"
        return tok.text if tok.kind in ("op", "name") and tok.text in _BINARY[level] else None

    def binary(self, level: int) -> Node:
        if level == len(_BINARY):
            return self.power()
        left = self.binary(level + 1)
        while (op := self._op(level)) is not None:
            self.take()
            if op == "not in":
                self.take()
            left = ("bin", op, left, self.binary(level + 1))
        return left

    def power(self) -> Node:
        base = self.unary()
        if self.peek().text in ("**", "^"):
            self.take()
            return ("bin", "**", base, self.power())
        return base

    def unary(self) -> Node:
        tok = self.peek()
        if tok.text in ("!", "not") and not (tok.text == "not" and self.peek(1).text == "in"):
            self.take()
            return ("not", self.unary())
        if tok.text in ("-", "+"):
            self.take()
            return ("neg", self.unary()) if tok.text == "-" else self.unary()
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek().text == "[":
                self.take()
                index = self.ternary()
                self.take("]")
                node = ("index", node, index)
            elif self.peek().text == "." and self.peek(1).kind == "name":
                self.take()
                node = ("index", node, ("lit", self.take().text))
            else:
                return node

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            is_float = any(c in tok.text for c in ".eE")
            return ("lit", float(tok.text) if is_float else int(tok.text))
        if tok.kind == "str":
            return ("lit", _unquote(tok.text))
        if tok.text == "(":
            node = self.ternary()
            self.take(")")
            return node
        if tok.text == "[":
            items = []
            while self.peek().text != "]":
                items.append(self.ternary())
                if self.peek().text != "]":
                    self.take(",")
            self.take("]")
            return ("list", items)
        if tok.text == "#":
            return ("elem",)
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return ("lit", tok.text == "true")
            if tok.text == "nil":
                return ("lit", None)
            if self.peek().text == "(":
                self.take()
                args = []
                while self.peek().text != ")":
                    args.append(self.ternary())
                    if self.peek().text != ")":
                        self.take(",")
                self.take(")")
                return ("call", tok.text, args)
            return ("var", tok.text)
        raise ExprError(f"unexpected {tok.text or 'end of condition'!r}")


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _num(v: Any, what: str) -> float | int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ExprError(f"{what}: expected a number, got {_type(v)}")
    return v


def _type(v: Any) -> str:
    if v is None:
        return "nil"
    return {
        bool: "bool",
        int: "int",
        float: "float",
        str: "string",
        list: "array",
        dict: "map",
    }.get(type(v), type(v).__name__)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op in ("==", "!="):
        same = a == b if not (isinstance(a, bool) or isinstance(b, bool)) else a is b
        return same if op == "==" else not same
    x: Any = a
    y: Any = b
    if not (isinstance(a, str) and isinstance(b, str)):
        x, y = _num(a, op), _num(b, op)
    return bool({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op])


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    x, y = _num(a, op), _num(b, op)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        if y == 0:
            return math.copysign(math.inf, x) if x else math.nan
        return x / y
    if op == "%":
        if not isinstance(x, int) or not isinstance(y, int):
            raise ExprError("%: expected integers")
        if y == 0:
            raise ExprError("integer divide by zero")
        return int(math.fmod(x, y))
    return float(x) ** float(y)


def _collection(v: Any, fn: str) -> list[Any]:
    if not isinstance(v, list):
        raise ExprError(f"{fn}: expected an array, got {_type(v)}")
    return v


_PREDICATES = {"all", "any", "none", "one", "filter", "map", "count"}


class _Eval:
    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env

    def run(self, node: Node, elem: Any = None) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "var":
            if node[1] not in self.env:
                raise ExprError(f"unknown name {node[1]!r}")
            return self.env[node[1]]
        if kind == "elem":
            return elem
        if kind == "list":
            return [self.run(n, elem) for n in node[1]]
        if kind == "not":
            v = self.run(node[1], elem)
            if not isinstance(v, bool):
                raise ExprError(f"!: expected bool, got {_type(v)}")
            return not v
        if kind == "neg":
            return -_num(self.run(node[1], elem), "-")
        if kind == "if":
            cond = self.run(node[1], elem)
            if not isinstance(cond, bool):
                raise ExprError(f"?: expected bool, got {_type(cond)}")
            return self.run(node[2] if cond else node[3], elem)
        if kind == "index":
            return self._index(self.run(node[1], elem), self.run(node[2], elem))
        if kind == "call":
            return self._call(node[1], node[2], elem)
        return self._binary(node[1], node[2], node[3], elem)

    def _index(self, base: Any, key: Any) -> Any:
        if isinstance(base, list):
            if isinstance(key, bool) or not isinstance(key, int):
                raise ExprError(f"array index must be an int, got {_type(key)}")
            if not -len(base) <= key < len(base):
                raise ExprError(f"index out of range: {key} (array of {len(base)})")
            return base[key]
        if isinstance(base, dict):
            return base.get(key)
        raise ExprError(f"cannot index {_type(base)}")

    def _binary(self, op: str, left: Node, right: Node, elem: Any) -> Any:
        a = self.run(left, elem)
        if op == "??":
            return a if a is not None else self.run(right, elem)
        if op in ("||", "or", "&&", "and"):
            if not isinstance(a, bool):
                raise ExprError(f"{op}: expected bool, got {_type(a)}")
            if (a and op in ("||", "or")) or (not a and op in ("&&", "and")):
                return a
            b = self.run(right, elem)
            if not isinstance(b, bool):
                raise ExprError(f"{op}: expected bool, got {_type(b)}")
            return b
        b = self.run(right, elem)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return _compare(op, a, b)
        if op in ("in", "not in"):
            found = (
                a in b
                if isinstance(b, list | str)
                else (a in b if isinstance(b, dict) else _fail(f"in: cannot search {_type(b)}"))
            )
            return found if op == "in" else not found
        if op in ("contains", "startsWith", "endsWith", "matches"):
            if not isinstance(a, str) or not isinstance(b, str):
                raise ExprError(f"{op}: expected strings")
            if op == "contains":
                return b in a
            if op == "startsWith":
                return a.startswith(b)
            if op == "endsWith":
                return a.endswith(b)
            try:
                return re.search(b, a) is not None
            except re.error as e:
                raise ExprError(f"matches: {e}") from e
        return _arith(op, a, b)

    def _call(self, fn: str, args: list[Node], elem: Any) -> Any:
        if fn in _PREDICATES:
            if len(args) != 2:
                raise ExprError(f"{fn}: expected 2 arguments")
            items = _collection(self.run(args[0], elem), fn)
            results = [self.run(args[1], x) for x in items]
            if fn == "map":
                return results
            if fn == "filter":
                return [x for x, r in zip(items, results, strict=True) if r is True]
            for r in results:
                if not isinstance(r, bool):
                    raise ExprError(f"{fn}: predicate must return bool, got {_type(r)}")
            if fn == "all":
                return all(results)
            if fn == "any":
                return any(results)
            if fn == "none":
                return not any(results)
            if fn == "one":
                return sum(results) == 1
            return sum(results)  # count
        values = [self.run(a, elem) for a in args]
        if fn == "default":
            if len(values) != 2:
                raise ExprError("default: expected 2 arguments")
            v = values[0]
            empty = v is None or v == [] or v == "" or (isinstance(v, float) and math.isnan(v))
            return values[1] if empty else v
        f = _FUNCTIONS.get(fn)
        if f is None:
            raise ExprError(f"unknown function {fn!r}")
        return f(*values)


def _fail(message: str) -> Any:
    raise ExprError(message)


def _one(fn: str, check: Callable[[Any], Any]) -> Callable[..., Any]:
    def call(*values: Any) -> Any:
        if len(values) != 1:
            raise ExprError(f"{fn}: expected 1 argument, got {len(values)}")
        return check(values[0])

    return call


def _as_int(v: Any) -> int:
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError as e:
            raise ExprError(f"asInt: {v!r} is not an integer") from e
    return int(_num(v, "asInt"))


def _as_float(v: Any) -> float:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError as e:
            raise ExprError(f"asFloat: {v!r} is not a number") from e
    return float(_num(v, "asFloat"))


def _numbers(fn: str, values: tuple[Any, ...]) -> list[float | int]:
    flat = values[0] if len(values) == 1 and isinstance(values[0], list) else list(values)
    if not flat:
        raise ExprError(f"{fn}: no values")
    return [_num(v, fn) for v in flat]


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _one(
        "len",
        lambda v: (
            len(v)
            if isinstance(v, list | str | dict)
            else _fail(f"len: invalid argument {_type(v)}")
        ),
    ),
    "abs": _one("abs", lambda v: abs(_num(v, "abs"))),
    "isNaN": _one("isNaN", lambda v: isinstance(v, float) and math.isnan(v)),
    "isInf": _one("isInf", lambda v: isinstance(v, float) and math.isinf(v)),
    "isNil": _one("isNil", lambda v: v is None),
    "asInt": _one("asInt", _as_int),
    "asFloat": _one("asFloat", _as_float),
    "max": lambda *v: max(_numbers("max", v)),
    "min": lambda *v: min(_numbers("min", v)),
    "sum": lambda *v: sum(_numbers("sum", v)) if v and v[0] != [] else 0,
    "mean": lambda *v: (lambda xs: sum(xs) / len(xs))(_numbers("mean", v)),
}


def compile_condition(text: str) -> Node:
    """Parse a condition once (raises ExprError on a syntax error)."""
    return _Parser(text).parse()


def evaluate(condition: str | Node, result: Any) -> bool:
    """The boolean value of `condition` for a metric `result`."""
    return evaluate_in(condition, {"result": result})


def evaluate_in(condition: str | Node, env: dict[str, Any]) -> bool:
    """The boolean value of `condition` with the names of `env` (notification triggers see
    `app`, as Argo CD's notifications engine gives them)."""
    value = value_in(condition, env)
    if not isinstance(value, bool):
        raise ExprError(f"expected bool, but got {_type(value)}")
    return value


def value_in(expression: str | Node, env: dict[str, Any]) -> Any:
    """The value of `expression` with the names of `env` (a trigger's `oncePer`)."""
    node = compile_condition(expression) if isinstance(expression, str) else expression
    try:
        return _Eval(env).run(node)
    except RecursionError as e:
        raise ExprError("condition nested too deeply") from e
