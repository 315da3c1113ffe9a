"""prefect.yaml and ``atlas server``: the deployments as Prefect reads them, and a real server running one.

The slow test starts ``atlas server`` (a real ``prefect server start``, the
process work pool, ``prefect deploy --all`` and a real worker) on a free
loopback port with a private PREFECT_HOME, triggers the nightly deployment
against the loopback fake E-utilities, and reads the DuckDB files it wrote.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from atlas.errors import ConfigError
from atlas.server import (
    PROJECT_DIR_VARIABLE,
    WORK_POOL,
    api_url_for,
    deployment_names,
    deployment_pools,
    enter_project_directory,
    find_project_dir,
    prefect_environment,
    process_tree,
    stop_process,
    wait_until_healthy,
)

REPO = Path(__file__).resolve().parent.parent
PREFECT_FILE = REPO / "prefect.yaml"
NCBI_KEY = "sentinel-ncbi-key-3f9a1c"


def _prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))


def _deployment(name: str) -> dict:
    return next(item for item in _prefect_yaml()["deployments"] if item["name"] == name)


# --------------------------------------------------------------------------- prefect.yaml as Prefect reads it


def test_prefect_yaml_passes_prefects_own_schema():
    """`prefect deploy` only warns about a file its model rejects; this pins the file to that model."""
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig

    model = PrefectYamlModel.model_validate(_prefect_yaml())
    assert [d.name for d in model.deployments] == ["nightly", "backfill", "reclassify", "regenerate"]
    assert {d.work_pool.name for d in model.deployments} == {WORK_POOL}
    nightly = next(d for d in model.deployments if d.name == "nightly")
    (schedule,) = nightly.schedules
    assert isinstance(schedule, RawScheduleConfig)
    assert (schedule.cron, schedule.timezone) == ("30 2 * * *", "America/New_York")
    assert deployment_names(PREFECT_FILE) == ["nightly", "backfill", "reclassify", "regenerate"]
    assert deployment_pools(PREFECT_FILE) == [WORK_POOL]


@pytest.mark.parametrize("name", ["nightly", "backfill", "reclassify", "regenerate"])
def test_each_entrypoint_is_a_flow_that_takes_the_deployments_parameters(name, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    monkeypatch.chdir(REPO)  # entrypoints are relative to the checkout, as `prefect deploy` reads them
    deployment = _deployment(name)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    schema = parameter_schema(flow)
    assert set(deployment.get("parameters") or {}) <= set(schema.properties)
    # Every parameter the flow requires has a value in the deployment, except those asked for at trigger time.
    unfilled = set(schema.required or []) - set(deployment.get("parameters") or {})
    assert unfilled == ({"start", "end"} if name == "backfill" else set())


def test_reclassify_default_policy_exists_in_the_checkout():
    assert (REPO / _deployment("reclassify")["parameters"]["policy_path"]).is_file()


def test_pull_step_enters_the_folder_prefect_templates_from_the_environment(tmp_path, monkeypatch):
    """Run the pull step as Prefect's run_step does: `{{ $VAR }}` read from os.environ when the step runs."""
    from prefect.utilities.templating import apply_values

    (step,) = _prefect_yaml()["pull"]
    (function_name, inputs), = step.items()
    assert function_name == "atlas.server.enter_project_directory"

    checkout = tmp_path / "checkout"
    (checkout / "flows").mkdir(parents=True)
    (checkout / "prefect.yaml").write_text("deployments: []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROJECT_DIR_VARIABLE, str(checkout))
    assert enter_project_directory(**apply_values(inputs, os.environ)) == {"directory": str(checkout)}
    assert Path.cwd() == checkout

    # Unset, Prefect substitutes "": the step falls back to the checkout the package is imported from.
    monkeypatch.delenv(PROJECT_DIR_VARIABLE)
    resolved = apply_values(inputs, os.environ)
    assert resolved == {"directory": ""}
    assert enter_project_directory(**resolved) == {"directory": str(REPO)}
    assert Path.cwd() == REPO


def test_a_folder_that_is_not_a_checkout_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path)):
        find_project_dir(tmp_path)
    with pytest.raises(ConfigError, match="ATLAS_PROJECT_DIR"):
        find_project_dir(None, {PROJECT_DIR_VARIABLE: str(tmp_path)})


