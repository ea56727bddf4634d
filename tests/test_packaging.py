"""install_client.sh, sync.sh, test_client.sh, the systemd units and logrotate, for real."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.frozen import frozen_binary
from tests.helpers import ROOT, Hub, client_config, tree_bytes, write_yaml


@pytest.fixture(scope="module")
def binary() -> Path:
    return frozen_binary()


def sh(*argv: str | Path, env: dict[str, str] | None = None,
       user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", user, "--"] if user else []
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUBSYNC_")}
    return subprocess.run(prefix + [str(a) for a in argv], capture_output=True, text=True,
                          timeout=300, env={**full_env, **(env or {})})


def install(root: Path, binary: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return sh(ROOT / "install_client.sh", "--root", root, "--user", "root", "--binary", binary,
              *args)


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return found


@pytest.fixture
def hub(tmp_path: Path, data_root: Path) -> Hub:  # type: ignore[override]
    server = Hub(tmp_path, data_root).start()
    server.wait_ready("alpha")
    yield server
    server.stop()


def client_cfg(tmp_path: Path, url: str) -> Path:
    return client_config(tmp_path, url, ["alpha"])


def test_install_twice_changes_nothing(tmp_path: Path, binary: Path, hub: Hub) -> None:
    root = tmp_path / "root"
    cfg = client_cfg(tmp_path, hub.url)
    first = install(root, binary, "--config", cfg, "--setup-crontab", "--setup-systemd",
                    "--setup-logrotate")
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout and "doctor passed" in first.stdout
    before = snapshot(root)
    second = install(root, binary, "--config", cfg, "--setup-crontab", "--setup-systemd",
                     "--setup-logrotate")
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout and "updated" not in second.stdout
    assert snapshot(root) == before
    etc = root / "etc" / "datahubsync"
    assert stat.S_IMODE((etc / "config.yaml").stat().st_mode) == 0o600
    for directory in (etc, root / "var/lib/datahubsync", root / "var/log/datahubsync"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    cron = (root / "etc/cron.d/datahubsync").read_text()
    assert [ln for ln in cron.splitlines() if "sync.sh" in ln] == [
        "15 8 * * * root /opt/datahubsync/sync.sh"]
    assert (root / "opt/datahubsync/datahubsync").read_bytes() == binary.read_bytes()

    # A new schedule replaces the line; it never adds a second one.
    third = install(root, binary, "--setup-crontab", "--schedule", "30 7 * * 1-5")
    assert third.returncode == 0, third.stderr
    jobs = [ln for ln in (root / "etc/cron.d/datahubsync").read_text().splitlines()
            if "sync.sh" in ln]
    assert jobs == ["30 7 * * 1-5 root /opt/datahubsync/sync.sh"]


def test_dry_run_changes_nothing(tmp_path: Path, binary: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install(root, binary, "--setup-crontab", "--setup-systemd", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would run: install" in result.stdout
    assert list(root.iterdir()) == []


def test_clear_errors_and_nothing_installed(tmp_path: Path, binary: Path) -> None:
    root = tmp_path / "root"
    missing = install(root, tmp_path / "nope")
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = write_yaml(tmp_path / "bad.yaml", {"hub": {"url": "http://x", "tiemout": 3}})
    invalid = install(root, binary, "--config", bad)
    assert invalid.returncode == 2
    assert "hub.tiemout: unknown key" in invalid.stderr
    assert "nothing was installed" in invalid.stderr
    assert not root.exists()
    schedule = install(root, binary, "--setup-crontab", "--schedule", "15 8 * *")
    assert schedule.returncode == 2 and "5 fields" in schedule.stderr
    public = Path(tempfile.mkdtemp(prefix="dhs-install-"))  # pytest's tmp is 0700 root
    try:
        os.chmod(public, 0o755)
        shutil.copy(ROOT / "install_client.sh", public / "install_client.sh")
        not_root = sh(public / "install_client.sh", "--binary", binary, user="nobody")
        assert not_root.returncode == 2 and "run as root" in not_root.stderr
    finally:
        shutil.rmtree(public)


def test_uninstall_keeps_config_unless_purge(tmp_path: Path, binary: Path, hub: Hub) -> None:
    root = tmp_path / "root"
    cfg = client_cfg(tmp_path, hub.url)
    assert install(root, binary, "--config", cfg, "--setup-crontab",
                   "--setup-systemd").returncode == 0
    removed = install(root, binary, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt/datahubsync/datahubsync").exists()
    assert not (root / "etc/cron.d/datahubsync").exists()
    assert not (root / "etc/systemd/system/datahubsync-serve.service").exists()
    assert (root / "etc/datahubsync/config.yaml").exists()
    assert install(root, binary, "--uninstall", "--purge").returncode == 0
    assert not (root / "etc/datahubsync").exists() and not (root / "var/lib/datahubsync").exists()


def test_sync_sh_logs_locks_and_passes_the_exit_code(tmp_path: Path, binary: Path, hub: Hub,
                                                      data_root: Path) -> None:
    root = tmp_path / "root"
    cfg = client_cfg(tmp_path, hub.url)
    assert install(root, binary, "--config", cfg).returncode == 0
    log, lock = tmp_path / "sync.log", tmp_path / "sync.lock"
    env = {"DATAHUBSYNC_CONFIG": str(root / "etc/datahubsync/config.yaml"),
           "DATAHUBSYNC_SYNC_LOG": str(log), "DATAHUBSYNC_SYNC_LOCK": str(lock),
           "PATH": "/nonexistent"}  # sync.sh sets its own
    script = root / "opt/datahubsync/sync.sh"
    ok = sh(script, env=env)
    assert ok.returncode == 0, ok.stderr + log.read_text()
    assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")
    text = log.read_text()
    assert "sync.sh: start:" in text and "installed" in text and "sync.sh: end: exit 0" in text

    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = sh(script, env=env)
    assert busy.returncode == 75 and "still running" in busy.stderr

    hub.stop()
    down = sh(script, env={**env, "DATAHUBSYNC_MAX_TIME": "5"})
    assert down.returncode == 75, down.stderr  # the tool's "hub unreachable" status
    assert "failed with exit 75" in down.stderr
    assert log.read_text().rstrip().endswith("sync.sh: end: exit 75")


def test_test_client_sh_passes_then_fails_on_a_public_config(tmp_path: Path, binary: Path,
                                                            hub: Hub) -> None:
    root = tmp_path / "root"
    cfg = client_cfg(tmp_path, hub.url)
    assert install(root, binary, "--config", cfg, "--setup-crontab").returncode == 0
    script = root / "opt/datahubsync/test_client.sh"
    good = sh(script, "--root", root, "--user", "root")
    assert good.returncode == 0, good.stdout
    assert "FAIL" not in good.stdout
    for check in ("binary", "config", "doctor: hub reachable", "doctor: clock", "schedule"):
        assert f"PASS  {check}" in good.stdout, (check, good.stdout)
    os.chmod(root / "etc/datahubsync/config.yaml", 0o644)
    (root / "etc/cron.d/datahubsync").unlink()
    bad = sh(script, "--root", root, "--user", "root")
    assert bad.returncode == 1
    assert "FAIL  config:" in bad.stdout and "chmod 600" in bad.stdout
    assert "FAIL  schedule" in bad.stdout


def test_systemd_units_verify_without_warnings(tmp_path: Path, binary: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    root = tmp_path / "root"
    cfg = client_cfg(tmp_path, "http://127.0.0.1:9")
    assert install(root, binary, "--config", cfg, "--setup-systemd").returncode == 0
    dropin = root / "etc/systemd/system/datahubsync-sync.service.d/write-paths.conf"
    assert dropin.read_text().startswith("[Service]\nReadWritePaths=")
    assert str(tmp_path / "local") in dropin.read_text().split()[-1]
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = sorted(p for p in (root / "etc/systemd/system").glob("datahubsync-*") if p.is_file())
    assert len(units) == 5
    result = sh(analyze, "verify", f"--root={root}", *units)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    # the check is real: a bad value or a missing binary is reported
    broken = root / "etc/systemd/system/broken.service"
    broken.write_text(units[1].read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier" in sh(analyze, "verify", f"--root={root}", broken).stderr
    (root / "opt/datahubsync/datahubsync").unlink()
    assert "not executable" in sh(analyze, "verify", f"--root={root}", units[0]).stderr


def test_logrotate_config_is_valid(tmp_path: Path, binary: Path) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.skip("logrotate not installed")
    root = tmp_path / "root"
    assert install(root, binary, "--setup-logrotate").returncode == 0
    conf = root / "etc/logrotate.d/datahubsync"
    text = conf.read_text()
    assert "copytruncate" not in text.replace("# logrotate", "").split("{", 1)[1]
    assert "rotate 14" in text and "daily" in text and "compress" in text
    result = sh(logrotate, "-d", "-s", tmp_path / "state", conf)
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr
    conf.write_text(text.replace("rotate 14", "rotate fourteen"))
    assert sh(logrotate, "-d", "-s", tmp_path / "state", conf).returncode != 0


def test_install_with_sync_runs_a_first_sync(tmp_path: Path, binary: Path, hub: Hub,
                                             data_root: Path) -> None:
    root = tmp_path / "root"
    cfg = client_cfg(tmp_path, hub.url)
    result = install(root, binary, "--config", cfg, "--sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")
    log = (root / "var/log/datahubsync/sync.log").read_text()
    assert "sync.sh: end: exit 0" in log
