"""Host settings: environment over settings.toml over defaults, one-line errors, the README's table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import paths, settings
from desktop.settings import SETTINGS, SettingsError

REPO = Path(__file__).resolve().parents[2]
# Host-side code; vmimage/guest_init runs in the guest and has its own variables.
HOST_CODE = [p for p in (*(REPO / "desktop").rglob("*.py"), *(REPO / "vmimage").glob("*.py"))
             if "__pycache__" not in p.parts]


@pytest.fixture
def home(tmp_path, monkeypatch):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_settings(home: Path, text: str) -> Path:
    path = home / "config" / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment(home):
    current = settings.load()
    assert (current.accel, current.ready_timeout, current.boot_stall) == (None, 180.0, 60.0)
    assert current.image_cache is None and current.guest_image is None
    assert current.home == home.resolve()
    assert current.source("ready_timeout") == "default"


def test_file_over_default_and_environment_over_file(home, monkeypatch, tmp_path):
    path = write_settings(home, 'ready_timeout = 300\nboot_stall = 12.5\naccel = "TCG"\n'
                                f'image_cache = "{tmp_path / "cache"}"\n')
    current = settings.load()
    assert (current.ready_timeout, current.boot_stall, current.accel) == (300.0, 12.5, "tcg")
    assert current.image_cache == tmp_path / "cache"
    assert current.source("ready_timeout") == f"{path}: ready_timeout"
    monkeypatch.setenv("DOCKYARD_READY_TIMEOUT", "30")
    monkeypatch.setenv("DOCKYARD_ACCEL", "kvm")
    current = settings.load()
    assert (current.ready_timeout, current.boot_stall, current.accel) == (30.0, 12.5, "kvm")
    assert current.source("ready_timeout") == "DOCKYARD_READY_TIMEOUT"


@pytest.mark.parametrize("variable,value,expected", [
    ("DOCKYARD_READY_TIMEOUT", "soon", "expected a number of seconds greater than 0"),
    ("DOCKYARD_BOOT_STALL", "-1", "expected a number of seconds greater than 0"),
    ("DOCKYARD_ACCEL", "warp", "expected one of kvm, hvf, whpx, tcg"),
    ("DOCKYARD_SAVE_ON_STOP", "maybe", "expected true or false"),
])
def test_a_bad_environment_value_names_the_variable(home, monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        settings.load()
    assert str(err.value) == f"{variable}: {value!r} is not valid: {expected}"


@pytest.mark.parametrize("text,message", [
    ("ready_timeout = \"long\"\n", "{path}: ready_timeout: 'long' is not valid: expected a number of seconds"),
    ("boot_stall = true\n", "{path}: boot_stall: True is not valid: expected a number of seconds"),
    ("accel = 3\n", "{path}: accel: 3 is not valid: expected one of kvm"),
    ("ready_timout = 5\n", "{path}: unknown key 'ready_timout' (known: accel, boot_stall,"),
    ("home = \"/x\"\n", "{path}: unknown key 'home'"),
    ("ready_timeout = \n", "{path}: not valid TOML ("),
])
def test_a_bad_file_value_names_the_file_and_key(home, text, message):
    path = write_settings(home, text)
    with pytest.raises(SettingsError) as err:
        settings.load()
    assert str(err.value).startswith(message.format(path=path)), err.value
    assert "\n" not in str(err.value)


def test_the_cli_reports_a_bad_setting_in_one_line(home, monkeypatch):
    write_settings(home, "boot_stall = 0\n")
    proc = subprocess.run([sys.executable, "-m", "desktop.cli", "machine", "start", "--name", "x"],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"dockyard: {home / 'config' / 'settings.toml'}: boot_stall: 0 is not valid: "
        "expected a number of seconds greater than 0"]


def test_dockyard_home_relocates_the_settings_file_and_the_image_cache(home, monkeypatch, tmp_path):
    assert paths.settings_file() == home.resolve() / "config" / "settings.toml"
    assert paths.image_cache_dir() == home.resolve() / "data" / "images"
    from vmimage.guest_image import default_cache_dir

    assert default_cache_dir() == home.resolve() / "data" / "images"
    monkeypatch.setenv("DOCKYARD_IMAGE_CACHE", str(tmp_path / "shared-cache"))
    assert default_cache_dir() == tmp_path / "shared-cache"


def test_the_platform_settings_file_without_dockyard_home(monkeypatch):
    monkeypatch.delenv("DOCKYARD_HOME", raising=False)
    import platformdirs

    assert paths.settings_file() == platformdirs.user_config_path("dockyard") / "settings.toml"


def _readme_settings_rows() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`DOCKYARD_"):
            key = cells[1].strip("`") if cells[1].startswith("`") else ""
            rows.append((cells[0].strip("`"), key))
    return rows


def test_the_readme_documents_exactly_the_settings_of_the_module():
    documented = sorted(_readme_settings_rows())
    defined = sorted((s.env, s.key if s.in_file else "") for s in SETTINGS)
    assert documented == defined


def test_host_code_reads_dockyard_variables_only_through_the_settings_module():
    direct = re.compile(r"""(os\.environ(\.get)?|os\.getenv)\s*[\[(]\s*["']DOCKYARD_""")
    declared = {s.env for s in SETTINGS}
    for path in HOST_CODE:
        source = path.read_text()
        if path.name != "settings.py" or path.parent.name != "desktop":
            assert not direct.search(source), f"{path.relative_to(REPO)} reads a DOCKYARD_ variable itself"
        for name in re.findall(r"""["'`](DOCKYARD_[A-Z_]+)\b""", source):
            assert name in declared, f"{path.relative_to(REPO)} names {name}, which desktop/settings.py lacks"


def test_the_settings_fields_are_the_table_s_keys_with_its_defaults():
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(settings.Settings) if f.name != "sources"}
    assert fields == {s.key: s.default for s in SETTINGS}


def test_saved_settings_are_read_back_by_the_cli(home):
    share = home.parent / "src"
    share.mkdir()
    path = settings.save({"cpus": 3, "memory": "3G", "shared_folders": [str(share)]})
    assert "cpus = 3\n" in path.read_text()
    settings.save({"cpus": None, "disk": "30G"})       # None removes a key, the others stay
    env = dict(os.environ, DOCKYARD_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "desktop.cli", "settings", "--json"], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    import json

    shown = json.loads(proc.stdout)["settings"]
    assert shown["cpus"]["source"] == "default"
    assert (shown["memory"]["value"], shown["disk"]["value"]) == (3072, 30720)
    assert shown["shared_folders"]["value"] == [str(share)]
    assert shown["memory"]["source"] == f"{path}: memory"


def test_saving_a_bad_value_is_refused_and_leaves_the_file_alone(home):
    path = settings.save({"cpus": 2})
    with pytest.raises(SettingsError, match="memory"):
        settings.save({"memory": "lots"})
    with pytest.raises(SettingsError, match="unknown key"):
        settings.save({"colour": "blue"})
    assert path.read_text().endswith("cpus = 2\n")


def test_a_machine_takes_the_settings_at_its_next_start(tmp_path):
    from desktop.machine.config import MachineConfig, shares_for, with_settings

    config = MachineConfig(cpus=2, memory_mib=2048, shares=shares_for([tmp_path]))
    assert with_settings(config, None, None, None) == config
    changed = with_settings(config, 4, 4096, ())
    assert (changed.cpus, changed.memory_mib, changed.shares) == (4, 4096, [])


@pytest.mark.parametrize("raw,expected", [("false", False), ("0", False), ("off", False), ("yes", True), ("1", True)])
def test_save_on_stop_reads_the_usual_booleans_from_the_environment(home, monkeypatch, raw, expected):
    assert settings.load().save_on_stop is True
    monkeypatch.setenv("DOCKYARD_SAVE_ON_STOP", raw)
    assert settings.load().save_on_stop is expected
