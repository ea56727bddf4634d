"""packaging/deploy.sh against a real sshd started on a local port (Debian openssh-server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.frozen import frozen_binary
from tests.helpers import ROOT, free_port, wait_until
from tests.pgserver import in_ci

SSHD = Path("/usr/sbin/sshd")




@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[dict[str, object]]:
    if not SSHD.exists() or os.geteuid() != 0:
        message = "needs /usr/sbin/sshd (Debian openssh-server) and root"
        if in_ci():
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "host"],
                   check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "client"],
                   check=True)
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPidFile {keys / 'sshd.pid'}\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                            stderr=open(keys / "sshd.log", "wb"))

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True
        except OSError:
            return False

    wait_until(lambda: listening() or proc.poll() is not None, "sshd to listen", timeout=10,
               detail=(keys / "sshd.log").read_text)
    if proc.poll() is not None:
        raise AssertionError((keys / "sshd.log").read_text())
    try:
        yield {"port": port, "identity": keys / "client"}
    finally:
        proc.terminate()
        proc.wait(10)


def deploy(sshd: dict[str, object], hosts: Path, *args: str | Path,
           install_args: tuple[str | Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEPLOY_SSH_OPTIONS": "-o StrictHostKeyChecking=no "
                                                "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"}
    argv = [ROOT / "packaging" / "deploy.sh", "--hosts", hosts, "--binary", frozen_binary(),
            "--ssh-user", "root", "--port", str(sshd["port"]), "--identity", sshd["identity"],
            *args, "--", *install_args]
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          env=env)


def test_deploys_to_every_host_over_ssh(tmp_path: Path, sshd: dict[str, object]) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# the fleet\n127.0.0.1\n\nlocalhost  # same machine, second name\n")
    root = tmp_path / "target"
    result = deploy(sshd, hosts, install_args=("--root", root, "--user", "root",
                                               "--setup-crontab"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "127.0.0.1: OK" in result.stdout and "localhost: OK" in result.stdout
    installed = root / "opt/datahubsync/datahubsync"
    assert installed.read_bytes() == frozen_binary().read_bytes()
    cron = (root / "etc/cron.d/datahubsync").read_text()
    assert "15 8 * * * root /opt/datahubsync/sync.sh" in cron
    assert "unchanged" in result.stdout  # the second host saw the first one's install
    assert not list(Path("/tmp").glob("datahubsync-deploy.*"))  # remote temp dirs removed


def test_stops_at_the_first_failure_unless_keep_going(tmp_path: Path,
                                                      sshd: dict[str, object]) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("127.0.0.1\nlocalhost\n")
    root = tmp_path / "target"
    bad = ("--root", root, "--user", "root", "--schedule", "not a schedule")
    stopped = deploy(sshd, hosts, install_args=bad)
    assert stopped.returncode == 1
    assert "127.0.0.1: FAILED (install)" in stopped.stdout
    assert "localhost" not in stopped.stdout.split("summary:")[1]
    assert "5 fields" in stopped.stderr or "digits" in stopped.stderr
    going = deploy(sshd, hosts, "--keep-going", install_args=bad)
    assert going.returncode == 1
    assert "localhost: FAILED (install)" in going.stdout
    unreachable = tmp_path / "down.txt"
    unreachable.write_text("127.0.0.2\n")
    down = deploy(sshd, unreachable)
    assert down.returncode == 1 and "FAILED (connect)" in down.stdout


def test_dry_run_touches_no_host(tmp_path: Path, sshd: dict[str, object]) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("127.0.0.1\n")
    result = deploy(sshd, hosts, "--dry-run", install_args=("--root", tmp_path / "t"))
    assert result.returncode == 0
    assert "would deploy to 127.0.0.1" in result.stdout
    assert not (tmp_path / "t").exists()
