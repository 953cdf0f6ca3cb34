"""The control plane: AWS API calls that find the target, start it, push the key and fetch host keys."""
