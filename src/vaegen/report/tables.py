"""JSON values as HTML: escaping, scalars for tables, key/value tables of any depth.

Pure and standard library only, like render.py (which it serves): everything that comes from data
or configuration passes through `esc` on its way into the page.
"""

from __future__ import annotations

import html
import json
from typing import Any


def esc(value: object) -> str:
    """HTML-escape any value for text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _fmt(v: object) -> str:
    """Scalars for tables: floats to 6 significant digits, None as a dash; escaped."""
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "—"}[v]
    if isinstance(v, float):
        return esc(f"{v:.6g}")
    return esc(v)


INTERVAL_KEYS = {"value", "low", "high", "n", "method", "level", "units"}  # context.qi's


def interval(number: dict[str, Any]) -> str:
    """A number with its interval as "value [low, high]", 4 significant digits, escaped."""
    if number.get("low") is None:
        return _fmt(number["value"])
    return esc(f"{number['value']:.4g} [{number['low']:.4g}, {number['high']:.4g}]")


def sections(value: Any) -> str:
    """A top-level JSON object: scalars in one table, each nested object under its own heading."""
    if not isinstance(value, dict):
        return render_value(value)
    flat = {k: v for k, v in value.items() if not isinstance(v, dict)}
    nested = "".join(
        f"<div><h3>{esc(k)}</h3>{render_value(v)}</div>"
        for k, v in value.items()
        if isinstance(v, dict)
    )
    return (render_value(flat) if flat else "") + f"<div class=kv-grid>{nested}</div>"


def render_value(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: an object as a key/value table (nested objects as nested tables),
    a list of objects as a table with one column per key, other lists comma-separated."""
    if depth > 8:  # deeper than any scorecard needs: show the rest as JSON text
        return f"<code>{esc(json.dumps(value))}</code>"
    if isinstance(value, dict) and set(value) == {"value", "units"}:  # a quantity: "16.1 nats"
        return f"{render_value(value['value'], depth + 1)} <small>{esc(value['units'])}</small>"
    if isinstance(value, dict) and set(value) == INTERVAL_KEYS:  # "0.93 [0.92, 0.94] fraction"
        return (
            f"{interval(value)} <small>{esc(value['units'])}; 95 % interval, {esc(value['method'])}, "
            f"n = {_fmt(value['n'])}</small>"
        )
    if isinstance(value, dict):
        rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{render_value(v, depth + 1)}</td></tr>"
            for k, v in value.items()
        )
        return f"<table class=kv>{rows}</table>"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            head = "".join(f"<th>{esc(k)}</th>" for k in keys)
            body = "".join(
                "<tr>"
                + "".join(f"<td>{render_value(v.get(k), depth + 1)}</td>" for k in keys)
                + "</tr>"
                for v in value
            )
            return f"<table class=kv><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if any(isinstance(v, (str, list, dict)) and len(v) > 40 for v in value):  # notes
            return (
                "<ul>" + "".join(f"<li>{render_value(v, depth + 1)}</li>" for v in value) + "</ul>"
            )
        return ", ".join(render_value(v, depth + 1) for v in value) or "[]"
    return _fmt(value)
