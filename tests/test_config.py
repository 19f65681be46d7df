"""Settings precedence: defaults < TOML config file < environment < explicit arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.runtime.support import clean_env
from wasmlet.config import Settings, load_settings


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)  # the default config file is relative to the working dir


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_embedded_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8080, 1)
    assert s.data_dir == Path(".wasmlet")
    assert s.database_url is None
    assert s.default_timeout_ms == 5000
    assert s.default_memory_mb == 64
    assert s.fuel_metering is True


def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "conf" / "wasmlet.toml",
        'port = 9000\ndefault_timeout_ms = 111\nhost = "0.0.0.0"\nfuel_metering = false\n',
    )
    monkeypatch.setenv("WASMLET_CONFIG", str(config))
    from_file = Settings()
    assert from_file.port == 9000
    assert from_file.default_timeout_ms == 111
    assert from_file.host == "0.0.0.0"
    assert from_file.fuel_metering is False
    assert from_file.workers == 1  # not in the file: default

    monkeypatch.setenv("WASMLET_PORT", "9100")
    monkeypatch.setenv("WASMLET_FUEL_METERING", "true")
    from_env = Settings()
    assert from_env.port == 9100  # environment beats the file
    assert from_env.fuel_metering is True
    assert from_env.default_timeout_ms == 111  # the file still applies to the rest

    explicit = Settings(port=9200, default_timeout_ms=222)
    assert explicit.port == 9200  # explicit arguments beat everything
    assert explicit.default_timeout_ms == 222
    assert explicit.host == "0.0.0.0"


def test_config_file_found_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WASMLET_CONFIG")
    data_dir = tmp_path / "data"
    write_config(data_dir / "wasmlet.toml", "port = 9300\n")
    monkeypatch.setenv("WASMLET_DATA_DIR", str(data_dir))
    s = Settings()
    assert s.port == 9300
    assert s.data_dir == data_dir


def test_default_config_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WASMLET_CONFIG")
    write_config(tmp_path / ".wasmlet" / "wasmlet.toml", "workers = 3\n")
    assert Settings().workers == 3


def test_missing_config_file_is_fine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WASMLET_CONFIG", str(tmp_path / "absent.toml"))
    assert Settings().port == 8080


def test_unknown_keys_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", "port = 9400\nnot_a_setting = 1\n")
    monkeypatch.setenv("WASMLET_CONFIG", str(config))
    monkeypatch.setenv("WASMLET_ALSO_UNKNOWN", "x")
    assert Settings().port == 9400


def test_invalid_values_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(workers=0)
    with pytest.raises(ValidationError):
        Settings(inline_fuel=999)
    monkeypatch.setenv("WASMLET_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("WASMLET_PORT")
    config = write_config(tmp_path / "bad.toml", "default_memory_mb = 0\n")
    monkeypatch.setenv("WASMLET_CONFIG", str(config))
    with pytest.raises(ValidationError):
        Settings()


def test_load_settings_drops_unset_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMLET_PORT", "9500")
    s = load_settings(port=None, workers=2, host=None)
    assert s.port == 9500  # a flag the user did not give does not hide the environment
    assert s.workers == 2
    assert load_settings(port=9600).port == 9600


def test_db_url(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    assert s.db_url == f"sqlite:///{(tmp_path / 'd' / 'wasmlet.db').resolve()}"
    pg = "postgresql+psycopg://u@h/db"
    assert Settings(data_dir=tmp_path, database_url=pg).db_url == pg


def test_config_file_in_a_data_dir_given_as_a_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("WASMLET_CONFIG")
    data_dir = tmp_path / "srv"
    write_config(data_dir / "wasmlet.toml", "port = 9700\n")
    s = load_settings(data_dir=data_dir)
    assert s.data_dir == data_dir
    assert s.port == 9700
