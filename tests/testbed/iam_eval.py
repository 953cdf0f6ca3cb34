"""A small IAM policy evaluator for the fake SimulatePrincipalPolicy (moto has none).

Covers what identity policies for eic-proxy use: Allow/Deny, Action/NotAction and Resource/
NotResource with wildcards, and the condition operators String*, Numeric*, IpAddress/NotIpAddress,
Bool, with the ...IfExists suffix and multi-valued keys (any value matches). An explicit Deny
wins; no matching Allow is an implicit deny. Missing context keys fail a condition (negated
operators pass), as in IAM.
"""
from __future__ import annotations

import fnmatch
import ipaddress
from typing import Any, Iterable


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _wild(pattern: str, value: str, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _num(v: Any) -> float:
    return float(v)


def _ip_in(value: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


_OPS = {
    "StringEquals": lambda a, b: a == b,
    "StringNotEquals": lambda a, b: a != b,
    "StringEqualsIgnoreCase": lambda a, b: a.lower() == b.lower(),
    "StringLike": lambda a, b: _wild(b, a),
    "StringNotLike": lambda a, b: not _wild(b, a),
    "NumericEquals": lambda a, b: _num(a) == _num(b),
    "NumericNotEquals": lambda a, b: _num(a) != _num(b),
    "NumericLessThan": lambda a, b: _num(a) < _num(b),
    "NumericLessThanEquals": lambda a, b: _num(a) <= _num(b),
    "NumericGreaterThan": lambda a, b: _num(a) > _num(b),
    "NumericGreaterThanEquals": lambda a, b: _num(a) >= _num(b),
    "IpAddress": _ip_in,
    "NotIpAddress": lambda a, b: not _ip_in(a, b),
    "Bool": lambda a, b: str(a).lower() == str(b).lower(),
}
KNOWN_OPERATORS = frozenset(_OPS)


def _condition_ok(conditions: dict, context: dict[str, list[str]]) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    for op, pairs in conditions.items():
        if_exists = op.endswith("IfExists")
        base = op[: -len("IfExists")] if if_exists else op
        negated = base.startswith(("StringNot", "NumericNot", "NotIp"))
        test = _OPS[base]
        for key, wanted in pairs.items():
            have = lowered.get(key.lower())
            if have is None:
                if if_exists or negated:
                    continue
                return False
            wanted = [str(w) for w in _as_list(wanted)]
            try:
                if negated:
                    ok = all(test(h, w) for h in have for w in wanted)
                else:
                    ok = any(test(h, w) for h in have for w in wanted)
            except ValueError:
                ok = False
            if not ok:
                return False
    return True


def _matches(statement: dict, action: str, resource: str) -> bool:
    if "Action" in statement:
        if not any(_wild(a, action, case=False) for a in _as_list(statement["Action"])):
            return False
    elif any(_wild(a, action, case=False) for a in _as_list(statement.get("NotAction", []))):
        return False
    if "Resource" in statement:
        return any(_wild(r, resource) for r in _as_list(statement["Resource"]))
    return not any(_wild(r, resource) for r in _as_list(statement.get("NotResource", [])))


def evaluate(policies: Iterable[dict], action: str, resource: str, context: dict[str, list[str]]) -> str:
    """'allowed', 'explicitDeny' or 'implicitDeny'."""
    allowed = False
    for policy in policies:
        for st in _as_list(policy.get("Statement", [])):
            if not _matches(st, action, resource) or not _condition_ok(st.get("Condition", {}), context):
                continue
            if st.get("Effect") == "Deny":
                return "explicitDeny"
            allowed = True
    return "allowed" if allowed else "implicitDeny"
