"""botocore's data, read fast: the EC2 model cut down to what we call, and every data file botocore
parses (endpoints, partitions, models, rule sets) kept as ``marshal`` beside it.

A cold connection creates its botocore clients in a fresh process (the helper's preparer, or an
in-process ``connect``): botocore then lists ~400 service directories and parses ~1 MB of JSON on every
client it makes, ~60 ms before the first API call (bench/RESULTS.md, "cold: API calls reach AWS at").
The cut model, the marshal copies and the service list live in the user's cache directory, per
botocore version, private; a copy that does not match its source (size, mtime) is read again.
"""
from __future__ import annotations

import hashlib
import logging
import marshal
import os
import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

# The EC2 operations a connection can call (resolve, locate, --start, host keys; doctor's too). The
# per-user helper writes the EC2 model cut down to these (``cut_models``); sessions then read that
# small file instead of parsing the whole ~20 MiB model (~120 ms). tests/unit/test_helper_parts.py
# checks that every EC2 call in the code is listed.
EC2_OPERATIONS = ("DescribeInstances", "DescribeInstanceConnectEndpoints", "StartInstances", "GetConsoleOutput",
                  "DescribeSecurityGroups", "DescribeSubnets")


def trim_model(model: dict, operations: tuple[str, ...]) -> dict:
    """A service model with only ``operations`` and the shapes they reach (members, list members, map keys/values)."""
    shapes = model["shapes"]
    ops = {name: model["operations"][name] for name in operations if name in model["operations"]}
    todo = [op[part]["shape"] for op in ops.values() for part in ("input", "output") if part in op]
    todo += [error["shape"] for op in ops.values() for error in op.get("errors", [])]
    keep: set[str] = set()
    while todo:
        name = todo.pop()
        if name in keep or name not in shapes:
            continue
        keep.add(name)
        shape = shapes[name]
        todo += [member["shape"] for member in shape.get("members", {}).values()]
        todo += [shape[part]["shape"] for part in ("member", "key", "value") if part in shape]
    return {**model, "operations": ops, "shapes": {name: shapes[name] for name in keep}}


def models_dir() -> "Path":
    """Where the cut-down models of this botocore version live (user cache dir)."""
    import botocore

    from eic_proxy.store.files import cache_dir

    return cache_dir() / "models" / botocore.__version__


def cut_models() -> None:
    """Write the cut-down EC2 model once per botocore version (the helper calls this when idle)."""
    root = models_dir()
    if not (root / "ec2").is_dir():
        _cut_ec2_model(root)


def _cut_ec2_model(root: "Path") -> None:
    """Write ``root/ec2/VERSION/service-2.json`` with EC2_OPERATIONS only, from a forked child: the full
    model's parse (and its garbage) lives and dies there, not in the helper. Returns once it is gone."""
    if sys.platform == "win32":  # no helper on Windows (and the type checker sees it)
        raise OSError("the helper is POSIX-only")
    import json

    from eic_proxy.store.files import ensure_private_dir, write_private_atomic

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            import botocore.loaders

            loader = botocore.loaders.Loader()
            version = loader.determine_latest_version("ec2", "service-2")
            data, _ = loader.load_data_with_path(f"ec2/{version}/service-2")
            target = root / "ec2" / version / "service-2.json"
            ensure_private_dir(target.parent)
            write_private_atomic(target, json.dumps(trim_model(data, EC2_OPERATIONS)).encode(), durable=False)
        finally:
            os._exit(0)
    os.close(w)
    try:
        os.read(r, 1)  # end of file: the child has exited
    finally:
        os.close(r)


def use_fast_data_loader(session: Any) -> None:
    """Give ``session`` a loader that reads the cut EC2 model when there is a sound one (search paths:
    it first, then AWS_DATA_PATH, then botocore's own) and keeps every file it parses as marshal."""

    root = models_dir()
    data_path = os.environ.get("AWS_DATA_PATH")
    extra = [os.path.expanduser(p) for p in (data_path or "").split(os.pathsep) if p]
    first = [str(root)] if _cut_model_ok(root) else []
    loader = _fast_loader_class(root)(extra_search_paths=[*first, *extra], file_loader=_marshal_file_loader(root))
    session.register_component("data_loader", loader)


def _cut_model_ok(root: "Path") -> bool:
    found = sorted(root.glob("ec2/*/service-2.json"))
    if not found:
        return False
    try:  # a damaged copy must not break the connection: without it, botocore's own model is used
        import json

        if "DescribeInstances" not in json.loads(found[-1].read_bytes())["operations"]:
            raise ValueError("not a model of ours")
    except (OSError, ValueError, KeyError, TypeError):
        log.debug("ignoring the cut-down EC2 model in %s", root)
        return False
    return True


def _marshal_file_loader(root: "Path") -> Any:
    import botocore.loaders

    class MarshalJSONFileLoader(botocore.loaders.JSONFileLoader):
        """botocore's JSON files, each parsed once and then read from a marshal copy (a fraction of the time)."""

        def _load_file(self, full_path: str, open_method: Any) -> Any:
            try:
                st = os.stat(full_path)
            except OSError:
                return None
            stamp = (full_path, st.st_size, st.st_mtime_ns)
            copy = root / MARSHAL_DIR / (hashlib.sha256(full_path.encode()).hexdigest()[:32] + ".marshal")
            data = _read_copy(copy, stamp)
            if data is not None:
                return data
            parsed = super()._load_file(full_path, open_method)
            if parsed is None:
                return None
            data = _plain(parsed)
            _write_copy(copy, stamp, data)
            return data

    return MarshalJSONFileLoader()


def _fast_loader_class(root: "Path") -> Any:
    import botocore.loaders

    class FastLoader(botocore.loaders.Loader):
        """``list_available_services`` (which botocore calls for every client: ~900 directory listings
        and ~2800 stats) kept as a marshal copy, checked against the search paths' modification times."""

        def list_available_services(self, type_name: str) -> Any:
            key = ("services", type_name, tuple((p, _mtime(p)) for p in self.search_paths))
            copy = root / MARSHAL_DIR / ("services-" + hashlib.sha256(repr(key).encode()).hexdigest()[:32])
            found = _read_copy(copy, key)
            if found is None:
                found = list(super().list_available_services(type_name))
                _write_copy(copy, key, found)
            return found

    return FastLoader


MARSHAL_DIR = f"marshal-{sys.version_info[0]}.{sys.version_info[1]}-{marshal.version}"


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _read_copy(path: "Path", stamp: Any) -> Optional[Any]:
    try:
        with open(path, "rb") as fh:
            saved, data = marshal.loads(fh.read())  # marshal.load(fh) reads item by item: many times slower
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return data if saved == stamp else None


def _write_copy(path: "Path", stamp: Any, data: Any) -> None:
    from eic_proxy.store.files import best_effort, ensure_private_dir, write_private_atomic

    with best_effort("the botocore data cache"):  # only a cache: a full or read-only disk costs the next cold connection the parse
        ensure_private_dir(path.parent)
        write_private_atomic(path, marshal.dumps((stamp, data)), durable=False)


def _plain(value: Any) -> Any:
    """JSON data with botocore's OrderedDicts as dicts (which keep their order): what marshal can write."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
