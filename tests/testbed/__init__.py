"""Local test bed: fake AWS (moto + EICE actions), fake EICE WebSocket server, real sshd on loopback."""
