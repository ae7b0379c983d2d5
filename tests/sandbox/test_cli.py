"""``cryptolens-bridge sandbox``: options reach the app, and the banner tells how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main


def test_starts_uvicorn_with_the_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen.update(kwargs, faults=app.state.sandbox.faults.config, store=app.state.sandbox.store)

    monkeypatch.setattr("bridge.sandbox.cli.uvicorn.run", fake_run)
    db = tmp_path / "state.db"
    result = CliRunner().invoke(
        main,
        [
            "sandbox",
            "--port", "8791",
            "--db", str(db),
            "--fail-rate", "0.1",
            "--lost-reply-rate", "0.2",
            "--lost-reply-mode", "mixed",
            "--rate-limit", "50",
            "--latency-ms", "5",
            "--seed", "9",
        ],
    )  # fmt: skip
    seen["store"].close()
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8791)
    faults = seen["faults"]
    assert (faults.fail_rate, faults.lost_reply_rate, faults.lost_reply_mode) == (0.1, 0.2, "mixed")
    assert (faults.rate_limit, faults.latency_ms, faults.seed) == (50, 5, 9)
    assert "http://127.0.0.1:8791/api/" in result.output
    assert "sandbox-demo-token-0001" in result.output
    for template in ("Monthly", "Yearly", "Perpetual"):
        assert template in result.output
    assert str(db) in result.output


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[products]]\nid = 1\n")
    result = CliRunner().invoke(main, ["sandbox", "--config", str(path)])
    assert result.exit_code == 2
    assert "--config" in result.output
