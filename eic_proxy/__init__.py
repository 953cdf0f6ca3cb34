"""eic-proxy: an OpenSSH ProxyCommand for private EC2 instances through EC2 Instance Connect Endpoints."""

__version__ = "0.1.0"
