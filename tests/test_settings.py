"""Settings: flags > environment > TOML file > defaults, strict parsing, names, secrets."""

from __future__ import annotations

import json
import logging
import tomllib

import pytest
from pydantic import SecretStr

from fraudstream.cli import build_parser
from fraudstream.errors import ConfigError
from fraudstream.kafka import KafkaSettings
from fraudstream.settings import RESERVED_ENV, Source, resolve, settings_of

PASSWORD = "s3cr3t-not-to-be-seen"


def _resolve(argv: list[str], env: dict[str, str] | None = None):
    return resolve(build_parser().parse_args(argv), environ=env or {})


def _toml(tmp_path, text: str) -> str:
    path = tmp_path / "fraudstream.toml"
    path.write_text(text)
    return str(path)


def test_precedence_flag_env_file_default_and_where_each_came_from(tmp_path):
    config = _toml(
        tmp_path,
        "batch_size = 10\nidle_grace_ms = 11\nfetch_wait_ms = 12\n"
        "[kafka]\nbootstrap_servers = 'file:9092'\n",
    )
    env = {
        "FRAUDSTREAM_BATCH_SIZE": "20",
        "FRAUDSTREAM_IDLE_GRACE_MS": "21",
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": "env:9092",
        "FRAUDSTREAM_CONFIG": config,
    }
    s = _resolve(["run", "--batch-size", "30"], env)
    assert (s["batch_size"], s["idle_grace_ms"], s["fetch_wait_ms"]) == (30, 21, 12)
    assert s["epoch_interval"] == 2.0
    assert s["kafka_bootstrap_servers"] == "env:9092"
    assert str(s.origins["batch_size"]) == "flag --batch-size"
    assert str(s.origins["idle_grace_ms"]) == "env FRAUDSTREAM_IDLE_GRACE_MS"
    assert str(s.origins["fetch_wait_ms"]) == f"file {config}: fetch_wait_ms"
    assert s.origins["epoch_interval"].source is Source.DEFAULT
    # --config names the file too, and wins over FRAUDSTREAM_CONFIG
    other = tmp_path / "other.toml"
    other.write_text("fetch_wait_ms = 13\n")
    assert _resolve(["run", "--config", str(other)], env)["fetch_wait_ms"] == 13


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("false", False),
        ("0", False),
        ("no", False),
        ("False", False),
        ("off", False),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("TRUE", True),
    ],
)
def test_booleans_from_the_environment_mean_what_they_say(raw, expected):
    assert _resolve(["run"], {"FRAUDSTREAM_NO_TAIL": raw})["no_tail"] is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "nein"])
def test_a_garbage_boolean_is_one_clear_error(raw):
    with pytest.raises(ConfigError) as info:
        _resolve(["run"], {"FRAUDSTREAM_NO_TAIL": raw})
    message = str(info.value)
    assert f"FRAUDSTREAM_NO_TAIL={raw!r}" in message and "boolean" in message
    assert "\n" not in message


