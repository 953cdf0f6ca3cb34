"""SendSSHPublicKey: stage the public key on the instance for 60 s (eice-protocol.md §1)."""
from __future__ import annotations

import logging
from typing import Any

from .aws import Aws, translate
from .errors import AccessDenied

log = logging.getLogger(__name__)


def send_public_key(aws: Aws, eic: Any, instance_id: str, os_user: str, public_line: str) -> str:
    """Push ``public_line`` for (instance, OS user); return the service's RequestId."""
    try:
        resp = eic.send_ssh_public_key(InstanceId=instance_id, InstanceOSUser=os_user, SSHPublicKey=public_line)
    except Exception as exc:
        err = translate(exc, f"pushing the SSH key to {instance_id} as {os_user}", aws.profile)
        if isinstance(err, AccessDenied):
            err.hint = ("your IAM identity needs ec2-instance-connect:SendSSHPublicKey on this instance; "
                        f"a policy condition on ec2:osuser may exclude {os_user!r} (`eic-proxy policy` prints one)")
        raise err from exc
    request_id = resp.get("RequestId") or resp.get("ResponseMetadata", {}).get("RequestId", "")
    log.debug("= pushed key to %s as %s (request %s)", instance_id, os_user, request_id)
    return request_id
