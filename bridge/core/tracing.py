"""Optional OpenTelemetry traces: a delivery, an intent's run, each Cryptolens call.

Off unless both hold: the standard ``OTEL_*`` environment names somewhere to send spans
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER``), and the ``otel`` extra is installed
(``pip install 'cryptolens-bridge[otel]'``). Otherwise :func:`span` is a shared no-op
context manager: one dictionary lookup per call, no import of OpenTelemetry.

The SDK reads the rest of its configuration (service name, headers, sampler) from the
same environment. Attributes are ids only (intent, event, method), never a key or a
parameter: the calls' bodies carry the access token. A usage id from before key digests
is given in its public form (:func:`bridge.core.intents.public_id`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from bridge.core.intents import public_text

_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
_tracer: Any = None
_checked = False


def _setup() -> Any:
    """The tracer, or None when tracing is off (decided once per process)."""
    global _tracer, _checked
    if _checked:
        return _tracer
    _checked = True
    wanted = [name for name in _ENV if os.environ.get(name)]
    if not wanted or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:  # the otel extra is not installed: no traces
        return None
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            return None
        exporter = OTLPSpanExporter()
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "cryptolens-bridge")}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("cryptolens-bridge")
    return _tracer


def enabled() -> bool:
    return _setup() is not None


@contextlib.contextmanager
def _span(tracer: Any, name: str, attributes: dict[str, Any]) -> Iterator[None]:
    with tracer.start_as_current_span(name, attributes=attributes):
        yield


def span(name: str, **attributes: str | int | None) -> AbstractContextManager[None]:
    """A span named ``name`` as a child of the current one, or a no-op when off."""
    tracer = _tracer if _checked else _setup()
    if tracer is None:
        return _NOOP
    return _span(
        tracer,
        name,
        {
            k: public_text(v) if isinstance(v, str) else v
            for k, v in attributes.items()
            if v is not None
        },
    )
