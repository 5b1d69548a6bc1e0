"""Host file locations: DOCKYARD_HOME relocation, private runtime dirs, platformdirs defaults."""

from __future__ import annotations

import os
import stat

from desktop import paths


def test_dockyard_home_relocates_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path))
    assert paths.config_dir() == tmp_path / "config"
    assert paths.data_dir() == tmp_path / "data"
    assert paths.machine_config_path("m") == tmp_path / "config" / "machines" / "m.json"
    run = paths.machine_runtime_dir("m")
    assert run == tmp_path / "run" / "m"
    for d in (run, run.parent):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert len(str(run / "docker.sock")) < paths.MAX_SOCKET_PATH
    # Every other location too: guest images, keys, logs, sockets, the settings file.
    assert paths.image_cache_dir() == tmp_path / "data" / "images"
    assert paths.settings_file() == tmp_path / "config" / "settings.toml"
    files = paths.MachinePaths.of("m")
    assert files.key == tmp_path / "data" / "machines" / "m" / "id_ed25519"
    assert files.console_log.parent == files.supervisor_log.parent == tmp_path / "data" / "machines" / "m"
    assert files.host_socket == run / "docker.sock"
    assert files.config == paths.machine_config_path("m")


def test_platformdirs_defaults(monkeypatch):
    monkeypatch.delenv("DOCKYARD_HOME", raising=False)
    monkeypatch.delenv("DOCKYARD_IMAGE_CACHE", raising=False)
    import platformdirs

    assert paths.config_dir() == platformdirs.user_config_path("dockyard")
    assert paths.data_dir() == platformdirs.user_data_path("dockyard")
    assert paths.image_cache_dir() == platformdirs.user_data_path("dockyard") / "images"


def test_runtime_dir_falls_back_when_the_platform_dir_is_unusable(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKYARD_HOME", raising=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_runtime_dir", lambda _app: str(blocker / "dockyard"))
    monkeypatch.setattr(paths.tempfile, "gettempdir", lambda: str(tmp_path))
    run = paths.runtime_dir()
    assert run == tmp_path / f"dockyard-{os.getuid()}"
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700


def test_runtime_dir_without_a_login_session_is_private_and_quiet(tmp_path, monkeypatch, recwarn):
    # CI and `sudo` shells have no XDG_RUNTIME_DIR: no platformdirs warning, a 0700 dir.
    monkeypatch.delenv("DOCKYARD_HOME", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(paths.tempfile, "gettempdir", lambda: str(tmp_path))
    run = paths.runtime_dir()
    assert not [w for w in recwarn if "XDG_RUNTIME_DIR" in str(w.message)]
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
    if not os.path.isdir(f"/run/user/{os.getuid()}"):
        assert run == tmp_path / f"dockyard-{os.getuid()}"
