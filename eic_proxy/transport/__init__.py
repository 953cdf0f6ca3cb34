"""Socket I/O around the tunnel core: the TLS handshake and upgrade, and the loop that pumps bytes."""