def test_numbers_are_checked_with_their_bounds_from_every_source(tmp_path):
    with pytest.raises(ConfigError, match=r"FRAUDSTREAM_BATCH_SIZE='lots': .*integer"):
        _resolve(["run"], {"FRAUDSTREAM_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match=r"FRAUDSTREAM_PROCESSES='0': .*greater than or equal"):
        _resolve(["run"], {"FRAUDSTREAM_PROCESSES": "0"})
    config = _toml(tmp_path, "[run]\nmetrics_port = 70000\n")
    with pytest.raises(ConfigError, match=r"\[run\] metrics_port=70000: .*less than or equal"):
        _resolve(["run", "--config", config])
    with pytest.raises(SystemExit):  # a flag: argparse's own one-line usage error
        _resolve(["run", "--processes", "0"])


def test_an_empty_variable_is_unset():
    s = _resolve(["run"], {"FRAUDSTREAM_BATCH_SIZE": "", "FRAUDSTREAM_KAFKA_SSL_CAFILE": " "})
    assert s["batch_size"] == 1000 and s.origins["batch_size"].source is Source.DEFAULT
    assert s["kafka_ssl_cafile"] is None


def test_partitions_have_one_name_per_meaning(caplog):
    run = _resolve(
        ["run"], {"FRAUDSTREAM_STATE_PARTITIONS": "8", "FRAUDSTREAM_TOPIC_PARTITIONS": "3"}
    )
    assert run["state_partitions"] == 8
    sim = _resolve(
        ["simulate"], {"FRAUDSTREAM_STATE_PARTITIONS": "8", "FRAUDSTREAM_TOPIC_PARTITIONS": "3"}
    )
    assert sim["topic_partitions"] == 3
    # the old name keeps its old meaning in each command, with a warning; the new name wins
    caplog.set_level(logging.WARNING, logger="fraudstream.settings")
    assert _resolve(["run"], {"FRAUDSTREAM_PARTITIONS": "6"})["state_partitions"] == 6
    assert _resolve(["simulate"], {"FRAUDSTREAM_PARTITIONS": "2"})["topic_partitions"] == 2
    assert "FRAUDSTREAM_PARTITIONS is deprecated: use FRAUDSTREAM_STATE_PARTITIONS" in caplog.text
    both = {"FRAUDSTREAM_PARTITIONS": "6", "FRAUDSTREAM_STATE_PARTITIONS": "8"}
    assert _resolve(["run"], both)["state_partitions"] == 8
    assert _resolve(["run", "--partitions", "5"])["state_partitions"] == 5
    assert _resolve(["simulate", "--partitions", "5"])["topic_partitions"] == 5


def test_file_tables_scope_settings_to_a_command(tmp_path):
    config = _toml(
        tmp_path,
        """
registry = "shared"
days = 9
[run]
registry = "for-run"
[simulate]
days = 3
[model.promote]
max_fpr = 0.05
[kafka]
bootstrap_servers = "k:9092"
security_protocol = "plaintext"
""",
    )
    assert _resolve(["run", "--config", config])["registry"] == "for-run"
    assert (
        _resolve(["train", "--config", config, "--transactions", "t", "--labels", "l"])["registry"]
        == "shared"
    )
    assert _resolve(["simulate", "--config", config])["days"] == 3
    retrain = _resolve(["retrain", "--config", config, "--transactions", "t", "--labels", "l"])
    assert retrain["days"] == 9.0  # the top level applies to every command that has the key
    promote = _resolve(["model", "promote", "v1", "--to", "canary", "--config", config])
    assert promote["max_fpr"] == 0.05
    assert str(promote.origins["max_fpr"]) == f"file {config}: [model.promote] max_fpr"
    assert promote.kafka() == KafkaSettings(bootstrap_servers="k:9092")
    # a command without a Kafka connection skips the [kafka] table
    assert "kafka_bootstrap_servers" not in _resolve(["model", "list", "--config", config]).values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_sise = 3\n", "unknown setting 'batch_sise'"),
        ("[run]\nseed = 3\n", r"\[run\] 'seed' is not a setting of this command"),
        ("[kafka]\nbootstrap = 'x'\n", r"unknown setting \[kafka\] 'bootstrap'"),
        ("force = true\n", "unknown setting 'force'"),  # a flag-only option
        ("batch_size = [\n", "config file"),
    ],
)
def test_file_mistakes_are_errors_not_ignored(tmp_path, text, message):
    config = _toml(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        _resolve(["run", "--config", config])


def test_a_key_of_another_command_is_not_an_error_but_a_missing_file_is(tmp_path):
    config = _toml(tmp_path, "seed = 7\ncustomers = 10\n")  # simulate's, at the top level
    assert _resolve(["run", "--config", config])["batch_size"] == 1000
    with pytest.raises(ConfigError, match="No such file"):
        _resolve(["run", "--config", str(tmp_path / "missing.toml")])


def test_older_file_forms_still_read(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="fraudstream.settings")
    config = _toml(tmp_path, "[fraudstream]\nbootstrap_servers = 'old:9092'\npartitions = 4\n")
    s = _resolve(["run", "--config", config])
    assert (s["kafka_bootstrap_servers"], s["state_partitions"]) == ("old:9092", 4)
    assert "use [kafka] bootstrap_servers" in caplog.text
    assert "partitions is deprecated: use state_partitions" in caplog.text


def test_a_required_option_may_come_from_the_file_and_its_absence_names_every_way(tmp_path):
    config = _toml(
        tmp_path, "[replay.archive]\nfrom = '2024-01-01'\nto = '2024-01-02'\nout = 'o'\n"
    )
    s = _resolve(["replay", "archive", "--config", config])
    assert (s["from_"], s["to"]) == ("2024-01-01", "2024-01-02")
    with pytest.raises(ConfigError) as info:
        _resolve(["replay", "archive", "--out", "o"])
    assert "--from is required (or FRAUDSTREAM_FROM, or from in the config file)" in str(info.value)


def test_per_invocation_flags_never_come_from_the_environment():
    env = {"FRAUDSTREAM_FORCE": "true", "FRAUDSTREAM_REASON": "x", "FRAUDSTREAM_TO": "production"}
    args = build_parser().parse_args(["model", "promote", "v1", "--to", "canary"])
    s = resolve(args, environ=env)
    assert "force" not in s.values and args.force is False and args.reason is None
    assert args.to == "canary"
    assert {"FRAUDSTREAM_FORCE", "FRAUDSTREAM_REASON"} <= set(s.ignored_env)


def test_lists_split_on_commas_from_every_source(tmp_path):
    assert _resolve(["simulate"], {"FRAUDSTREAM_DRIFT": "amount, label"})["drift"] == [
        "amount",
        "label",
    ]
    config = _toml(tmp_path, "[simulate]\ndrift = ['amount', 'new-pattern,label']\n")
    assert _resolve(["simulate", "--config", config])["drift"] == [
        "amount",
        "new-pattern",
        "label",
    ]
    flags = ["simulate", "--drift", "amount", "--drift", "label,amount"]
    assert _resolve(flags)["drift"] == ["amount", "label"]


def _sasl_env() -> dict[str, str]:
    return {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": " b1:9093 ",
        "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "FRAUDSTREAM_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "FRAUDSTREAM_KAFKA_SASL_USERNAME": "scorer",
        "FRAUDSTREAM_KAFKA_SASL_PASSWORD": f" {PASSWORD} ",  # taken verbatim
    }


def test_the_cli_and_from_env_take_one_path_to_kafka_settings():
    env = _sasl_env()
    from_cli = _resolve(["run"], env).kafka()
    assert from_cli == KafkaSettings.from_env(environ=env)
    assert from_cli == KafkaSettings(
        bootstrap_servers="b1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="scorer",
        sasl_password=f" {PASSWORD} ",
    )
    assert isinstance(from_cli.sasl_password, SecretStr)
    assert from_cli.confluent_config()["sasl.password"] == f" {PASSWORD} "
    assert KafkaSettings.from_env(environ=from_cli.to_env()) == from_cli


def test_an_inconsistent_connection_fails_at_resolution_without_the_password():
    env = {**_sasl_env(), "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    with pytest.raises(ConfigError) as info:
        _resolve(["run"], env)
    assert "does not use SASL" in str(info.value) and PASSWORD not in str(info.value)
    with pytest.raises(ConfigError, match="FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL='TLS'"):
        _resolve(["run"], {"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_secrets_are_masked_in_every_rendering(tmp_path):
    env = {**_sasl_env(), "FRAUDSTREAM_KAFKA_SSL_KEY_PASSWORD": "key-" + PASSWORD}
    env["FRAUDSTREAM_KAFKA_SSL_CERTFILE"] = "/c.pem"
    env["FRAUDSTREAM_KAFKA_SSL_KEYFILE"] = "/k.pem"
    s = _resolve(["run"], env)
    texts = [s.to_toml(), s.to_json(), repr(s.kafka()), repr(s.values), str(s.values)]
    assert not [t for t in texts if PASSWORD in t]
    shown = json.loads(s.to_json())["settings"]["kafka"]
    assert shown["sasl_password"] == {
        "value": "***",
        "source": "env",
        "from": "FRAUDSTREAM_KAFKA_SASL_PASSWORD",
        "flag": "--sasl-password",
        "env": "FRAUDSTREAM_KAFKA_SASL_PASSWORD",
    }
    assert sorted(s.secrets()) == sorted([f" {PASSWORD} ", "key-" + PASSWORD])
    # a bad secret is reported by name, never by value
    with pytest.raises(ConfigError) as info:
        _resolve(["run"], {**env, "FRAUDSTREAM_KAFKA_SASL_MECHANISM": PASSWORD})
    assert PASSWORD not in str(info.value)


def test_the_toml_output_reads_back_as_the_same_settings(tmp_path):
    env = {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": "b:9092",
        "FRAUDSTREAM_NO_TAIL": "yes",
        "FRAUDSTREAM_METRICS_ADDR": "0.0.0.0",
    }
    first = _resolve(["run", "--state-partitions", "8", "--epoch-interval", "0.5"], env)
    shown = first.to_toml()
    tomllib.loads(shown)  # valid TOML
    config = _toml(tmp_path, shown)
    second = _resolve(["run", "--config", config])
    assert second.values == first.values
    assert {second.origins[d].source for d in ("state_partitions", "no_tail")} == {Source.FILE}


def test_unknown_fraudstream_variables_are_listed_as_ignored():
    s = _resolve(["run"], {"FRAUDSTREAM_STATE_DIRS": "/x", "FRAUDSTREAM_TANSU_BIN": "/t"})
    assert s.ignored_env == ("FRAUDSTREAM_STATE_DIRS",)
    assert "# ignored: FRAUDSTREAM_STATE_DIRS" in s.to_toml()


def test_every_setting_has_one_variable_and_none_is_reserved():
    for command, specs in settings_of(build_parser()).items():
        names = [n for spec in specs for n in spec.env_names]
        assert len(names) == len(set(names)), command
        assert not set(names) & RESERVED_ENV, command
        for spec in specs:
            assert spec.env.startswith("FRAUDSTREAM_") and spec.env == spec.env.upper()
