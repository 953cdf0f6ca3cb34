"""Alias → (Target, Endpoint), through the on-disk cache: a warm lookup makes no AWS call at all.

The EC2 client (and its large service model) is created only on a cache miss.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from eic_proxy.aws.client import require_aws
from eic_proxy.aws.seams import AwsApi
from eic_proxy.control.resolve import HostSpec
from eic_proxy.model import Endpoint, Target
from eic_proxy.store.cache import ENDPOINT_TTL, TARGET_TTL, Cache

log = logging.getLogger(__name__)


@dataclass
class Located:
    target: Target
    endpoint: Endpoint
    target_age: Optional[float] = None    # seconds since cached; None = looked up now
    endpoint_age: Optional[float] = None


LOOKUP_WAIT = 30.0  # a lookup in flight elsewhere is waited for this long at most


class Locator:
    def __init__(self, aws: AwsApi, cache: Optional[Cache], pick: Optional[str] = None,
                 eice_id: Optional[str] = None, allow_stopped: bool = False) -> None:
        self.aws = aws
        self.allow_stopped = allow_stopped
        self.cache = cache
        self.pick = pick
        self.eice_id = eice_id

    @property
    def ec2(self) -> Any:
        """Made on first use only (a warm lookup needs no client); Aws keeps it for the next caller."""
        return self.aws.client("ec2")

    def _target_key(self, spec: HostSpec) -> str:
        # --pick is part of the question: "the newest of the group" and "the oldest" are different answers.
        return (f"target|{self.aws.profile or ''}|{self.aws.region}|{spec.kind}|{spec.tag_key or ''}|{spec.value}"
                f"|{self.pick or ''}")

    def _endpoint_key(self, target: Target) -> str:
        family = "6" if target.is_ipv6 else "4"
        return (f"endpoint|{self.aws.profile or ''}|{self.aws.region}|{target.vpc_id}|{target.subnet_id}|{family}"
                f"|{self.eice_id or ''}")

    def locate(self, spec: HostSpec, meanwhile: Optional[Callable[[Target], Optional[Callable[[], None]]]] = None
               ) -> Located:
        """Cached when fresh; otherwise looked up by one process while the others wait for its result.

        Fifty ssh processes started at once for one host (Ansible forks, parallel scp) would each
        load botocore and make two Describe calls; one does (``store/inflight.py``: no lock is held
        across the calls), and the rest read the cache.

        When the endpoint has to be looked up, ``meanwhile(target)`` may give work to run in a thread
        alongside (the key's push needs only the instance: one round trip to AWS instead of two in a
        row). It is called in this thread, and not at all when the endpoint comes from the cache. What
        the endpoint's lookup raises is raised first; then what the work raised.
        """
        from eic_proxy.control.resolve import resolve

        target, t_age = self._lookup(self._target_key(spec), self._cached_target,
                                     lambda: resolve(self.aws, self.ec2, spec, self.pick, self.allow_stopped),
                                     keep=lambda t: t.state == "running")
        key = self._endpoint_key(target)
        cached, e_age = self._cached_endpoint(key)
        if cached is not None:
            return Located(target, cached, t_age, e_age)
        endpoint, e_age = (self._lookup(key, self._cached_endpoint, lambda: self._find_endpoint(target))
                           if meanwhile is None else self._alongside(meanwhile, target, key))
        return Located(target, endpoint, t_age, e_age)

    def _find_endpoint(self, target: Target) -> Endpoint:
        from eic_proxy.control.endpoint import find_endpoint

        return find_endpoint(self.aws, self.ec2, target, self.eice_id)

    def _alongside(self, meanwhile: Callable[[Target], Optional[Callable[[], None]]], target: Target,
                   key: str) -> tuple[Endpoint, Optional[float]]:
        """The endpoint's lookup, with the work ``meanwhile`` gives running in a thread until both are done."""
        import threading

        work = meanwhile(target)
        if work is None:
            return self._lookup(key, self._cached_endpoint, lambda: self._find_endpoint(target))
        self.aws.client("ec2")  # made before the thread starts: two clients are never created at once
        failed: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
                failed.append(exc)

        worker = threading.Thread(target=run, name="eic-meanwhile", daemon=True)
        worker.start()
        try:
            found = self._lookup(key, self._cached_endpoint, lambda: self._find_endpoint(target))
        except Exception:
            worker.join()  # (a signal's exit does not wait for it)
            raise
        worker.join()
        if failed:
            raise failed[0]
        return found

    def _lookup(self, key: str, cached: Callable[[str], tuple[Any, Optional[float]]], fetch: Callable[[], Any],
                keep: Callable[[Any], bool] = lambda _: True) -> tuple[Any, Optional[float]]:
        """(value, cache age): the cached value, or — checked again under the key's lock — a fresh one,
        cached when ``keep`` says so."""
        value, age = cached(key)
        if value is not None:
            return value, age

        def looked_up() -> tuple[Any, Optional[float]]:
            value = fetch()
            if self.cache is not None and keep(value):
                self.cache.put(key, value.to_dict())
            return value, None

        require_aws()  # (before a claim others would wait for)
        if self.cache is None:
            return looked_up()
        from eic_proxy.store.inflight import single_flight

        def found() -> Optional[tuple[Any, Optional[float]]]:
            hit = cached(key)
            return hit if hit[0] is not None else None

        kind = key.split("|", 1)[0]
        return single_flight(self.cache.lock_path(key), found, looked_up, LOOKUP_WAIT, f"lookup of the {kind}",
                             f"the cached {kind} lookup")

    def _cached_target(self, key: str) -> tuple[Optional[Target], Optional[float]]:
        hit = self.cache.get(key, TARGET_TTL) if self.cache is not None else None
        try:
            return (Target(**hit[0]), hit[1]) if hit else (None, None)
        except (TypeError, ValueError, AttributeError):  # another version's shape, or a crafted file: a miss
            log.debug("cache entry %s unusable; looking up again", key)
            return None, None

    def _cached_endpoint(self, key: str) -> tuple[Optional[Endpoint], Optional[float]]:
        hit = self.cache.get(key, ENDPOINT_TTL) if self.cache is not None else None
        if not hit:
            return None, None
        try:
            d = dict(hit[0], security_group_ids=tuple(hit[0].get("security_group_ids") or ()))
            return Endpoint(**d), hit[1]
        except (TypeError, ValueError, AttributeError):
            log.debug("cache entry %s unusable; looking up again", key)
            return None, None

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
