"""A safe subset of pandas ``DataFrame.query`` for filtering tile indexes.

``DataFrame.query`` evaluates Python: ``@var`` reads the caller's variables and
calls or attribute access can run code. A query often arrives from a config
file, a CLI or the Prefect UI, so we accept only comparisons, boolean logic,
column names (bare or in backticks) and literals, checked on the syntax tree
before pandas sees it, and evaluate with empty variable scopes.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...errors import InvalidParameterError

if TYPE_CHECKING:  # pandas is imported by whoever holds a frame; the CLI imports this module for its options
    import pandas as pd

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Invert, ast.BinOp, ast.BitAnd, ast.BitOr, ast.Compare, ast.Eq, ast.NotEq, ast.Lt,
    ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Name, ast.Load,
    ast.Constant, ast.List, ast.Tuple,
)
_VALID = "comparisons (== != < <= > >= in, not in), and/or/not, & | ~, column names and literals"
# Bounds on what is parsed: Python's parser itself runs out of memory or stack on
# deeply nested input, and pandas' evaluator recurses per level.
MAX_QUERY_CHARS = 100_000
MAX_DEPTH = 64


def _fail(query: str, problem: str) -> InvalidParameterError:
    return InvalidParameterError("query", query, problem, _VALID)


def _swap_backticks(query: str) -> tuple[str, dict[str, str]]:
    """Replace backticked column names (outside string literals) by placeholders.

    A scanner, not a regex: a backtick inside a quoted string is part of the
    string, and pairing it with a later one would hide code from the checker.
    """
    out: list[str] = []
    names: dict[str, str] = {}
    i, quote = 0, None
    while i < len(query):
        ch = query[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(query):
                out.append(query[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "`":
            end = query.find("`", i + 1)
            if end < 0:
                raise _fail(query, "malformed expression (unclosed backtick)")
            placeholder = f"_rf_col{len(names)}"
            names[placeholder] = query[i + 1 : end]
            out.append(placeholder)
            i = end
        else:
            out.append(ch)
        i += 1
    return "".join(out), names


def _parse(query: str) -> tuple[ast.Expression, dict[str, str]]:
    """Parse with backticked names swapped for placeholders; returns tree and names."""
    if len(query) > MAX_QUERY_CHARS:
        raise _fail(query, f"is {len(query)} characters long, more than {MAX_QUERY_CHARS}")
    text, names = _swap_backticks(query)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string == "@":
                raise _fail(query, "'@' variable references are not allowed")
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, tokenize.TokenError) as exc:
        raise _fail(query, f"malformed expression ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    except (MemoryError, RecursionError):
        raise _fail(query, f"is nested too deeply (at most {MAX_DEPTH} levels)") from None
    if _depth(tree) > MAX_DEPTH:
        raise _fail(query, f"is nested too deeply (at most {MAX_DEPTH} levels)")
    return tree, names


def _depth(tree: ast.AST) -> int:
    """Nesting depth of ``tree``, without recursion (a deep tree would exhaust the stack)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def validate_query_syntax(query: str, columns: Iterable[str] | None = None) -> None:
    """Raise ``InvalidParameterError`` unless ``query`` is a safe filter.

    With ``columns``, names must also be columns of the index.
    """
    if not query.strip():
        raise _fail(query, "empty expression")
    tree, placeholders = _parse(query)
    for node in ast.walk(tree):
        _check_node(query, node, placeholders)
    if columns is not None:
        _check_columns(query, tree, placeholders, set(columns))


def _check_node(query: str, node: ast.AST, placeholders: dict[str, str]) -> None:
    """Raise unless ``node`` is one of the constructs a safe filter may use."""
    if isinstance(node, ast.Call):
        raise _fail(query, "function calls are not allowed")
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        raise _fail(query, "attribute access and indexing are not allowed")
    if not isinstance(node, _ALLOWED):
        raise _fail(query, f"'{type(node).__name__}' expressions are not allowed")
    if isinstance(node, ast.BinOp) and not isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        raise _fail(query, "arithmetic is not allowed")
    if isinstance(node, ast.Name):
        name = placeholders.get(node.id, node.id)
        if name.startswith("__") or node.id.startswith("__"):
            raise _fail(query, f"dunder name {name!r} is not allowed")


def _check_columns(query: str, tree: ast.Expression, placeholders: dict[str, str], known: set[str]) -> None:
    """Raise if a name in ``tree`` is not one of the ``known`` columns."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            name = placeholders.get(node.id, node.id)
            if name not in known:
                raise _fail(query, f"unknown column {name!r}; columns are {sorted(known)}")


def apply_query(frame: pd.DataFrame, query: str) -> pd.DataFrame:
    """Filter ``frame`` rows by a validated ``query``."""
    validate_query_syntax(query, [str(c) for c in frame.columns])
    try:
        return frame.query(query, engine="python", local_dict={}, global_dict={})
    except Exception as exc:  # pandas raises many types for type mismatches
        raise _fail(query, f"cannot be evaluated on the index: {exc}") from None
