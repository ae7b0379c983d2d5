"""The library internals the bridge builds on, pinned: this fails when they change.

Three places use what a library does not promise:

- ``bridge.core.queue`` enqueues a list of jobs in one Lua script that does what
  ``ArqRedis.enqueue_job`` does per job (its keys, serializer and expiry);
- ``jobs.worker.BridgeWorker`` extends ``main``, ``_poll_iteration``, ``start_jobs`` and
  ``close`` of arq's ``Worker`` and calls its ``_release_sem_dec_counter_on_complete``;
- ``bridge.serve.BoundedHttpToolsProtocol`` subclasses uvicorn's ``HttpToolsProtocol``.

pyproject.toml bounds arq and uvicorn above, and requirements.lock pins the image. When a
bump changes one of the functions below, this test names it: read the new source against
our code, then record the new fingerprint here.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from arq import constants
from arq.connections import ArqRedis
from arq.jobs import serialize_job
from arq.worker import Worker
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.serve import BoundedHttpToolsProtocol
from jobs.worker import BridgeWorker

# The source of each function we copy or extend, as read with arq 0.28.0 and uvicorn 0.55.0.
FINGERPRINTS: dict[str, tuple[Callable[..., Any], str]] = {
    "arq ArqRedis.enqueue_job": (ArqRedis.enqueue_job, "7da8706a747c1171"),
    "arq serialize_job": (serialize_job, "1fc854cc50e16e5c"),
    "arq Worker.main": (Worker.main, "45ca1591c9717466"),
    "arq Worker._poll_iteration": (Worker._poll_iteration, "f8d39d823a0a59f2"),
    "arq Worker.start_jobs": (Worker.start_jobs, "b45797cfa40bed7f"),
    "arq Worker.close": (Worker.close, "5bcc9cb356680829"),
    "arq Worker._release_sem_dec_counter_on_complete": (
        Worker._release_sem_dec_counter_on_complete,
        "0ed101482e942c33",
    ),
    "uvicorn HttpToolsProtocol.__init__": (HttpToolsProtocol.__init__, "4f08999410347141"),
    "uvicorn HttpToolsProtocol.connection_made": (
        HttpToolsProtocol.connection_made,
        "6efb565ff3d36b91",
    ),
    "uvicorn HttpToolsProtocol.connection_lost": (
        HttpToolsProtocol.connection_lost,
        "c91a4c9bf2e29c55",
    ),
    "uvicorn HttpToolsProtocol.data_received": (
        HttpToolsProtocol.data_received,
        "010a7ae59a5d3b1a",
    ),
    "uvicorn HttpToolsProtocol.on_message_begin": (
        HttpToolsProtocol.on_message_begin,
        "96d377fdc7c2baef",
    ),
    "uvicorn HttpToolsProtocol.on_headers_complete": (
        HttpToolsProtocol.on_headers_complete,
        "1ea8589acfad92d8",
    ),
    "uvicorn HttpToolsProtocol.on_message_complete": (
        HttpToolsProtocol.on_message_complete,
        "1fbad42dc31fc01f",
    ),
    "uvicorn HttpToolsProtocol.on_response_complete": (
        HttpToolsProtocol.on_response_complete,
        "64e254f28e389e76",
    ),
}


def fingerprint(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_source_we_build_on_is_the_source_we_read(name: str) -> None:
    function, recorded = FINGERPRINTS[name]
    assert fingerprint(function) == recorded, (
        f"{name} changed in the installed version: read it against our code "
        "(see this module's docstring), then record its new fingerprint"
    )


def test_the_keys_and_expiry_the_enqueue_script_writes_are_arqs() -> None:
    assert constants.job_key_prefix == "arq:job:"
    assert constants.result_key_prefix == "arq:result:"
    assert constants.default_queue_name == "arq:queue"
    assert constants.expires_extra_ms == 86_400_000
    assert list(inspect.signature(serialize_job).parameters) == [
        "function_name",
        "args",
        "kwargs",
        "job_try",
        "enqueue_time_ms",
        "serializer",
    ]


def test_every_method_our_subclasses_override_still_exists_upstream() -> None:
    for ours, theirs in ((BridgeWorker, Worker), (BoundedHttpToolsProtocol, HttpToolsProtocol)):
        overridden = {
            name
            for name, value in vars(ours).items()
            if callable(value) and not name.startswith("__") and hasattr(theirs, name)
        }
        assert overridden, ours
        for name in overridden:
            assert inspect.signature(getattr(ours, name)).parameters.keys() >= (
                inspect.signature(getattr(theirs, name)).parameters.keys()
            ), f"{ours.__name__}.{name} no longer takes what {theirs.__name__}.{name} takes"
    assert hasattr(httptools_impl, "STATUS_LINE")
