"""Secrets never reach a log line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from bridge.core import logs


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield None
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_registered_secret_values_are_scrubbed_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    logs.register_secrets(["tok_live_abcdef123456", "whsec_rotation_secret"])
    logs.configure("INFO")
    log = structlog.get_logger("t")
    log.info(
        "calling https://x/api?token=tok_live_abcdef123456",
        detail={"nested": ["whsec_rotation_secret"]},
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "tok_live_abcdef123456" not in json.dumps(line)
    assert "whsec_rotation_secret" not in json.dumps(line)
    assert "[redacted]" in line["event"]


def test_secret_named_fields_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO")
    structlog.get_logger("t").info("x", token="anything", api_key="k", stripe_signature="s")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["token"] == line["api_key"] == line["stripe_signature"] == "[redacted]"


def test_standard_library_records_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    logs.register_secrets(["sk_test_standard_lib_key"])
    logs.configure("INFO")
    logging.getLogger("stripe").warning("error with key %s", "sk_test_standard_lib_key")
    assert "sk_test_standard_lib_key" not in capsys.readouterr().err
