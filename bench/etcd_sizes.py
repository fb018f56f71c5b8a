"""Records the largest etcd request and value a `gravity` process sends, for the 100,000-phase
case: `python -c "…install(); main()"` wraps pyetcd's request building (a few µs per request).
"""

from __future__ import annotations

import atexit
import json
import os
from typing import Any

ENV = "GRAVITY_BENCH_SIZES"  # where the process writes {"max_request": …, "max_value": …}
# Runs `gravity ARGS` with the sizes recorded: python -c WRAPPER ARGS (PYTHONPATH has the repo).
WRAPPER = ("import sys; sys.argv[0] = 'gravity'; from bench.etcd_sizes import install; "
           "install(); from engine.cli.main import main; sys.exit(main())")


def install() -> None:
    """Wrap pyetcd's TxnRequest and put building; write the largest sizes seen at exit."""
    import importlib

    client = importlib.import_module("pyetcd.client")  # the module; pyetcd.client is a function

    path = os.environ[ENV]
    seen: dict[str, Any] = {"max_request": 0, "max_value": 0, "largest": ""}
    real = client.etcdrpc
    build_put = client.MultiEndpointEtcd3Client._build_put_request

    def note(kind: str, size: int) -> None:
        if size > seen["max_request"]:
            seen["max_request"], seen["largest"] = size, kind

    class Rpc:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def TxnRequest(**fields: Any) -> Any:  # pyetcd's name
            msg = real.TxnRequest(**fields)
            note(f"txn of {len(msg.success)} ops", msg.ByteSize())
            return msg

    def put_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        msg = build_put(self, *args, **kwargs)
        seen["max_value"] = max(seen["max_value"], len(msg.value))
        note("put", msg.ByteSize())
        return msg

    client.etcdrpc = Rpc()
    client.MultiEndpointEtcd3Client._build_put_request = put_request  # type: ignore[method-assign]

    def write() -> None:
        with open(path, "w") as f:
            json.dump(seen, f)

    atexit.register(write)
