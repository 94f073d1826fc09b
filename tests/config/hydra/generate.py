#!/usr/bin/python3
"""Writes hydra_cases.inc: Hydra's own override-parser test inputs with what Hydra makes of them.

The inputs are every case of Hydra's tests/test_overrides_parser.py that parses a value, an
element, a primitive, a list, a dict, a function call, a key or a whole override (the cases that
test Python-only helpers, custom registered functions or ANTLR's exact error wording are left
out: they have no meaning for a TOML configuration). Each input is parsed here by Hydra itself
and its result written in the notation of tests/config/test_hydra_grammar.cpp: an override's
prefix, key and @package, then `=` and the value as tlab's format_value writes it with its type
("k=[1, 'a b'] (list)"), a sweep as the list of its values ("k=sweep(1, 2, 3)"; shuffled sweeps
as "k=shuffled(...)" with the values sorted), or "error".

Usage (needs Hydra's source and its dependencies; not part of the test run):
    PYTHONPATH=<hydra>:<omegaconf> /usr/bin/python3 generate.py cases.json > hydra_cases.inc
where cases.json lists {"test", "rule", "input"} as collected from Hydra's test module
(facebookresearch/hydra@2c03d1b925fe, tests/test_overrides_parser.py).
"""
import decimal
import json
import math
import re
import sys
import warnings

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, QuotedString, RangeSweep

warnings.simplefilter("ignore")
PARSER = OverridesParser.create()

VALUE_RULES = {"value", "element", "primitive", "listContainer", "dictContainer", "function",
               "simpleChoiceSweep"}
SKIPPED_TESTS = {"test_cast_conversions_json_str"}

UNQUOTED = set("_-+/.:\\*?~%^&!<>#@$|")
ESCAPABLE = set("\\()[]{}:=, \t")


def is_unquoted(c):
    return ord(c) >= 0x80 or c.isalnum() and c.isascii() or c in UNQUOTED


NUMBER = re.compile(r"[+-]?(\d(_?\d)*)?(\.(\d(_?\d)*)?)?([eE][+-]?\d(_?\d)*)?$")


def number_like(s):
    body = s.lstrip("+-")
    if body.lower() in ("inf", "nan"):
        return True
    return bool(NUMBER.match(s)) and any(ch.isdigit() for ch in s)


def quoted(s):  # tlab's quoted(): backslashes doubled only before a quote or the end
    out, i = "'", 0
    while i < len(s):
        if s[i] == "\\":
            n = len(s[i:]) - len(s[i:].lstrip("\\"))
            before_quote = i + n == len(s) or s[i + n] == "'"
            out += "\\" * (2 * n if before_quote else n)
            i += n
            continue
        if s[i] == "'":
            out += "\\"
        out += s[i]
        i += 1
    return out + "'"


def fmt_string(s):
    escapes = s.endswith("\\") or any(s[i] == "\\" and s[i + 1] in ESCAPABLE for i in range(len(s) - 1))
    bare = (s and all(is_unquoted(c) for c in s) and not escapes
            and s.lower() not in ("null", "true", "false") and not number_like(s))
    return s if bare else quoted(s)


def fmt_float(f):
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(float(f))


def fmt(v):
    if isinstance(v, QuotedString):
        return fmt_string(v.text)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (float, decimal.Decimal)):
        return fmt_float(float(v))
    if isinstance(v, str):
        return fmt_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(fmt(e) for e in v) + "]"
    if isinstance(v, dict):
        def key(k):
            k = k.text if isinstance(k, QuotedString) else k
            k = fmt(k) if not isinstance(k, str) else k  # TOML keys are strings
            k = k.strip("'") if not isinstance(k, str) else k
            bare = k and all(c.isalnum() and c.isascii() or c in "_-" for c in k)
            return k if bare else quoted(k)
        return "{" + ", ".join(key(k) + ": " + fmt(v[k]) for k in v) + "}"
    raise TypeError(type(v))


def type_name(v):
    if isinstance(v, QuotedString) or isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, (float, decimal.Decimal)):
        return "float"
    return "list" if isinstance(v, list) else "table"


def values_of(sweep):
    if isinstance(sweep, ChoiceSweep):
        return list(sweep.list)
    if isinstance(sweep, RangeSweep):
        return [float(x) if isinstance(x, decimal.Decimal) else x for x in sweep.range()]
    raise TypeError(type(sweep))


def describe(o):
    prefix = {"CHANGE": "", "ADD": "+", "FORCE_ADD": "++", "DEL": "~"}[o.type.name]
    out = prefix + o.key_or_group + ("@" + o.package if o.package is not None else "")
    if o.value_type is None:
        return out
    v = o._value
    if isinstance(v, (IntervalSweep, Glob)):
        return out + "=" + type(v).__name__
    if isinstance(v, (ChoiceSweep, RangeSweep)):
        vals = values_of(v)
        if v.shuffle:
            return out + "=shuffled(" + ", ".join(sorted(fmt(x) for x in vals)) + ")"
        return out + "=sweep(" + ", ".join(fmt(x) for x in vals) + ")"
    return out + "=" + fmt(v) + " (" + type_name(v) + ")"


def cxx(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t") + '"'


def main():
    cases = json.load(open(sys.argv[1]))
    seen = set()
    for c in cases:
        m = re.match(r'parse_rule\(\.\.\., "(\w+)"\)$', c["rule"])
        if m and m.group(1) in VALUE_RULES:
            text = "k=" + c["input"]
        elif m and m.group(1) == "key":
            text = c["input"] + "=1"
        elif c["rule"] in ("parse_override", 'parse_rule(..., "override")'):
            text = c["input"]
        else:
            continue
        if c["test"] in SKIPPED_TESTS or "json_str" in text or "extend_list" in text:
            continue
        if text in seen:
            continue
        seen.add(text)
        try:
            result = describe(PARSER.parse_override(text))
        except Exception:  # noqa: BLE001 - Hydra refuses it: that is the result
            result = "error"
        print("    {%s, %s, %s}," % (cxx(c["test"]), cxx(text), cxx(result)))


if __name__ == "__main__":
    main()
