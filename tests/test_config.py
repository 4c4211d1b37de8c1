"""Settings loading: layers, parsing per type, and error messages an operator can act on."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from papertrader.config import DEFAULT_ASSETS, ConfigError, Settings, load_settings, redact_url


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, /, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=env)
    return info.value


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.assets == DEFAULT_ASSETS
    assert settings.assets_file is None
    assert settings.workers == 1
    assert settings.log_memory_entries == 1000
    assert settings.log_file is None
    assert settings.log_flush_seconds == 5.0
    assert settings.update_interval == 5.0
    assert settings.redis_url is None and settings.database_url is None
    assert (settings.master_host, settings.master_port) == ("127.0.0.1", 2048)
    assert (settings.worker_host, settings.worker_port) == ("127.0.0.1", 2049)
    assert settings.starting_cash == Decimal("100000.00")
    assert settings.starting_cash.as_tuple().exponent == -2
    assert settings.bcrypt_cost == 12
    assert settings.session_ttl_seconds == 3600
    assert settings.session_remember_ttl_seconds == 30 * 86400
    assert settings.session_ip_check is True
    assert settings.min_password_length == 10
    assert settings.max_data_size == 65536
    assert settings.client_idle_timeout == 300.0
    assert settings.market_provider == "sim"
    assert settings.market_seed == 42
    assert settings.state_dir is None


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().workers = 3  # type: ignore[misc]


def test_toml_values(tmp_path: Path) -> None:
    config = write(
        tmp_path / "pt.toml",
        """
