"""Config loading: routes, precedence, and errors that name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batchyard.toml"
    path.write_text(text)
    return path


def test_routes_match_exact_names_before_patterns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[models]]
id = "*"
backend = "simulator"

[[models]]
id = "claude-*"
backend = "simulator"
latency_ms = 5

[[models]]
id = "claude-exact"
backend = "simulator"
latency_ms = [1, 2]
""",
    )
    settings = load_settings(config_path=path, environ={})
    assert settings.route_for("claude-exact").id == "claude-exact"
    assert settings.route_for("claude-exact").options["latency_ms"] == (1, 2)
    assert settings.route_for("claude-other").id == "*"  # first pattern in file order wins
    assert settings.route_for("anything").id == "*"


def test_no_catch_all_means_unknown_models(tmp_path: Path) -> None:
    path = write(tmp_path, '[[models]]\nid = "only"\nbackend = "simulator"\n')
    settings = load_settings(config_path=path, environ={})
    assert settings.route_for("only") is not None
    assert settings.route_for("other") is None


def test_default_is_simulator_for_everything() -> None:
    settings = load_settings(environ={})
    assert settings.route_for("claude-whatever").backend == "simulator"
    assert settings.database_url == "sqlite:///batchyard.db"
    assert settings.host == "127.0.0.1" and settings.port == 8000


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'public_url = "http://file"\ndatabase_url = "sqlite:///file.db"\n')
    env = {"BATCHYARD_CONFIG": str(path), "BATCHYARD_PUBLIC_URL": "http://env/", "BATCHYARD_DATABASE_URL": "sqlite:///env.db"}
    from_env = load_settings(environ=env)
    assert from_env.public_url == "http://env" and from_env.database_url == "sqlite:///env.db"
    from_flags = load_settings(environ=env, public_url="http://flag", database_url="sqlite:///flag.db")
    assert from_flags.public_url == "http://flag" and from_flags.database_url == "sqlite:///flag.db"
    only_file = load_settings(environ={"BATCHYARD_CONFIG": str(path)})
    assert only_file.public_url == "http://file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('bogus = 1\n', ":1: bogus: unknown key"),
        ('[batches]\nttl = 5\nmax_reqs = 3\n', ":3: [batches].max_reqs: unknown key"),
        ('[engine]\nconcurrency = "many"\n', ":2: [engine].concurrency: Input should be a valid integer"),
        (
            '[[models]]\nid = "a"\nbackend = "simulator"\n\n[[models]]\nid = "b"\nbackend = "nope"\n',
            ":7: models[1].backend: unknown backend 'nope' (known: anthropic, llamacpp, openai, simulator)",
        ),
        (
            '[[models]]\nid = "a"\nbackend = "simulator"\nlatncy_ms = 5\n',
            ":4: models[0].latncy_ms: unknown option for backend 'simulator'",
        ),
        ('[[models]]\nid = "a"\nbackend = "simulator"\nerror_rate = 2\n', ":4: models[0].error_rate: Input should be less"),
        ('[[models]]\nid = "a"\n', ":1: models[0].backend: required key is missing"),
        ('[[models]]\nid = "a"\nbackend = "simulator"\nmax_tokens = 0\n', ":4: models[0].max_tokens: must be a positive integer"),
    ],
)
def test_config_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config_path=path, environ={})
    assert str(err.value).startswith(f"{path}{expected}"), str(err.value)


def test_unparseable_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[[models]]\nid = "a"\nbackend = simulator\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config_path=path, environ={})
    message = str(err.value)
    assert message.startswith(f"{path}: not valid TOML: ") and "line 3" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(config_path=tmp_path / "absent.toml", environ={})
