"""Structured logs (structlog, JSON lines) with secrets scrubbed before they are written.

Secrets never reach a log line: the access token, webhook secrets and API keys are
registered here at start-up and replaced wherever they appear in an event, and keys that
name a secret (``token``, ``secret``, ``authorization``, ...) are masked whatever their value.
License keys are the end users' credentials: ids name them by a digest, and a usage id
from before that (which held the key) is shown as its public form
(:func:`bridge.core.intents.public_text`) wherever it appears, arq's own lines included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from bridge.core.intents import public_text

_SECRET_KEYS = re.compile(r"token|secret|password|authorization|api_key|signature", re.I)
_REDACTED = "[redacted]"
_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so that they are scrubbed from any log line."""
    for value in values:
        if value and len(value) >= 4:
            _known_secrets.add(value)


def scrub(text: str) -> str:
    text = public_text(text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def _scrub_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return _REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(key, v) for v in value]
    return value


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key == "event":
            event_dict[key] = scrub(str(event_dict[key]))
        else:
            event_dict[key] = _scrub_value(key, event_dict[key])
    return event_dict


def configure(level: str = "INFO", *, json: bool = True) -> None:
    """Set up structlog and route the standard library's logging through the same scrubber."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Not cached: a reconfiguration (tests, the dev command) must reach every logger.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; our client never puts the token in a URL,
    # but a GET fallback someday might, so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
