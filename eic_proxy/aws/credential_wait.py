"""Resolving credentials with a bound: a credential source that never answers is said, then given up.

A ``credential_process`` waiting for a browser login, a hardware touch or a password prompt that cannot
appear inside ssh, an SSO refresh or an assume-role chain behind a dead network, a metadata endpoint
that does not answer: botocore waits without a bound, and ssh waits with it, silently. Here the
resolution runs in a thread of its own: after ``SAY_AFTER`` seconds one line says what we wait for
(profile and source) and until when; at the bound one line says what to do (exit 27). ssh's hang-up
(SIGHUP), SIGTERM and SIGINT end everything at once, the credential process included.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional, TypeVar

from eic_proxy.errors import CredentialsTimeout

T = TypeVar("T")
DEFAULT_BOUND = 60.0
SAY_AFTER = 3.0

_running: list[subprocess.Popen] = []
_starting: list[None] = []  # one entry per credential process being started (in botocore's thread)
START_WAIT = 1.0  # how long a signal waits for a credential process being started to be known


class CredentialProcess(subprocess.Popen):
    """botocore's ``credential_process``, kept track of so that it can be ended with us."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _starting.append(None)  # the process exists before Popen returns: a signal then must wait for it
        try:
            super().__init__(*args, **kwargs)
            _running.append(self)
        finally:
            _starting.pop()


def bound() -> float:
    try:
        return max(float(os.environ.get("EIC_PROXY_CREDENTIALS_TIMEOUT", DEFAULT_BOUND)), 1.0)
    except ValueError:
        return DEFAULT_BOUND


def source_of(session: Any, profile: Optional[str]) -> str:
    """What the credentials of ``profile`` come from, as the user configured it."""
    try:
        config = session.full_config.get("profiles", {}).get(profile or "default", {})
    except Exception:  # noqa: BLE001 - a broken config is botocore's to report; this only names the source
        config = {}
    for key, label in (("credential_process", "credential_process"), ("sso_session", "SSO"),
                       ("sso_start_url", "SSO"), ("role_arn", "an assumed role"),
                       ("web_identity_token_file", "web identity")):
        if key in config:
            return label
    if os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return "the container credentials endpoint"
    return "botocore's credential chain (environment, files, instance metadata)"


def track_processes(session: Any) -> None:
    """Make botocore start ``credential_process`` as a ``CredentialProcess``."""
    try:
        from botocore.credentials import ProcessProvider

        for provider in session.get_component("credential_provider").providers:
            if isinstance(provider, ProcessProvider):
                provider._popen = CredentialProcess  # botocore's ProcessProvider takes its Popen as a parameter
    except Exception:  # noqa: BLE001 - another botocore: the bound still holds, only the kill is lost
        pass


def end_credential_processes() -> None:
    deadline = time.monotonic() + START_WAIT
    while _starting and time.monotonic() < deadline:  # started by another thread a moment ago: kill it too
        time.sleep(0.01)
    for p in list(_running):
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
        _running.remove(p)


def resolve(work: Callable[[], T], profile: Optional[str], source: str) -> T:
    """``work()`` (which resolves credentials), bounded as the module docstring says."""
    limit = bound()
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="eic-credentials", daemon=True)
    restore = _end_with_us() if threading.current_thread() is threading.main_thread() else (lambda: None)
    try:
        worker.start()
        worker.join(min(SAY_AFTER, limit))
        if worker.is_alive():
            who = f"profile {profile}" if profile else "the default profile"
            _say(f"eic-proxy: waiting for the AWS credentials of {who} ({source}); giving up after {limit:.0f} s")
            worker.join(max(limit - SAY_AFTER, 0.0))
        if worker.is_alive():
            end_credential_processes()
            p = f" --profile {profile}" if profile else ""
            raise CredentialsTimeout(
                f"the AWS credentials of {'profile ' + profile if profile else 'the default profile'} ({source}) "
                f"did not come within {limit:.0f} s",
                hint=f"it may wait for a login, a touch or a prompt that cannot appear inside ssh: run "
                     f"`aws sts get-caller-identity{p}` in a terminal first (or `aws sso login{p}`); "
                     "EIC_PROXY_CREDENTIALS_TIMEOUT=SECONDS if it is only slow")
    finally:
        restore()
    if failure:
        raise failure[0]
    return result[0]


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _end_with_us() -> Callable[[], None]:
    """While we wait: ssh's hang-up (or SIGTERM, Ctrl-C) ends the credential process, then us, by that signal."""
    def on_signal(signum: int, _frame: Any) -> None:
        end_credential_processes()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {}
    for name in ("SIGHUP", "SIGTERM", "SIGINT"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass

    def restore() -> None:
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):
                pass

    return restore