def test_a_prefect_file_without_names_or_pools_is_a_config_error(tmp_path):
    broken = tmp_path / "prefect.yaml"
    broken.write_text("deployments:\n  - entrypoint: flows/nightly.py:nightly\n")
    with pytest.raises(ConfigError, match="needs a `name`"):
        deployment_names(broken)
    broken.write_text("name: x\n")
    with pytest.raises(ConfigError, match="no `deployments`"):
        deployment_names(broken)
    broken.write_text("deployments:\n  - name: nightly\n    entrypoint: flows/nightly.py:nightly\n")
    with pytest.raises(ConfigError, match="'nightly' names no work_pool"):
        deployment_pools(broken)


def test_children_get_telemetry_off_without_overriding_an_explicit_choice(tmp_path):
    env = prefect_environment({"PATH": "/bin"}, api_url="http://127.0.0.1:1/api", project_dir=tmp_path)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1/api" and env[PROJECT_DIR_VARIABLE] == str(tmp_path)
    assert prefect_environment({"DO_NOT_TRACK": "0"})["DO_NOT_TRACK"] == "0"
    assert api_url_for("0.0.0.0", 4200) == "http://127.0.0.1:4200/api"
    assert api_url_for("::", 4200) == "http://[::1]:4200/api"


def test_stop_process_kills_descendants_that_left_the_process_group():
    """Prefect puts each flow run in its own process group; stopping the worker must not orphan it."""
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], " \
             "process_group=0); print('started', flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, process_group=0)
    try:
        assert parent.stdout.readline().strip() == "started"
        (grandchild,) = process_tree(parent.pid)
        assert os.getpgid(grandchild) != parent.pid
        stop_process(parent, grace=5.0, first_signal=signal.SIGTERM)
        assert parent.returncode == -signal.SIGTERM
        assert not _alive(grandchild)
    finally:
        for pid in process_tree(parent.pid):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


def test_a_port_in_use_is_refused_before_anything_starts():
    from atlas.server import ensure_port_free

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is already in use"):
            ensure_port_free("127.0.0.1", port)
    with pytest.raises(ConfigError, match="not a TCP port"):
        ensure_port_free("127.0.0.1", 70000)


def test_atlas_deploy_without_a_server_url_says_so():
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from atlas.cli import app

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["deploy"])
    assert result.exit_code == 1
    assert "PREFECT_API_URL is not set" in result.output


def test_health_wait_fails_fast_when_the_server_process_dies():
    from atlas.server import PrefectServiceError

    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(PrefectServiceError, match="exited with status 3"):
        wait_until_healthy(api_url_for("127.0.0.1", _free_port()), dead, timeout=30)


