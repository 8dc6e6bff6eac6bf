"""A calculator helper: arithmetic evaluated on the expression's syntax tree, never with eval.

Its answer goes straight to the person (``reply="direct"``): "2 + 3 * 4 = 14"
needs no model to phrase it. Try it against a running core::

    switchboard-helper run examples/helpers/calculator.py --port 8101

Numbers, ``+ - * / // % **`` (``^`` means power too), unary signs,
parentheses, ``pi``, ``e``, ``tau`` and a few functions. Limits keep a
hostile expression from eating the CPU: its length, its number of syntax
nodes, and the size of any intermediate result.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from helper_sdk import Helper, HelperError, InvocationContext
from marshmallow import Schema, fields, validate

MAX_LENGTH = 200
MAX_NODES = 100
MAX_MAGNITUDE = 10**300  # every intermediate result stays a finite float
MAX_FACTORIAL = 150

Number = int | float

helper = Helper("calculator", description="Exact arithmetic for people who text a sum", version="1.0.0")


class CalculationError(HelperError):
    """The expression is not something this calculator evaluates; the message says why (422)."""


class CalculateIn(Schema):
    expression = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_LENGTH),
        metadata={"description": "an arithmetic expression, e.g. (2 + 3) * 4 or sqrt(2)"},
    )


class CalculateOut(Schema):
    text = fields.String(required=True, metadata={"description": "the expression and its result, for the person"})
    value = fields.Float(required=True, metadata={"description": "the result as a number"})


@helper.capability(
    name="calculate",
    description="Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt, sin, log, pi, ...).",
    input_schema=CalculateIn,
    output_schema=CalculateOut,
    reply="direct",
)
def calculate(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    expression = data["expression"].strip()
    value = evaluate(expression)
    return {"text": f"{expression} = {format_number(value)}", "value": value}


def evaluate(expression: str) -> Number:
    """The value of ``expression``; CalculationError for anything that is not plain arithmetic."""
    if len(expression) > MAX_LENGTH:
        raise CalculationError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise CalculationError("that is not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculationError("the expression is too complicated")
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("the result is too large") from None
    except (ValueError, TypeError) as error:
        raise CalculationError(f"not defined: {error}") from None
    return value


def format_number(value: Number) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else format(value, ".12g")


def _power(base: Number, exponent: Number) -> Number:
    if base != 0 and abs(base) != 1 and exponent * math.log10(abs(base)) > 300:
        raise OverflowError
    return base**exponent


def _factorial(n: Number) -> int:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or n < 0:
        raise ValueError("factorial needs a whole number ≥ 0")
    if n > MAX_FACTORIAL:
        raise OverflowError
    return math.factorial(n)


def _round(value: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or abs(digits) > 15:
        raise ValueError("round takes a whole number of digits up to 15")
    return round(value, digits)


def _log(value: Number, base: Number = math.e) -> float:
    return math.log(value, base)


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {  # name: (function, min args, max args)
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "log2": (math.log2, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "factorial": (_factorial, 1, 1),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _evaluate(node: ast.expr) -> Number:
    value = _node_value(node)
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError("the result is not a real number")
    if abs(value) >= MAX_MAGNITUDE:
        raise OverflowError
    return value


def _node_value(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        function, low, high = _FUNCTIONS[node.func.id]
        if node.keywords or not low <= len(node.args) <= high:
            raise CalculationError(f"{node.func.id} takes {low}{'' if low == high else f' to {high}'} argument(s)")
        return function(*(_evaluate(arg) for arg in node.args))
    if isinstance(node, ast.Name | ast.Call):
        name = node.id if isinstance(node, ast.Name) else ast.unparse(node.func)
        raise CalculationError(f"unknown name {name!r}")
    raise CalculationError(f"{ast.unparse(node)!r} is not arithmetic")


if __name__ == "__main__":
    helper.run()
