"""One connection's life, top to bottom: prepare (control plane) then carry (transport), in one process or two."""
