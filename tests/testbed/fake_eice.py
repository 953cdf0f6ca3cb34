"""Fake EC2 Instance Connect Endpoint: a TLS WebSocket server that follows docs/protocol.md.

It checks the SigV4 presigned query (403 + ``{"ErrorCode","Message"}`` on failure), dials
``privateIpAddress:remotePort`` (loopback only), pumps binary frames, closes 1000 at EOF and 1011
"Unable to connect to target" when the target refuses, and enforces maxTunnelDuration and the
20-connection cap per endpoint. Each endpoint DNS name is its own loopback address on port 443.
Faults can be queued for the next connection (tests of the client's error handling).
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import email.utils
import ipaddress
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

from .ca import TestCA
from .fake_aws import FakeAws
from .sigv4 import SigV4Error, verify

USABLE_STATES = ("create-complete", "update-in-progress", "update-complete", "update-failed")
MAX_CONNECTIONS = 20
SERVICE_PORTS = (22, 3389)  # the endpoint's port rule, seen since mid-2023 (docs/protocol.md §3.2)
PORT = 443


@dataclass
class Handshake:
    host: str
    endpoint_id: str
    params: dict
    status: int
    error_code: str = ""
    at: float = field(default_factory=time.time)


class FakeEice:
    def __init__(self, aws: FakeAws, ca: TestCA, workdir: Path, secrets: dict[str, str],
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.aws = aws
        self.ca = ca
        self.workdir = workdir
        self.secrets = secrets
        self.max_connections = max_connections
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-eice", daemon=True)
        self.servers: dict[str, Any] = {}
        self.active: collections.Counter = collections.Counter()
        self.peak: collections.Counter = collections.Counter()
        self.handshakes: list[Handshake] = []
        self.unreachable: list[float] = []  # when it closed a tunnel with "Unable to connect to target"
        self.faults: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.clock_skew = 0.0  # seconds the endpoint's clock runs ahead (tests of URL expiry)
        self.send_date = True  # a refusal says the endpoint's time in its Date header (False: a proxy stripped it)
        self.stall_hold = 5.0  # how long a stalled connection is kept before it is dropped
        self.port_rule = True  # refuse remote ports other than 22 and 3389, as the service does
        self.test_ports: set[int] = set()  # ports of test services (BlobServer) that the rule lets through

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        async def _close() -> None:
            for s in self.servers.values():
                s.close()
            for s in self.servers.values():
                await s.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(_close(), 5), self.loop).result(10)
        except (asyncio.TimeoutError, TimeoutError):
            pass  # a connection parked by a fault (stalled handshake): the loop stops regardless
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def listen(self, address: str) -> None:
        """Serve the endpoint protocol on ``address``:443 with a certificate for that address."""
        cert, key = self.ca.issue(self.workdir, f"eice-{address}", [address])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        fut = asyncio.run_coroutine_threadsafe(self._serve(address, ctx), self.loop)
        self.servers[address] = fut.result(10)

    async def _serve(self, address: str, ctx: ssl.SSLContext) -> Any:
        from websockets.asyncio.server import serve

        return await serve(self._handler, address, PORT, ssl=ctx, compression=None, max_size=None,
                           ping_interval=None, process_request=self._process_request,
                           server_header="eice-fake", write_limit=2 ** 20)

    def inject(self, fault: str) -> None:
        """Queue a fault for the next connection.

        Handshake: ``status:N:Code[:Message]`` (refuse with a JSON body), ``stall-handshake`` (never answer).
        Tunnel: ``text-frame``, ``invalid-frame`` (reserved opcode), ``oversized-frame`` (1 TiB length
        header), ``close:CODE:REASON``, ``drop`` (abort at once), ``drop-after:N`` (abort after N bytes
        down), ``stall-after:S`` (stop reading and answering PINGs after S seconds), ``slow-read``,
        ``stall-open`` (upgrade, then never a byte: the target is never dialled), ``stall-down-after:N``
        / ``stall-up-after:N`` (stop reading and sending once N bytes went down / came up),
        ``ping-first`` (a PING before any data), ``messages:N`` (data coalesced into N-byte messages),
        and after the first bytes down (the banner): ``then-text``, ``then-opcode``, ``then-rsv1``,
        ``then-endless`` (continuation frames that never end), ``then-close:CODE:REASON``.
        """
        with self.lock:
            self.faults.append(fault)

    # ---- handshake -------------------------------------------------------------------------------
    def _refuse(self, connection: Any, status: int, code: str, message: str, host: str, eid: str,
                params: dict) -> Any:
        self.handshakes.append(Handshake(host, eid, params, status, code))
        self._trail(params, code)
        body = json.dumps({"ErrorCode": code, "Message": message})
        response = connection.respond(HTTPStatus(status), body)
        response.headers["Content-Type"] = "application/json"
        del response.headers["Date"]  # the endpoint's own clock, as a real endpoint's Date header has it
        if self.send_date:
            response.headers["Date"] = email.utils.formatdate(time.time() + self.clock_skew, usegmt=True)
        return response

    async def _process_request(self, connection: Any, request: Any) -> Any:
        with self.lock:
            stall = bool(self.faults) and self.faults[0] == "stall-handshake"
            if stall:
                self.faults.popleft()
        if stall:  # accept TCP and TLS, never answer the upgrade (the client's timeout must fire)
            await asyncio.sleep(30)
        return self._check_request(connection, request)

    def _check_request(self, connection: Any, request: Any) -> Any:
        parts = urlsplit(request.path)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        params = dict(pairs)
        host = request.headers.get("Host", "")
        eid = params.get("instanceConnectEndpointId", "")
        with self.lock:
            fault = self.faults[0] if self.faults and self.faults[0].startswith("status:") else None
            if fault:
                self.faults.popleft()
        if fault:
            _, status, code, message = (fault.split(":", 3) + ["Injected", ""])[:4]
            return self._refuse(connection, int(status), code, message or f"injected HTTP {status}", host, eid,
                                params)
        if parts.path != "/openTunnel":
            return self._refuse(connection, 404, "NotFound", "Unknown path", host, eid, params)
        try:
            now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.clock_skew)
            verify("GET", parts.path, pairs, host, self.secrets, self.aws.region, now=now)
        except SigV4Error as exc:
            return self._refuse(connection, 403, exc.code, exc.message, host, eid, params)
        endpoint = self.aws.endpoints.get(eid)
        if endpoint is None or endpoint["State"] not in USABLE_STATES:
            return self._refuse(connection, 403, "AccessDeniedException",
                                f"Instance Connect Endpoint {eid} not found or not available", host, eid, params)
        dual = endpoint.get("PublicDnsNames", {}).get("Dualstack", {})
        names = {endpoint["DnsName"], endpoint["FipsDnsName"], dual.get("DnsName"), dual.get("FipsDnsName")}
        if host.strip("[]") not in names:
            return self._refuse(connection, 403, "InvalidSignatureException",
                                "Host does not belong to this endpoint", host, eid, params)
        try:
            port = int(params.get("remotePort", ""))
            ip = ipaddress.ip_address(params.get("privateIpAddress", ""))
            duration = int(params["maxTunnelDuration"]) if "maxTunnelDuration" in params else 3600
        except ValueError:
            return self._refuse(connection, 400, "InvalidParameter", "Invalid remotePort, privateIpAddress "
                                "or maxTunnelDuration", host, eid, params)
        if not 1 <= port <= 65535 or not 1 <= duration <= 3600:
            return self._refuse(connection, 400, "InvalidParameter", "The specified RemotePort or "
                                "MaxTunnelDuration is not valid", host, eid, params)
        if self.port_rule and port not in SERVICE_PORTS and port not in self.test_ports:
            return self._refuse(connection, 400, "InvalidParameter", "The specified RemotePort is not valid. Specify "
                                "either 22 or 3389 as the RemotePort and retry your request.", host, eid, params)
        if not ip.is_loopback:
            return self._refuse(connection, 400, "InvalidParameter",
                                "privateIpAddress is not reachable from this endpoint", host, eid, params)
        with self.lock:
            if self.active[eid] >= self.max_connections:
                return self._refuse(connection, 429, "TooManyConnections",
                                    f"Maximum of {self.max_connections} concurrent connections per endpoint "
                                    "reached", host, eid, params)
            self.active[eid] += 1
            self.peak[eid] = max(self.peak[eid], self.active[eid])
        connection.eice = {"endpoint_id": eid, "ip": str(ip), "port": port, "duration": duration}
        self.handshakes.append(Handshake(host, eid, params, 101))
        self._trail(params, None)
        return None

    @staticmethod
    async def _misbehave(ws: Any, how: str) -> None:
        """After the banner went down: frames a real endpoint never sends."""
        if how == "text":
            await ws.send("surprise")
        elif how == "opcode":
            ws.transport.write(b"\x8b\x00")  # reserved control opcode 0xB
        elif how == "rsv1":
            ws.transport.write(b"\xc2\x03abc")  # RSV1 without a negotiated extension
        elif how == "endless":
            ws.transport.write(b"\x02\x7e\xff\xff" + b"\0" * 65535)  # BINARY, FIN clear
            chunk = b"\x00\x7e\xff\xff" + b"\0" * 65535           # CONT, FIN clear, forever
            for _ in range(4096):
                if ws.transport.is_closing():
                    return
                ws.transport.write(chunk)
                await asyncio.sleep(0)
                while ws.transport.get_write_buffer_size() > 1 << 20 and not ws.transport.is_closing():
                    await asyncio.sleep(0.01)
            return
        elif how.startswith("close:"):
            _, code, reason = (how.split(":", 2) + [""])[:3]
            await ws.close(int(code), reason)
            return
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            ws.transport.abort()

    def _trail(self, params: dict, error: Optional[str]) -> None:
        """OpenTunnel in the fake CloudTrail, with the request parameters the real event carries."""
        keep = ("instanceConnectEndpointId", "remotePort", "privateIpAddress", "maxTunnelDuration")
        self.aws.record_event("OpenTunnel", str(uuid.uuid4()), {k: params[k] for k in keep if k in params}, error,
                              resources=[{"ResourceType": "AWS::EC2::InstanceConnectEndpoint",
                                          "ResourceName": params.get("instanceConnectEndpointId", "")}])

    # ---- tunnel ----------------------------------------------------------------------------------
    async def _handler(self, ws: Any) -> None:
        info = ws.eice
        try:
            await self._tunnel(ws, info)
        finally:
            with self.lock:
                self.active[info["endpoint_id"]] -= 1

    async def _tunnel(self, ws: Any, info: dict) -> None:
        with self.lock:
            fault = self.faults.popleft() if self.faults else ""
        if fault == "text-frame":
            await ws.send("hello")
            await ws.wait_closed()
            return
        if fault.startswith("close:"):
            _, code, reason = (fault.split(":", 2) + [""])[:3]
            await ws.close(int(code), reason)
            return
        if fault == "drop":
            ws.transport.abort()
            return
        if fault in ("invalid-frame", "oversized-frame"):
            # Raw bytes under the WebSocket layer: a reserved opcode, or a length header of 1 TiB.
            raw = b"\x83\x00" if fault == "invalid-frame" else b"\x82\x7f" + (1 << 40).to_bytes(8, "big") + b"x" * 64
            ws.transport.write(raw)
            await ws.wait_closed()
            return
        if fault == "stall-open":  # the upgrade worked, then nothing: read and drop what comes, never answer
            try:
                async for _ in ws:
                    pass
            except Exception:
                pass
            return
        if fault == "ping-first":
            await ws.ping(b"hello?")
        drop_after = int(fault.split(":", 1)[1]) if fault.startswith("drop-after:") else None
        stall_down = int(fault.split(":", 1)[1]) if fault.startswith("stall-down-after:") else None
        stall_up = int(fault.split(":", 1)[1]) if fault.startswith("stall-up-after:") else None
        message_size = int(fault.split(":", 1)[1]) if fault.startswith("messages:") else None
        then = fault[5:] if fault.startswith("then-") else None
        stalled = asyncio.Event()
        stall_after = float(fault.split(":", 1)[1]) if fault.startswith("stall-after:") else None
        slow_read = fault == "slow-read"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(info["ip"], info["port"]), 10)
        except (OSError, asyncio.TimeoutError):
            self.unreachable.append(time.time())
            await ws.close(1011, "Unable to connect to target")
            return

        from websockets.exceptions import ConnectionClosed

        async def up() -> None:
            try:
                async for message in ws:
                    if isinstance(message, str):
                        await ws.close(1003, "Binary frames only")
                        return
                    writer.write(message)
                    await writer.drain()
                    received_up[0] += len(message)
                    if stall_up is not None and received_up[0] >= stall_up:
                        stalled.set()
                        return
                    if slow_read:  # a slow endpoint: the client must wait, not lose or pile up data
                        await asyncio.sleep(0.005)
            except (ConnectionClosed, OSError):
                pass

        received_up = [0]

        async def down() -> None:
            sent = 0
            try:
                while True:
                    data = await reader.read(65536)
                    if message_size is not None:  # coalesce while more is coming at once
                        while data and len(data) < message_size:
                            try:
                                more = await asyncio.wait_for(reader.read(message_size - len(data)), 0.2)
                            except asyncio.TimeoutError:
                                break
                            if not more:
                                break
                            data += more
                    if not data:
                        return
                    if stall_down is not None and sent + len(data) >= stall_down:
                        await ws.send(data[: stall_down - sent])
                        stalled.set()
                        return

                    if drop_after is not None and sent + len(data) > drop_after:
                        await ws.send(data[: drop_after - sent])
                        ws.transport.abort()  # the connection dies mid-stream, no CLOSE
                        return
                    await ws.send(data)
                    sent += len(data)
                    if then is not None:  # the first bytes (the banner) went down: now misbehave
                        await self._misbehave(ws, then)
                        return
            except (ConnectionClosed, OSError):
                pass

        async def stall() -> None:
            await asyncio.sleep(stall_after or 0)
            ws.transport.pause_reading()  # no more reading, so no more PONGs: a dead path
            for t in (up_task, down_task):
                t.cancel()
            # Not reading, we would never notice the client leave: drop it after a while, so the
            # connection stops counting against the endpoint's cap for later tests.
            await asyncio.sleep(self.stall_hold)
            ws.transport.abort()

        up_task = asyncio.ensure_future(up())
        down_task = asyncio.ensure_future(down())
        if stall_after is not None or stall_down is not None or stall_up is not None:
            if stall_after is None:
                await stalled.wait()
            await stall()
            writer.close()
            return
        done, pending = await asyncio.wait({up_task, down_task}, timeout=info["duration"],
                                           return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        try:
            writer.close()
        except Exception:
            pass
        if not done:
            await ws.close(1000, "Tunnel duration exceeded")
        elif down_task in done:
            await ws.close(1000, "")
        else:
            await ws.close()
