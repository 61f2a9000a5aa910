"""HdfsService against real Hadoop daemons: lifecycle, files through Hadoop's own shell, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from streamtap.errors import ServiceError
from streamtap.services.hdfs import HdfsService
from streamtap.services.process import free_port
from tests.fixtures.hdfs import dfs_cat, dfs_ls, unique_hdfs_path


def test_put_ls_cat_through_hadoops_shell(hdfs: HdfsService, tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17) + bytes(range(256))
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    directory = unique_hdfs_path("service")

    hdfs.dfs("-mkdir", "-p", directory)
    hdfs.dfs("-put", str(local), f"{directory}/payload.bin")

    assert dfs_ls(hdfs, directory) == {f"{directory}/payload.bin": len(payload)}
    assert dfs_cat(hdfs, f"{directory}/payload.bin") == payload
    # Hadoop's shell sees the NameNode at the URL the service reports, too.
    listing = hdfs.dfs("-ls", f"{hdfs.url}{directory}").stdout.decode()
    assert "payload.bin" in listing


def test_status_reports_the_running_file_system(hdfs: HdfsService):
    info = hdfs.status()

    assert info is not None
    assert info["url"] == f"hdfs://127.0.0.1:{hdfs.port}"
    assert info["datanodes"] == "1/1 running"
    assert info["live_datanodes"] == "1"
    assert info["safemode"] == "off"


def test_every_port_is_on_loopback(hdfs: HdfsService):
    import psutil

    pids = {int(path.read_text()) for path in hdfs.state_dir.glob("*/*.pid")}
    listening = [
        conn
        for pid in pids
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening
    assert {conn.laddr.ip for conn in listening} == {"127.0.0.1"}


def test_a_second_shell_finds_it_by_state_dir(hdfs: HdfsService):
    # `streamtap services status hdfs` from another shell builds the service with defaults.
    other = HdfsService(state_dir=hdfs.state_dir)
    info = other.status()
    assert info is not None and info["url"] == hdfs.url


def test_dfs_failure_names_the_problem(hdfs: HdfsService):
    with pytest.raises(ServiceError, match="No such file or directory"):
        hdfs.dfs("-cat", unique_hdfs_path("missing"))


def test_up_down_up_keeps_the_files_and_cli_status(tmp_path):
    state = tmp_path / "state"
    port, http_port = free_port(), free_port()
    env = {**os.environ, "STREAMTAP_STATE": str(state)}
    cli = [sys.executable, "-m", "streamtap.cli", "services"]

    up = subprocess.run(
        [*cli, "up", "hdfs", "--port", str(port), "--http-port", str(http_port)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr
    assert f"hdfs://127.0.0.1:{port}" in up.stdout
    service = HdfsService(state_dir=state / "hdfs")
    try:
        service.dfs("-mkdir", "-p", "/kept")
        service.dfs("-put", "-", "/kept/file", input=b"survives a restart")

        status = subprocess.run(
            [*cli, "status", "hdfs"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "1/1 running" in status.stdout

        down = subprocess.run(
            [*cli, "down", "hdfs"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
        assert service.status() is None
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0

        service.up()  # same state dir: formatted once, the file is still there
        assert dfs_cat(service, "/kept/file") == b"survives a restart"
    finally:
        service.down()


def test_kill_and_restart_single_daemons(hdfs: HdfsService):
    directory = unique_hdfs_path("restart")
    hdfs.dfs("-mkdir", "-p", directory)
    hdfs.dfs("-put", "-", f"{directory}/before", input=b"before")

    hdfs.kill_datanode(0)
    assert not hdfs.datanode_running(0)
    hdfs.start_datanode(0)
    hdfs.restart_namenode(kill=True)

    assert hdfs.namenode_running() and hdfs.datanode_running(0)
    assert dfs_cat(hdfs, f"{directory}/before") == b"before"
    hdfs.dfs("-put", "-", f"{directory}/after", input=b"after")
    assert dfs_cat(hdfs, f"{directory}/after") == b"after"


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        service = HdfsService(state_dir=tmp_path, port=port, http_port=free_port())
        with pytest.raises(ServiceError, match=f"127.0.0.1:{port} is already in use.*--port"):
            service.up()


def test_bad_arguments_are_rejected_by_name():
    with pytest.raises(ValueError, match="datanodes"):
        HdfsService(datanodes=0)
    with pytest.raises(ValueError, match="replication"):
        HdfsService(datanodes=2, replication=3)
