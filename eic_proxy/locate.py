"""Alias → (Target, Endpoint), through the on-disk cache: a warm lookup makes no AWS call at all.

The EC2 client (and its large service model) is created only on a cache miss.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from .aws import Aws
from .cache import ENDPOINT_TTL, TARGET_TTL, Cache
from .resolve import HostSpec
from .target import Endpoint, Target

log = logging.getLogger(__name__)


@dataclass
class Located:
    target: Target
    endpoint: Endpoint
    target_age: Optional[float] = None    # seconds since cached; None = looked up now
    endpoint_age: Optional[float] = None


class Locator:
    def __init__(self, aws: Aws, cache: Optional[Cache], pick: Optional[str] = None,
                 eice_id: Optional[str] = None, allow_stopped: bool = False) -> None:
        self.aws = aws
        self.allow_stopped = allow_stopped
        self.cache = cache
        self.pick = pick
        self.eice_id = eice_id
        self._ec2: Any = None

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = self.aws.client("ec2")
        return self._ec2

    def _target_key(self, spec: HostSpec) -> str:
        return f"target|{self.aws.profile or ''}|{self.aws.region}|{spec.kind}|{spec.tag_key or ''}|{spec.value}"

    def _endpoint_key(self, target: Target) -> str:
        family = "6" if target.is_ipv6 else "4"
        return (f"endpoint|{self.aws.profile or ''}|{self.aws.region}|{target.vpc_id}|{target.subnet_id}|{family}"
                f"|{self.eice_id or ''}")

    def locate(self, spec: HostSpec) -> Located:
        from .endpoint import find_endpoint
        from .resolve import resolve

        target = endpoint = None
        t_age = e_age = None
        if self.cache is not None:
            hit = self.cache.get(self._target_key(spec), TARGET_TTL)
            if hit:
                target, t_age = Target(**hit[0]), hit[1]
        if target is None:
            target = resolve(self.aws, self.ec2, spec, self.pick, self.allow_stopped)
            if self.cache is not None and target.state == "running":
                self.cache.put(self._target_key(spec), target.to_dict())
        if self.cache is not None:
            hit = self.cache.get(self._endpoint_key(target), ENDPOINT_TTL)
            if hit:
                d = dict(hit[0], security_group_ids=tuple(hit[0].get("security_group_ids") or ()))
                endpoint, e_age = Endpoint(**d), hit[1]
        if endpoint is None:
            endpoint = find_endpoint(self.aws, self.ec2, target, self.eice_id)
            if self.cache is not None:
                self.cache.put(self._endpoint_key(target), endpoint.to_dict())
        return Located(target, endpoint, t_age, e_age)

    def remember(self, spec: HostSpec, target: Target) -> None:
        """Cache a target found outside locate() (after --start made it run)."""
        if self.cache is not None:
            self.cache.put(self._target_key(spec), target.to_dict())

    def forget(self, spec: HostSpec, located: Located) -> None:
        """Drop both cached entries after they proved stale; the next locate() asks AWS again."""
        if self.cache is not None:
            self.cache.drop(self._target_key(spec))
            self.cache.drop(self._endpoint_key(located.target))
        log.info("cached location of %s was stale; looking it up again", spec.value)
