"""The tunnel core: the EICE WebSocket protocol as pure data in, data out (no sockets, no clock, no AWS)."""
