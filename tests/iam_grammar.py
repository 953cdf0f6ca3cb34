"""The IAM policy grammar (docs: IAM JSON policy elements), as a checker for generated policies."""
from __future__ import annotations

import re
from typing import Any

from tests.testbed.iam_eval import KNOWN_OPERATORS

_ACTION = re.compile(r"^([a-z0-9-]+:[A-Za-z0-9*?]+|\*)$")
_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|\*):[a-z0-9-]+:[a-z0-9-]*\*?:(\d{12}|\*)?:.+$")
_SID = re.compile(r"^[A-Za-z0-9]*$")
_KEY = re.compile(r"^(aws|ec2|ec2-instance-connect):[A-Za-z0-9/_.:-]+$")


def check_policy(doc: Any) -> None:
    """Raise AssertionError naming the first element that breaks the grammar."""
    assert isinstance(doc, dict) and set(doc) <= {"Version", "Id", "Statement"}, f"top level: {doc!r}"
    assert doc.get("Version") == "2012-10-17", "Version must be 2012-10-17"
    statements = doc["Statement"]
    statements = statements if isinstance(statements, list) else [statements]
    assert statements, "no Statement"
    sids = [st.get("Sid") for st in statements if "Sid" in st]
    assert len(sids) == len(set(sids)), "Sid values must be unique"
    for st in statements:
        assert set(st) <= {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition",
                           "Principal", "NotPrincipal"}, f"unknown element in {st}"
        assert _SID.match(st.get("Sid", "")), f"Sid {st.get('Sid')!r}"
        assert st.get("Effect") in ("Allow", "Deny"), f"Effect {st.get('Effect')!r}"
        assert ("Action" in st) != ("NotAction" in st), "exactly one of Action/NotAction"
        assert ("Resource" in st) != ("NotResource" in st), "exactly one of Resource/NotResource"
        for a in _as_list(st.get("Action", st.get("NotAction"))):
            assert isinstance(a, str) and _ACTION.match(a), f"Action {a!r}"
        for r in _as_list(st.get("Resource", st.get("NotResource"))):
            assert isinstance(r, str) and (r == "*" or _ARN.match(r)), f"Resource {r!r}"
        for op, pairs in st.get("Condition", {}).items():
            base = op[:-len("IfExists")] if op.endswith("IfExists") else op
            base = base.split(":", 1)[-1]  # ForAnyValue:/ForAllValues: prefixes
            assert base in KNOWN_OPERATORS, f"Condition operator {op!r}"
            assert isinstance(pairs, dict) and pairs, f"Condition {op} needs key/value pairs"
            for key, values in pairs.items():
                assert _KEY.match(key), f"Condition key {key!r}"
                for v in _as_list(values):
                    assert isinstance(v, str) and v, f"Condition value {v!r} under {key}"


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]