def test_service_files_agree_with_the_project():
    """deploy/ cannot run here (no Docker daemon, no systemd as PID 1): keep its names in step with the code."""
    import tomllib

    from atlas.cli import app

    deploy_dir = REPO / "deploy"
    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    assert {"server", "deploy"} <= commands

    units = {path.name: path.read_text() for path in (deploy_dir / "systemd").glob("*.service")}
    assert set(units) == {"mecfs-atlas.service", "mecfs-atlas-prefect-server.service", "mecfs-atlas-worker.service"}
    assert "/.venv/bin/atlas server --host 127.0.0.1" in units["mecfs-atlas.service"]
    assert "ExecStartPre=/opt/mecfs-atlas/.venv/bin/atlas deploy" in units["mecfs-atlas-worker.service"]
    for text in units.values():
        assert "DO_NOT_TRACK=1" in text and "PREFECT_SERVER_ANALYTICS_ENABLED=false" in text
    for name in ("mecfs-atlas.service", "mecfs-atlas-worker.service"):
        assert "EnvironmentFile=/etc/mecfs-atlas/atlas.env" in units[name]
        assert f"{PROJECT_DIR_VARIABLE}=/opt/mecfs-atlas" in units[name]
    assert f"--pool {WORK_POOL} " in units["mecfs-atlas-worker.service"]

    compose = yaml.safe_load((deploy_dir / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    assert f"--pool {WORK_POOL} " in " ".join(worker["command"])
    assert worker["env_file"] == ["atlas.env"] and worker["environment"][PROJECT_DIR_VARIABLE] == "/app"
    assert compose["services"]["prefect-server"]["ports"] == ["127.0.0.1:4200:4200"]
    assert (deploy_dir / ".gitignore").read_text().splitlines()[-1] == "atlas.env"

    # The image copies what pip installs (every package pyproject finds) plus what flow runs read.
    dockerfile = (deploy_dir / "Dockerfile").read_text()
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert {pattern.rstrip("*") for pattern in packages} | {"policies"} <= copied
    assert "prefect.yaml" in dockerfile


# --------------------------------------------------------------------------- a real server, worker and run


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_atlas_server_runs_the_nightly_deployment_on_a_real_prefect_server(tmp_path, sample_corpus):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    from atlas.fakes.eutils import FakeEutils

    port = _free_port()
    api_url = api_url_for("127.0.0.1", port)
    data_dir = tmp_path / "data"
    fallback = tmp_path / "not-the-override"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",  # the UI build is not under test and costs seconds
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no 02:30 runs of the real query
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # poll the pool every second instead of every 10
        # Were the overrides lost, the flow would fall back to these and never touch the repo or NCBI.
        "ATLAS_DATA_DIR": str(fallback),
        "ATLAS_EUTILS_URL": "http://127.0.0.1:9/",
        # A secret reaches flow runs through the worker's environment (an EnvironmentFile in
        # production), never through the Prefect API: the fake accepts only this key.
        "ATLAS_NCBI_API_KEY": NCBI_KEY,
        "PREFECT_LOGGING_TO_API_ENABLED": "true",  # flow logs land in the server's database, checked below
    }
    env.pop("PREFECT_API_URL", None)
    log_path = tmp_path / "atlas-server.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        service = subprocess.Popen(
            [sys.executable, "-c", "from atlas.cli import main; main()", "server", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    seen: set[int] = set()
    try:
        wait_until_healthy(api_url, service, timeout=120)
        with SyncPrefectClient(api_url) as client:
            deployments = {}
            deadline = time.monotonic() + 120
            while len(deployments) < 4:
                assert service.poll() is None, f"atlas server exited early:\n{_log_tail(log_path)}"
                assert time.monotonic() < deadline, f"deployments never appeared:\n{_log_tail(log_path)}"
                for name in ("nightly/nightly", "backfill/backfill", "reclassify/reclassify",
                             "regenerate/regenerate"):
                    if name not in deployments:
                        try:
                            deployments[name] = client.read_deployment_by_name(name)
                        except ObjectNotFound:
                            pass
                time.sleep(0.25)
            seen.update(process_tree(service.pid))

            nightly = deployments["nightly/nightly"]
            assert nightly.work_pool_name == WORK_POOL
            assert nightly.entrypoint == "flows/nightly.py:nightly"
            (schedule,) = nightly.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == \
                ("30 2 * * *", "America/New_York", True)
            assert nightly.pull_steps == [{"atlas.server.enter_project_directory":
                                           {"directory": "{{ $ATLAS_PROJECT_DIR }}"}}]
            assert deployments["reclassify/reclassify"].parameters == {"policy_path": "policies/v0.1.yaml"}
            assert not deployments["backfill/backfill"].schedules
            # The server enforces the flow's signature: a backfill without its range is refused.
            with pytest.raises(PrefectHTTPStatusError, match="'start' is a required property"):
                client.create_flow_run_from_deployment(deployments["backfill/backfill"].id, parameters={})

            with FakeEutils(sample_corpus, rate_limit=3.0, api_keys={NCBI_KEY}) as fake:
                overrides = {"data_dir": str(data_dir), "eutils_url": fake.url, "ncbi_email": "test@example.org"}
                flow_run = client.create_flow_run_from_deployment(
                    nightly.id, parameters={"as_of": "2025-08-31", "overrides": overrides})
                deadline = time.monotonic() + 120
                while not flow_run.state.is_final():
                    assert time.monotonic() < deadline, \
                        f"flow run stuck in {flow_run.state.name}:\n{_log_tail(log_path)}"
                    seen.update(process_tree(service.pid))
                    time.sleep(0.5)
                    flow_run = client.read_flow_run(flow_run.id)
                served = set(fake.pmids())
                keys_sent = {request.params.get("api_key") for request in fake.requests}
            assert flow_run.state.is_completed(), \
                f"{flow_run.state.name}: {flow_run.state.message}\n{_log_tail(log_path)}"
        elapsed_to_completed = time.monotonic() - started

        with duckdb.connect(str(data_dir / "atlas.snapshot.duckdb"), read_only=True) as snapshot:
            pmids = {row[0] for row in snapshot.execute("SELECT pmid FROM current_papers").fetchall()}
        with duckdb.connect(str(data_dir / "atlas.duckdb"), read_only=True) as live:
            runs = live.execute("SELECT flow, status, parameters, counts FROM run_summary").fetchall()
        assert len(runs) == 1
        flow, status, parameters, counts = runs[0]
        counts = json.loads(counts)
        assert (flow, status, json.loads(parameters)) == ("nightly", "completed", {"as_of": "2025-08-31"})
        assert counts["window"] == "2025-08-01..2025-08-31"
        assert len(pmids) == counts["inserted"] == counts["found"] > 10
        assert pmids <= served
        assert not fallback.exists()
        assert keys_sent == {NCBI_KEY}

        # `atlas deploy` re-applies prefect.yaml to the running server: same deployments, updated in place.
        redeploy = subprocess.run(
            [sys.executable, "-c", "from atlas.cli import main; main()", "deploy"],
            cwd=tmp_path, env={**env, "PREFECT_API_URL": api_url}, capture_output=True, text=True, timeout=120)
        assert redeploy.returncode == 0, redeploy.stdout + redeploy.stderr
        assert "nightly/nightly" in redeploy.stdout
        with SyncPrefectClient(api_url) as client:
            assert client.read_deployment_by_name("nightly/nightly").id == nightly.id
            assert len(client.read_deployments()) == 4

        # Ctrl-C: the worker stops, then the server, and nothing it started is left behind.
        os.kill(service.pid, signal.SIGINT)
        assert service.wait(timeout=90) == 0, _log_tail(log_path)
        log_text = log_path.read_text()
        assert "worker stopped (exit 0)" in log_text and "Prefect server stopped (exit 0)" in log_text
        assert seen and not [pid for pid in seen if _alive(pid)]

        secret = NCBI_KEY.encode()
        written = [path for root in (tmp_path / "prefect-home", data_dir) for path in root.rglob("*") if path.is_file()]
        prefect_db = b"".join(path.read_bytes() for path in written if path.name.startswith("prefect.db"))
        assert b"PMIDs to fetch" in prefect_db  # the flow's own log lines are in there, so the check below bites
        assert not [path for path in written if secret in path.read_bytes()]
        assert secret not in log_path.read_bytes()
        print(f"\nnightly run COMPLETED {elapsed_to_completed:.1f} s after `atlas server` started; "
              f"whole test {time.monotonic() - started:.1f} s")
    finally:
        seen.update(process_tree(service.pid))
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGTERM)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait()
        for pid in seen:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