assets = ["aapl", "brk.b", "^GSPC"]
workers = 4
log_memory_entries = 50
log_file = "logs/master.log"
update_interval = 1
redis_url = "redis://localhost:6380/0"
database_url = "postgresql://pt@localhost/pt"
master_port = 3000
starting_cash = 2500
session_ip_check = false
market_seed = -7
state_dir = "/var/lib/pt"
""",
    )
    settings = load_settings(config, environ={})
    assert settings.assets == ("AAPL", "BRK.B", "^GSPC")
    assert settings.workers == 4
    assert settings.log_memory_entries == 50
    assert settings.log_file == tmp_path / "logs" / "master.log"  # relative to the file
    assert settings.update_interval == 1.0 and isinstance(settings.update_interval, float)
    assert settings.redis_url == "redis://localhost:6380/0"
    assert settings.database_url == "postgresql://pt@localhost/pt"
    assert settings.master_port == 3000
    assert settings.starting_cash == Decimal(2500)  # a TOML integer is exact
    assert settings.session_ip_check is False
    assert settings.market_seed == -7
    assert settings.state_dir == Path("/var/lib/pt")


def test_env_wins_over_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "pt.toml", 'workers = 4\nmaster_host = "10.0.0.1"\nbcrypt_cost = 10\n'
    )
    env = {
        "PT_WORKERS": "8",
        "PT_SESSION_IP_CHECK": "off",
        "PT_UPDATE_INTERVAL": "0.5",
        "PT_STARTING_CASH": "123.45",
        "PT_ASSETS": "spy, qqq,",
        "PT_STATE_DIR": "/srv/pt",
        "PT_UNRELATED_TOOL": "ignored",
    }
    settings = load_settings(config, environ=env)
    assert settings.workers == 8
    assert settings.master_host == "10.0.0.1"  # file value kept where env is silent
    assert settings.bcrypt_cost == 10
    assert settings.session_ip_check is False
    assert settings.update_interval == 0.5
    assert settings.starting_cash == Decimal("123.45")
    assert settings.assets == ("SPY", "QQQ")
    assert settings.state_dir == Path("/srv/pt")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("on", True)]
    + [("false", False), ("0", False), ("no", False), ("Off", False)],
)
def test_env_bools(text: str, expected: bool) -> None:
    assert load_settings(environ={"PT_SESSION_IP_CHECK": text}).session_ip_check is expected


def test_empty_env_unsets_optional_value(tmp_path: Path) -> None:
    config = write(tmp_path / "pt.toml", 'redis_url = "redis://h:1/0"\n')
    assert load_settings(config, environ={"PT_REDIS_URL": ""}).redis_url is None


def test_config_path_from_pt_config(tmp_path: Path) -> None:
    config = write(tmp_path / "pt.toml", "workers = 3\n")
    assert load_settings(environ={"PT_CONFIG": str(config)}).workers == 3


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    error = config_error(tmp_path / "nope.toml")
    assert "nope.toml" in str(error) and "does not exist" in str(error)


def test_invalid_toml(tmp_path: Path) -> None:
    error = config_error(write(tmp_path / "bad.toml", "workers = = 3\n"))
    assert "bad.toml" in str(error) and "not valid TOML" in str(error)


def test_assets_inline_vs_file(tmp_path: Path) -> None:
    write(
        tmp_path / "assets.txt",
        "# symbols the master retrieves\n\naapl\n  msft   # trailing comment\n\n# done\nspy\n",
    )
    config = write(tmp_path / "pt.toml", 'assets_file = "assets.txt"\n')
    from_file = load_settings(config, environ={})
    assert from_file.assets == ("AAPL", "MSFT", "SPY")
    assert from_file.assets_file == tmp_path / "assets.txt"

    inline_config = write(tmp_path / "inline.toml", 'assets = ["aapl", "msft", "spy"]\n')
    inline = load_settings(inline_config, environ={})
    assert inline.assets == from_file.assets
    assert inline.assets_file is None

    # Each layer replaces the other spelling given by a lower layer.
    env_list = load_settings(config, environ={"PT_ASSETS": "TSLA"})
    assert env_list.assets == ("TSLA",) and env_list.assets_file is None
    env_file = load_settings(
        inline_config, environ={"PT_ASSETS_FILE": str(tmp_path / "assets.txt")}
    )
    assert env_file.assets == ("AAPL", "MSFT", "SPY")


def test_assets_and_assets_file_in_one_layer(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "AAPL\n")
    error = config_error(write(tmp_path / "pt.toml", 'assets = ["X"]\nassets_file = "a.txt"\n'))
    assert error.setting == "assets_file"


def test_missing_assets_file_names_setting_and_path(tmp_path: Path) -> None:
    # Longer than a value's 80 shown characters: a path is shown whole, so it can be found.
    missing = tmp_path / ("a-deeply-nested-folder-" * 4) / "gone.txt"
    error = config_error(PT_ASSETS_FILE=str(missing))
    assert error.setting == "assets_file"
    assert "PT_ASSETS_FILE" in str(error) and str(missing) in str(error)


def test_bad_symbol_in_assets_file_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "AAPL\n# fine\nBAD$\n")
    error = config_error(PT_ASSETS_FILE=str(path))
    assert error.setting == "assets_file"
    assert f"{path}, line 3" in str(error) and '"BAD$"' in str(error)


def test_assets_file_without_symbols(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "# nothing\n\n")
    assert "lists no symbols" in str(config_error(PT_ASSETS_FILE=str(path)))


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("PT_UPDATE_INTERVAL", "abc", '"abc" is not a number'),
        ("PT_UPDATE_INTERVAL", "0.01", "out of range"),
        ("PT_UPDATE_INTERVAL", "86401", "out of range"),
        ("PT_UPDATE_INTERVAL", "nan", "not a finite number"),
        ("PT_WORKERS", "0", "out of range"),
        ("PT_WORKERS", "2.5", "not a whole number"),
        ("PT_LOG_MEMORY_ENTRIES", "0", "out of range"),
        ("PT_LOG_FLUSH_SECONDS", "0", "out of range"),
        ("PT_CLIENT_IDLE_TIMEOUT", "-1", "out of range"),
        ("PT_MASTER_PORT", "0", "out of range"),
        ("PT_WORKER_PORT", "65536", "out of range"),
        ("PT_MASTER_HOST", "bad host", "not usable"),
        ("PT_BCRYPT_COST", "3", "out of range"),
        ("PT_BCRYPT_COST", "32", "out of range"),
        ("PT_SESSION_TTL_SECONDS", "0", "out of range"),
        ("PT_SESSION_REMEMBER_TTL_SECONDS", "0", "out of range"),
        ("PT_SESSION_IP_CHECK", "maybe", "not true or false"),
        ("PT_MIN_PASSWORD_LENGTH", "0", "out of range"),
        ("PT_MAX_DATA_SIZE", "1023", "out of range"),
        ("PT_MAX_DATA_SIZE", str(16 * 1024 * 1024 + 1), "out of range"),
        ("PT_MARKET_PROVIDER", "ftp", "not a known choice"),
        ("PT_MARKET_SEED", "seed", "not a whole number"),
        ("PT_STARTING_CASH", "-1", "out of range"),
        ("PT_STARTING_CASH", "1.234", "more than 2 decimal places"),
        ("PT_STARTING_CASH", "lots", "not a decimal number"),
        ("PT_STARTING_CASH", "Infinity", "not a finite amount"),
        ("PT_ASSETS", "AAPL,aapl", "listed twice"),
        ("PT_ASSETS", "AAPL,TOOLONGSYMBOL1", "not a valid symbol"),
        ("PT_ASSETS", "A B", "not a valid symbol"),
        ("PT_ASSETS", ",", "lists no symbols"),
        ("PT_REDIS_URL", "http://localhost:6379", "does not start with"),
        ("PT_DATABASE_URL", "mysql://localhost/pt", "does not start with"),
    ],
)
def test_invalid_env_value_names_setting_source_and_rule(
    var: str, value: str, fragment: str
) -> None:
    error = config_error(**{var: value})
    name = var.removeprefix("PT_").lower()
    message = str(error)
    assert message.startswith(f"{name} (from {var}): ")
    assert fragment in message
    assert "; allowed: " in message
    assert (error.setting, error.source) == (name, var)


def test_error_message_example() -> None:
    assert str(config_error(PT_UPDATE_INTERVAL="abc")) == (
        'update_interval (from PT_UPDATE_INTERVAL): "abc" is not a number; '
        "allowed: seconds between 0.05 and 86400"
    )


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('workers = "four"', '"four" is not a whole number'),
        ("workers = true", "True is not a whole number"),
        ("workers = 2.0", "2.0 is not a whole number"),
        ('update_interval = "5"', '"5" is not a number'),
        ('session_ip_check = "yes"', '"yes" is not true or false'),
        ("master_host = 1", "1 is not a string"),
        ("assets = 5", "5 is not a list of symbols"),
        ("assets = []", "lists no symbols"),
        ("assets = [1]", "1 is not a symbol string"),
        ("log_file = 3", "3 is not a usable path"),
        ("update_interval = inf", "not a finite number"),
    ],
)
def test_invalid_toml_value_names_file(tmp_path: Path, line: str, fragment: str) -> None:
    config = write(tmp_path / "pt.toml", line + "\n")
    error = config_error(config)
    name = line.split(" =")[0]
    assert str(error).startswith(f"{name} (from {config}): ")
    assert fragment in str(error)
    assert error.source == str(config)


def test_float_starting_cash_is_rejected_with_quote_hint(tmp_path: Path) -> None:
    error = config_error(write(tmp_path / "pt.toml", "starting_cash = 100000.00\n"))
    assert error.setting == "starting_cash"
    assert "quote it" in str(error)
    assert 'starting_cash = "100000.00"' in str(error)


@pytest.mark.parametrize("text", ["100000.00", "0.10", "5", "0", "12.5"])
def test_string_starting_cash_is_exact(tmp_path: Path, text: str) -> None:
    from_file = load_settings(write(tmp_path / "pt.toml", f'starting_cash = "{text}"\n'), {})
    from_env = load_settings(environ={"PT_STARTING_CASH": text})
    for cash in (from_file.starting_cash, from_env.starting_cash):
        assert isinstance(cash, Decimal)
        assert cash == Decimal(text)
        assert cash.as_tuple() == Decimal(text).as_tuple()  # same digits and exponent


def test_direct_float_starting_cash_rejected() -> None:
    with pytest.raises(ConfigError, match="quote it"):
        Settings(starting_cash=0.1)  # type: ignore[arg-type]


def test_unknown_key_suggests_close_matches(tmp_path: Path) -> None:
    config = write(tmp_path / "pt.toml", "update_intervall = 3\n")
    error = config_error(config)
    assert error.setting == "update_intervall"
    assert '"update_intervall"' in str(error) and str(config) in str(error)
    assert "did you mean update_interval?" in str(error)


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    error = config_error(write(tmp_path / "pt.toml", "zzz = 1\n"))
    assert '"zzz"' in str(error) and "did you mean" not in str(error)


def test_table_is_unknown_key(tmp_path: Path) -> None:
    error = config_error(write(tmp_path / "pt.toml", "[master]\nport = 1\n"))
    assert "flat keys" in str(error) and "master_port" in str(error)


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:s3cretPW@db.example:5432/pt",
        "mysql://admin:s3cretPW@db.example/pt?sslmode=require",
        "http://admin@db.example/pt?password=s3cretPW",
        "s3cretPW",
        "://:s3cretPW@",
        "http://admin:s3cretPW@[::1:5432/pt",
    ],
)
def test_url_password_never_in_error(tmp_path: Path, url: str) -> None:
    errors = [
        config_error(PT_DATABASE_URL=url),
        config_error(PT_REDIS_URL=url),
        config_error(write(tmp_path / "pt.toml", f'database_url = "{url}"\n')),
    ]
    with pytest.raises(ConfigError) as info:
        Settings().with_overrides(redis_url=url)
    errors.append(info.value)
    for error in errors:
        assert "s3cretPW" not in str(error)
        assert error.setting in ("database_url", "redis_url")
        assert "allowed: " in str(error)


def test_non_string_url_is_hidden(tmp_path: Path) -> None:
    error = config_error(write(tmp_path / "pt.toml", "redis_url = 12345\n"))
    assert "12345" not in str(error) and "the value (hidden)" in str(error)


def test_url_with_password_shown_masked() -> None:
    error = config_error(PT_REDIS_URL="http://admin:s3cretPW@cache:6379/0")
    assert '"http://admin:***@cache:6379/0"' in str(error)
    assert redact_url("redis://:pw@h:1/2?password=x") == "redis://:***@h:1/2?***"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_repr_masks_urls() -> None:
    settings = Settings(redis_url="redis://u:s3cretPW@h:6379/0")
    assert "s3cretPW" not in repr(settings)
    assert "redis://u:***@h:6379/0" in repr(settings)


def test_with_overrides() -> None:
    base = load_settings(environ={"PT_WORKERS": "3"})
    changed = base.with_overrides(master_port=4000, starting_cash=Decimal("1.50"))
    assert changed.master_port == 4000 and changed.workers == 3
    assert changed.starting_cash == Decimal("1.50")
    assert base.master_port == 2048  # the original is untouched
    assert base.with_overrides(assets=["x", "y"]).assets == ("X", "Y")


def test_with_overrides_validates() -> None:
    with pytest.raises(ConfigError) as info:
        Settings().with_overrides(master_port=70000)
    assert str(info.value).startswith("master_port (from override): 70000 is out of range")
    with pytest.raises(ConfigError, match="did you mean master_port"):
        Settings().with_overrides(master_prot=1)


def test_with_overrides_assets_replace_assets_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "AAPL\nMSFT\n")
    from_file = Settings().with_overrides(assets_file=path)
    assert from_file.assets == ("AAPL", "MSFT")
    inline = from_file.with_overrides(assets=("SPY",))
    assert inline.assets == ("SPY",) and inline.assets_file is None


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_a_default_config_file_is_found_in_the_working_directory_then_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papertrader.config.environment import find_config_file, user_config_file

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    here = tmp_path / "project"
    here.mkdir()
    assert find_config_file(here) is None
    users = user_config_file()
    users.parent.mkdir(parents=True)
    users.write_text("update_interval = 3\n")
    assert find_config_file(here) == users.resolve()
    (here / "papertrader.toml").write_text("update_interval = 2\n")
    assert find_config_file(here) == (here / "papertrader.toml").resolve()


def test_a_misspelled_variable_is_reported_with_the_setting_meant() -> None:
    from papertrader.config.environment import unknown_variables

    warnings = unknown_variables(
        {"PT_UPDATE_INTERVALL": "2", "PT_UPDATE_INTERVAL": "2", "PT_WORKER": "x:1",
         "PT_TEST_REDIS_URL": "redis://", "PT_SOMETHING_ELSE": "1", "HOME": "/root"}
    )  # fmt: skip
    assert warnings == [
        "PT_SOMETHING_ELSE is not a PaperTrader setting and is ignored (see the settings in "
        "the README)",
        "PT_UPDATE_INTERVALL is not a PaperTrader setting and is ignored; did you mean "
        "PT_UPDATE_INTERVAL?",
    ]
