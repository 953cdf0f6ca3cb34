"""SendSSHPublicKey, once per burst: the cross-process push cache, retries, and the audit record.

One push makes the key valid on the instance for 60 s (docs/protocol.md §1). Every connection to
the same (instance, OS user, key) within ``keys.PUSH_REUSE`` of it reuses it: the record sits in
the cache dir. 50 concurrent processes wait for the one that pushes instead of pushing 50 times (the
API throttles), yet no lock is held across the call (``store/inflight.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from eic_proxy.aws.client import api_errors, require_aws
from eic_proxy.aws.errors import translate
from eic_proxy.aws.seams import AwsApi
from eic_proxy.errors import AccessDenied, AwsBusy
from eic_proxy.keys.lifecycle import PUSH_REUSE, LocalKey
from eic_proxy.store import audit, files

log = logging.getLogger(__name__)

# Throttling and server-side trouble are retried with exponential back-off and full jitter,
# within RETRY_BUDGET seconds in all; everything else fails at once.
RETRY_BUDGET = 30.0
RETRY_BASE = 0.5
RETRY_CAP = 8.0
RETRYABLE_CODES = {
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalServerError", "InternalFailure",
    "EC2InstanceUnavailableException",
}


def _error_code(exc: BaseException) -> tuple[Optional[str], Optional[int]]:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code"), (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return None, None


def is_retryable(exc: BaseException) -> bool:
    code, status = _error_code(exc)
    if code in RETRYABLE_CODES or (status is not None and status >= 500):
        return True
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError

        return isinstance(exc, BotoConnectionError)
    except ImportError:  # pragma: no cover
        return False


def send_public_key(aws: AwsApi, eic: Any, instance_id: str, os_user: str, public_line: str,
                    budget: float = RETRY_BUDGET, sleep: Callable[[float], None] = time.sleep) -> str:
    """Push ``public_line`` for (instance, OS user); return the service's RequestId."""
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        attempt += 1
        try:
            resp = eic.send_ssh_public_key(InstanceId=instance_id, InstanceOSUser=os_user, SSHPublicKey=public_line)
            break
        except api_errors() as exc:
            delay = random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2 ** attempt))
            if is_retryable(exc) and time.monotonic() + delay < deadline:
                log.info("push to %s throttled or failed (%s); retrying in %.1f s", instance_id,
                         _error_code(exc)[0] or exc.__class__.__name__, delay)
                sleep(delay)
                continue
            err = translate(exc, f"pushing the SSH key to {instance_id} as {os_user}", aws.profile)
            if isinstance(err, AccessDenied):
                err.hint = ("your IAM identity needs ec2-instance-connect:SendSSHPublicKey on this instance; "
                            f"a policy condition on ec2:osuser may exclude {os_user!r} (`eic-proxy policy` prints one)")
            elif is_retryable(exc):
                err = AwsBusy(f"{err.message} (still failing after {attempt} attempts in {budget:.0f} s)",
                              hint="the service is throttling or unavailable; wait a minute and retry")
            raise err from exc
    request_id = resp.get("RequestId") or resp.get("ResponseMetadata", {}).get("RequestId", "")
    log.debug("= pushed key to %s as %s (request %s)", instance_id, os_user, request_id)
    return request_id


@dataclass(frozen=True)
class PushRecord:
    at: float           # wall-clock time of the push
    request_id: str

    def fresh(self, now: Optional[float] = None) -> bool:
        return 0 <= (now or time.time()) - self.at < PUSH_REUSE


def _record_path(instance_id: str, os_user: str, fingerprint: str) -> Path:
    digest = hashlib.sha256(f"{instance_id}|{os_user}|{fingerprint}".encode()).hexdigest()[:40]
    return files.cache_dir() / "pushes" / f"{digest}.json"


def read_record(instance_id: str, os_user: str, fingerprint: str) -> Optional[PushRecord]:
    try:
        doc = json.loads(_record_path(instance_id, os_user, fingerprint).read_text())
        return PushRecord(float(doc["at"]), str(doc.get("request_id", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# How long a push in flight (another process's) is waited for: its own retries end within RETRY_BUDGET.
PENDING_WAIT = RETRY_BUDGET + 10.0


def ensure_pushed(aws: AwsApi, key: LocalKey, instance_id: str, os_user: str, use_cache: bool = True) -> str:
    """Make sure a push of ``key`` for (instance, OS user) is fresh; the RequestId of the push that
    serves this connection, made now or reused from the record (the audit log names it either way)."""
    from eic_proxy.store.inflight import single_flight

    path = _record_path(instance_id, os_user, key.fingerprint)

    def fresh() -> Optional[str]:
        rec = read_record(instance_id, os_user, key.fingerprint)
        if rec is None or not rec.fresh():
            return None
        log.debug("= push of %s for %s@%s is %.0f s old: reused", key.fingerprint, os_user, instance_id,
                  time.time() - rec.at)
        return rec.request_id

    def push() -> str:
        at = time.time()
        request_id = send_public_key(aws, aws.client("ec2-instance-connect", max_attempts=1), instance_id, os_user,
                                     key.public_line)
        with files.best_effort("the push record"):  # it only saves later pushes
            files.write_private_atomic(path, json.dumps({"at": at, "request_id": request_id, "instance_id": instance_id,
                                                         "os_user": os_user, "fingerprint": key.fingerprint}).encode(),
                                       durable=False)
        audit.append("push", instance_id=instance_id, os_user=os_user, fingerprint=key.fingerprint,
                     request_id=request_id, profile=aws.profile, region=aws.region, key_storage=key.storage)
        return request_id

    reused = fresh() if use_cache else None  # (read without the lock: records are replaced whole)
    if reused is not None:
        return reused
    require_aws()
    # --no-cache: no record is reused, but a push in flight is still waited for, not doubled.
    return single_flight(path, fresh if use_cache else (lambda: None), push, PENDING_WAIT,
                         f"key push to {os_user}@{instance_id}", f"the push record of {os_user}@{instance_id}")


def recent_pushes(limit: int = 10) -> list[dict[str, Any]]:
    """The newest push events from the audit log, newest first (for `eic-proxy keys`)."""
    pushes = [e for e in audit.read() if e.get("event") == "push"]
    return list(reversed(pushes[-limit:]))
