"""A minimal reference relay: stdin/stdout <-> one presigned EICE WebSocket, nothing else.

Used by bench.py as the "reference relay" ProxyCommand: no resolution, no cache, no key push, no
limiter, no keep-alive — only the data path (websocket-client + wsaccel, two threads, 65 000-byte
frames), so that throughput and CPU of eic-proxy can be compared with the least a Python client
must do through the same fake endpoint. The presigned URL comes in $REF_URL_FILE (one per run).
"""
from __future__ import annotations

import os
import ssl
import sys
import threading

import websocket


def main() -> int:
    with open(os.environ["REF_URL_FILE"]) as fh:
        url = fh.read().strip()
    ws = websocket.create_connection(url, sslopt={"cert_reqs": ssl.CERT_REQUIRED,
                                                  "ca_certs": os.environ["AWS_CA_BUNDLE"]},
                                     enable_multithread=True, skip_utf8_validation=True, http_no_proxy=["*"])

    def up() -> None:
        buf = bytearray(65000)
        while True:
            n = os.readv(0, [buf])
            if not n:
                break
            ws.send_binary(bytes(buf[:n]))
        try:
            ws.send_close()
        except Exception:
            pass

    threading.Thread(target=up, daemon=True).start()
    try:
        while True:
            opcode, data = ws.recv_data()
            if opcode != websocket.ABNF.OPCODE_BINARY and opcode != websocket.ABNF.OPCODE_CONT:
                break
            mv = memoryview(data)
            while mv:
                mv = mv[os.write(1, mv):]
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
