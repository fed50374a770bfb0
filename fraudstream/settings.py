"""One settings model for every command: flags > environment > TOML file > defaults.

Every option of a command is a setting, declared once: as an ``add_argument`` of the command's
parser in :mod:`fraudstream.cli` (type, default, choices, help), or, for the Kafka connection
shared by every command that talks to Kafka, as a field of :class:`KafkaConnection`. Its other
names follow from its first long flag:

==========================  ======================================  =============================
flag                        environment                             TOML file
==========================  ======================================  =============================
``--state-partitions``      ``FRAUDSTREAM_STATE_PARTITIONS``        ``state_partitions``
``--bootstrap-servers``     ``FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS`` ``bootstrap_servers`` in
                                                                    ``[kafka]``
==========================  ======================================  =============================

The TOML file is ``--config PATH`` or ``$FRAUDSTREAM_CONFIG``. Its top-level keys (or those of a
``[fraudstream]`` table) apply to every command that has the setting; a table named after the
command (``[run]``, ``[simulate]``, ``[model.promote]``, ...) applies to that command only and wins
over the top level; ``[kafka]`` holds the connection. A key that no command knows is an error
(a typo must not be ignored silently); a key of another command is skipped.

:func:`resolve` reads the four sources for one command and validates the result once, with a
pydantic-settings model built from the declarations (the flags given, then an environment source
and a TOML source of this module; declared defaults last). It remembers where each value came
from (:class:`Origin`), which ``fraudstream config show`` prints. Errors are one
:class:`~fraudstream.errors.ConfigError` naming the flag, variable or file key at fault.

Parsing is strict: booleans from the environment or the file take ``true/false``, ``1/0``,
``yes/no`` (``on/off``), any case, and anything else is an error (``FRAUDSTREAM_NO_TAIL=false`` is
false); numbers must be numbers; an empty variable counts as unset. Secrets (the SASL and TLS key
passwords) are ``SecretStr``: printed as ``***`` and never logged.

Deprecated names: an option declared with a second long flag (``--state-partitions``,
``--partitions``) is also read from the old flag, the old variable (``FRAUDSTREAM_PARTITIONS``)
and the old file key, with a warning; the new name wins. The Kafka settings are also read from
top-level file keys (``bootstrap_servers = ...``), the form before the ``[kafka]`` table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fraudstream.errors import ConfigError

if typing.TYPE_CHECKING:
    from fraudstream.kafka import KafkaSettings

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "KAFKA_ENV_PREFIX",
    "KafkaConnection",
    "Origin",
    "Setting",
    "Settings",
    "Source",
    "Typed",
    "add_kafka_options",
    "comma_list",
    "finalize",
    "flag_only",
    "kafka_from_env",
    "resolve",
    "settings_of",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "FRAUDSTREAM_"
KAFKA_ENV_PREFIX = "FRAUDSTREAM_KAFKA_"
CONFIG_ENV = "FRAUDSTREAM_CONFIG"
# FRAUDSTREAM_* variables that are not settings of a command (tools, tests, the runner)
RESERVED_ENV = frozenset(
    {
        CONFIG_ENV,
        "FRAUDSTREAM_TANSU_BIN",
        "FRAUDSTREAM_DIR_LOCKS_HELD",
        "FRAUDSTREAM_BOOTSTRAP_SERVERS",
        "FRAUDSTREAM_TEST_IMAGE",
        "FRAUDSTREAM_TEST_ENGINE",
    }
)
_MASK = "***"
_NOT_SETTINGS = frozenset({"help", "config"})


class Source(StrEnum):
    """Where a value came from, highest precedence first."""

    FLAG = "flag"
    ENV = "env"
    FILE = "file"
    DEFAULT = "default"


@dataclass(frozen=True)
class Origin:
    """A value's source and exactly where: the flag, the variable, or ``file: [table] key``."""

    source: Source
    where: str = ""

    def __str__(self) -> str:
        return f"{self.source} {self.where}".strip()


# --- types --------------------------------------------------------------------------------


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _split_commas(value: Any) -> Any:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split(","))
        else:
            out.append(item)
    return list(dict.fromkeys(part for part in out if part != ""))


class Typed:
    """An argparse ``type=`` that validates with a pydantic annotation (e.g. bounds), so that a
    flag, a variable and a file key are checked alike: ``type=Typed(int, ge=1)``."""

    def __init__(self, kind: Any, **constraints: Any) -> None:
        annotation: Any = Annotated[kind, Field(**constraints)] if constraints else kind
        self.annotation = annotation
        self.__name__ = getattr(kind, "__name__", str(kind))  # argparse's error messages
        self._adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def __call__(self, text: str) -> Any:
        try:
            return self._adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {_first_message(exc)}") from None

    def __repr__(self) -> str:
        return f"Typed({self.annotation!r})"


CommaList = Annotated[list[str], BeforeValidator(_split_commas)]
comma_list = Typed(CommaList)
"""``type=`` of a repeatable, comma-separated option (``--drift amount,label``)."""


def flag_only(action: argparse.Action) -> argparse.Action:
    """Mark an option as a per-invocation decision (``--force``, ``--reason``): read from its flag
    only, never from the environment or a file, where it would apply to every later run."""
    action.fs_flag_only = True  # type: ignore[attr-defined]
    return action


# --- the Kafka connection -----------------------------------------------------------------

_Protocol = Annotated[
    Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)
]
_Mechanism = Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(_upper)]
_Text = Annotated[str, BeforeValidator(_strip), Field(min_length=1)]


class KafkaConnection(BaseModel):
    """How to reach Kafka: the settings every Kafka-facing command shares (flags, then
    ``FRAUDSTREAM_KAFKA_<NAME>``, then ``[kafka]`` in the file). Consistency (SASL needs a
    mechanism and credentials, ...) is checked by :class:`~fraudstream.kafka.KafkaSettings`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: _Text | None = Field(None, description="host:port[,host:port]")
    security_protocol: _Protocol = Field("PLAINTEXT", description="default: PLAINTEXT")
    sasl_mechanism: _Mechanism | None = Field(None, description="with SASL_PLAINTEXT or SASL_SSL")
    sasl_username: _Text | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        None,
        description="SASL password; prefer FRAUDSTREAM_KAFKA_SASL_PASSWORD (a flag is visible "
        "to every user of the host)",
    )
    ssl_cafile: _Text | None = Field(None, description="CA certificate (PEM) to verify the brokers")
    ssl_certfile: _Text | None = Field(None, description="client certificate (PEM), for mTLS")
    ssl_keyfile: _Text | None = Field(None, description="client private key (PEM), for mTLS")
    ssl_key_password: SecretStr | None = Field(
        None,
        description="password of an encrypted --ssl-keyfile; prefer "
        "FRAUDSTREAM_KAFKA_SSL_KEY_PASSWORD",
    )


def _kafka_hints() -> dict[str, Any]:
    return typing.get_type_hints(KafkaConnection, include_extras=True)


def _literal_choices(annotation: Any) -> list[str] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is Literal:
            return list(typing.get_args(arg))
        if typing.get_origin(arg) is Annotated:
            found = _literal_choices(typing.get_args(arg)[0])
            if found:
                return found
    return None


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    """The :class:`KafkaConnection` fields as flags (``--bootstrap-servers``, ...)."""
    group = parser.add_argument_group(
        "Kafka connection (environment FRAUDSTREAM_KAFKA_<NAME>, file table [kafka])"
    )
    hints = _kafka_hints()
    for name, info in KafkaConnection.model_fields.items():
        kwargs: dict[str, Any] = {"dest": f"kafka_{name}", "help": info.description}
        choices = _literal_choices(hints[name])
        if choices:
            kwargs.update(choices=choices, type=str.upper)
        else:
            kwargs["metavar"] = name.upper()
        if info.default is not None:
            kwargs["default"] = info.default
        action = group.add_argument("--" + name.replace("_", "-"), **kwargs)
        action.fs_kafka = name  # type: ignore[attr-defined]


# --- declarations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting of one command, derived from its option."""

    dest: str
    name: str
    flag: str
    env: str
    table: str | None  # "kafka" for the connection, None for the command's own
    aliases: tuple[str, ...]  # deprecated names (flag, variable and file key alike)
    annotation: Any
    default: Any
    required: bool
    secret: bool
    help: str

    @property
    def env_names(self) -> tuple[str, ...]:
        prefix = KAFKA_ENV_PREFIX if self.table == "kafka" else ENV_PREFIX
        return (self.env, *(prefix + a.upper() for a in self.aliases))


def _is_setting(action: argparse.Action) -> bool:
    return (
        bool(action.option_strings)
        and action.dest not in _NOT_SETTINGS
        and not getattr(action, "fs_flag_only", False)
        and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    )


def _annotation(action: argparse.Action) -> Any:
    kafka = getattr(action, "fs_kafka", None)
    if kafka is not None:
        return _kafka_hints()[kafka]
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return bool
    kind = action.type
    annotation: Any = getattr(kind, "annotation", None)
    if annotation is None:
        if kind not in (None, str, str.upper, int, float):
            raise TypeError(f"{action.option_strings}: declare its type as int, float or Typed")
        annotation = str if kind in (None, str.upper) else kind
    if action.choices is not None:
        annotation = Literal[tuple(action.choices)]
    if kind is str.upper:  # case-insensitive choices, from every source
        annotation = Annotated[annotation, BeforeValidator(_upper)]
    if isinstance(action, argparse._ExtendAction | argparse._AppendAction):
        annotation = annotation if annotation is CommaList else list[annotation]
    if action.default is None and not action.required:
        annotation = annotation | None
    return annotation


def _spec(action: argparse.Action) -> Setting:
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs:
        raise TypeError(f"{action.option_strings}: a setting needs a long flag")
    kafka = getattr(action, "fs_kafka", None)
    name = kafka or longs[0][2:].replace("-", "_")
    annotation = _annotation(action)
    return Setting(
        dest=action.dest,
        name=name,
        flag=longs[0],
        env=(KAFKA_ENV_PREFIX if kafka else ENV_PREFIX) + name.upper(),
        table="kafka" if kafka else None,
        aliases=tuple(s[2:].replace("-", "_") for s in longs[1:]),
        annotation=annotation,
        default=action.default,
        required=bool(action.required),
        secret=SecretStr in typing.get_args(annotation) or annotation is SecretStr,
        help=action.help or "",
    )


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterable[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, (*path, name))


@dataclass
class _Registry:
    """What every command of one parser tree declares (to tell a typo from another command's)."""

    names: set[str] = field(default_factory=set)
    env: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)


def finalize(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Turn every option of every command of ``parser`` into a setting: record its declaration,
    and let argparse leave absent options out of the namespace (their value comes from the
    environment, the file or the default in :func:`resolve`). A required option may come from the
    environment or the file too: it is checked after them."""
    registry = _Registry()
    for path, leaf in _leaves(parser):
        specs = []
        for action in leaf._actions:
            if not _is_setting(action):
                continue
            spec = _spec(action)
            specs.append(spec)
            if action.required:
                action.required = False
                action.help = f"{action.help} (required)"
            action.default = argparse.SUPPRESS
            registry.names.update((spec.name, *spec.aliases))
            registry.env.update(spec.env_names)
        registry.tables.add(path[0])
        leaf.set_defaults(_command=path, _sub=leaf)
        leaf.fs_specs = tuple(specs)  # type: ignore[attr-defined]
        leaf.fs_registry = registry  # type: ignore[attr-defined]
        leaf.epilog = (
            "Every option may also come from the environment (FRAUDSTREAM_<OPTION>, "
            "FRAUDSTREAM_KAFKA_<OPTION> for the Kafka connection) or a TOML file (--config or "
            "FRAUDSTREAM_CONFIG); flags win over the environment, which wins over the file. "
            "`fraudstream config show COMMAND` prints the result."
        )
    return parser


def settings_of(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], tuple[Setting, ...]]:
    """Every command of a finalized parser tree with its settings."""
    return {path: leaf.fs_specs for path, leaf in _leaves(parser)}  # type: ignore[attr-defined]


# --- sources ------------------------------------------------------------------------------


def _env_layer(
    specs: Iterable[Setting], environ: Mapping[str, str]
) -> dict[str, tuple[Any, Origin]]:
    found: dict[str, tuple[Any, Origin]] = {}
    for spec in specs:
        for i, name in enumerate(spec.env_names):
            raw = environ.get(name)
            if raw is None or not raw.strip():
                continue
            if i:
                log.warning("%s is deprecated: use %s", name, spec.env)
            found[spec.dest] = (raw if spec.secret else raw.strip(), Origin(Source.ENV, name))
            break
    return found


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    if set(data) == {"fraudstream"} and isinstance(data["fraudstream"], dict):
        data = data["fraudstream"]  # the form before command tables
    return data


def _file_layer(
    path: str, command: tuple[str, ...], specs: Iterable[Setting], registry: _Registry
) -> dict[str, tuple[Any, Origin]]:
    data = _load_toml(path)
    own = {n: s for s in specs if s.table is None for n in (s.name, *s.aliases)}
    kafka = {n: s for s in specs if s.table == "kafka" for n in (s.name, *s.aliases)}
    found: dict[str, tuple[Any, Origin]] = {}

    def take(spec: Setting, key: str, value: Any, where: str) -> None:
        if spec.table == "kafka":
            log.warning("%s: top-level %s is deprecated: use [kafka] %s", path, key, spec.name)
        elif key != spec.name:
            log.warning("%s: %s is deprecated: use %s", path, key, spec.name)
        found[spec.dest] = (value, Origin(Source.FILE, where))

    def unknown(key: str, where: str) -> ConfigError:
        return ConfigError(f"{path}: unknown setting {where}{key!r}")

    # the top level (every command), then the command's own tables, deeper ones winning
    table: Any = data
    for depth in range(len(command) + 1):
        label = "" if depth == 0 else f"[{'.'.join(command[:depth])}] "
        for key, value in table.items():
            if isinstance(value, dict) and (depth or key in registry.tables or key == "kafka"):
                continue  # a table: kafka, this command's (below) or another command's
            spec = own.get(key)
            if spec is None and depth == 0:
                spec = kafka.get(key)  # legacy: connection keys at the top level
            if spec is not None:
                take(spec, key, value, f"{path}: {label}{key}")
            elif depth == len(command) and depth:
                raise ConfigError(f"{path}: {label}{key!r} is not a setting of this command")
            elif key not in registry.names:
                raise unknown(key, label)
        if depth == len(command):
            break
        table = table.get(command[depth], {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{'.'.join(command[: depth + 1])}] must be a table")
    section = data.get("kafka", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: kafka must be a table")
    names = KafkaConnection.model_fields
    for key, value in section.items():
        if key not in names:
            raise unknown(key, "[kafka] ")
        if key in kafka:
            found[kafka[key].dest] = (value, Origin(Source.FILE, f"{path}: [kafka] {key}"))
    return found


class _Layer(PydanticBaseSettingsSource):
    """One source's values (already looked up by this module), for pydantic-settings."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _model(specs: Iterable[Setting], layers: list[Mapping[str, Any]]) -> type[BaseSettings]:
    class _Base(BaseSettings):
        model_config = SettingsConfigDict(frozen=True, extra="forbid")

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # flags (init), then the environment, then the file; defaults are the fields'
            return (init_settings, *(_Layer(settings_cls, layer) for layer in layers))

    fields: dict[str, Any] = {
        s.dest: (s.annotation, ... if s.required else s.default) for s in specs
    }
    return create_model("CommandSettings", __base__=_Base, **fields)


def _first_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return str(error["msg"])


def _shown(spec: Setting, value: Any) -> str:
    if spec.secret:
        return _MASK
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_errors(
    exc: ValidationError, specs: Mapping[str, Setting], origins: Mapping[str, Origin]
) -> str:
    parts = []
    for error in exc.errors():
        dest = str(error["loc"][0]) if error["loc"] else ""
        spec = specs.get(dest)
        if spec is None:
            parts.append(str(error["msg"]))
            continue
        if error["type"] == "missing":
            parts.append(
                f"{spec.flag} is required (or {spec.env}, or {spec.name} in the config file)"
            )
            continue
        origin = origins.get(dest, Origin(Source.DEFAULT))
        where = {
            Source.FLAG: spec.flag,
            Source.ENV: origin.where,
            Source.FILE: origin.where,
            Source.DEFAULT: f"default of {spec.flag}",
        }[origin.source]
        parts.append(f"{where}={_shown(spec, error.get('input'))}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)


# --- the result ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The validated settings of one command, with the origin of each value."""

    command: tuple[str, ...]
    specs: tuple[Setting, ...]
    values: Mapping[str, Any]  # by dest; secrets as SecretStr
    origins: Mapping[str, Origin]  # by dest
    config_file: str | None = None
    ignored_env: tuple[str, ...] = ()

    def __getitem__(self, dest: str) -> Any:
        return self.values[dest]

    @property
    def has_kafka(self) -> bool:
        return any(s.table == "kafka" for s in self.specs)

    def kafka(self, *, required: bool = True) -> KafkaSettings | None:
        """The Kafka connection; ``None`` when no bootstrap servers are set and not
        ``required``, else a :class:`~fraudstream.errors.ConfigError`."""
        from fraudstream.kafka import KafkaSettings

        values = {s.name: self.values.get(s.dest) for s in self.specs if s.table == "kafka"}
        if not values.get("bootstrap_servers"):
            if not required:
                return None
            raise ConfigError(
                "no Kafka bootstrap servers: pass --bootstrap-servers or set "
                "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS"
            )
        try:
            return KafkaSettings(**{k: v for k, v in values.items() if v is not None})
        except ConfigError as exc:
            raise ConfigError(f"Kafka settings: {exc}") from exc

    def secrets(self) -> list[str]:
        """The secret values that are set (to mask them in logs and messages)."""
        return [
            v.get_secret_value()
            for s in self.specs
            if s.secret and isinstance(v := self.values.get(s.dest), SecretStr)
        ]

    def _rows(self) -> list[tuple[str, Setting, Any, Origin]]:
        table = ".".join(self.command)
        rows = [
            (
                s.table or table,
                s,
                self.values.get(s.dest),
                self.origins.get(s.dest, Origin(Source.DEFAULT)),
            )
            for s in self.specs
        ]
        return sorted(rows, key=lambda r: (r[0] == "kafka", r[1].name))

    def to_json(self) -> str:
        """The effective settings as JSON: value (secrets ``***``), source and where."""
        out: dict[str, dict[str, Any]] = {}
        for table, spec, value, origin in self._rows():
            shown: Any = _MASK if spec.secret and value is not None else value
            out.setdefault(table, {})[spec.name] = {
                "value": shown,
                "source": str(origin.source),
                "from": origin.where or None,
                "flag": spec.flag,
                "env": spec.env,
            }
        document = {
            "command": " ".join(self.command),
            "config_file": self.config_file,
            "precedence": [str(s) for s in Source],
            "settings": out,
            "ignored_env": list(self.ignored_env),
        }
        return json.dumps(document, indent=2, default=_json_default)

    def to_toml(self) -> str:
        """The effective settings as a TOML file that ``--config`` reads back (secrets and unset
        values as comments), each line with its source."""
        lines = [
            f"# fraudstream {' '.join(self.command)}: effective settings",
            "# precedence: flag > env > file > default",
            f"# config file: {self.config_file or 'none'}",
        ]
        current = None
        for table, spec, value, origin in self._rows():
            if table != current:
                lines += ["", f"[{table}]"]
                current = table
            if value is None:
                line = f"# {spec.name} = (unset)"
            elif spec.secret:
                line = f'# {spec.name} = "{_MASK}"'
            else:
                line = f"{spec.name} = {_toml_value(value)}"
            lines.append(f"{line:<48} # {origin}")
        for name in self.ignored_env:
            lines.append(f"# ignored: {name} is not a setting of this command")
        return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return _MASK
    raise TypeError(f"cannot show {type(value).__name__}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


# --- resolving ----------------------------------------------------------------------------


def _validate(
    specs: tuple[Setting, ...],
    flags: Mapping[str, Any],
    layers: list[dict[str, tuple[Any, Origin]]],
) -> tuple[dict[str, Any], dict[str, Origin]]:
    origins: dict[str, Origin] = {}
    by_dest = {s.dest: s for s in specs}
    for dest in by_dest:
        if dest in flags:
            origins[dest] = Origin(Source.FLAG, by_dest[dest].flag)
        else:
            for layer in layers:
                if dest in layer:
                    origins[dest] = layer[dest][1]
                    break
            else:
                origins[dest] = Origin(Source.DEFAULT)
    model = _model(specs, [{k: v for k, (v, _) in layer.items()} for layer in layers])
    try:
        validated = model(**flags)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, by_dest, origins)) from None
    return {s.dest: getattr(validated, s.dest) for s in specs}, origins


def resolve(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, *, check: bool = True
) -> Settings:
    """The settings of the command ``args`` was parsed for (by a :func:`finalize`\\ d parser):
    the flags given in ``args``, then ``environ`` (default ``os.environ``), then the file, then
    the defaults; validated once. Raises :class:`~fraudstream.errors.ConfigError`.

    ``check=False`` leaves out the consistency of the Kafka connection (each value is still
    checked), for ``config show`` to print an incomplete connection before it reports it."""
    env = os.environ if environ is None else environ
    leaf = args._sub
    specs: tuple[Setting, ...] = leaf.fs_specs
    registry: _Registry = leaf.fs_registry
    command: tuple[str, ...] = args._command
    flags = {s.dest: getattr(args, s.dest) for s in specs if hasattr(args, s.dest)}
    config = getattr(args, "config", None) or env.get(CONFIG_ENV) or None
    layers = [_env_layer(specs, env)]
    if config:
        layers.append(_file_layer(config, command, specs, registry))
    values, origins = _validate(specs, flags, layers)
    known = {n for s in specs for n in s.env_names} | RESERVED_ENV
    ignored = tuple(sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known))
    settings = Settings(command, specs, values, origins, config, ignored)
    if check:
        settings.kafka(required=False)  # a connection that is set is checked now, not at first use
    return settings


def apply(args: argparse.Namespace, settings: Settings) -> argparse.Namespace:
    """Write the resolved values onto ``args`` (what the commands read)."""
    for dest, value in settings.values.items():
        setattr(args, dest, value)
    args._settings = settings
    return args


def kafka_from_env(environ: Mapping[str, str], prefix: str = KAFKA_ENV_PREFIX) -> KafkaSettings:
    """:meth:`KafkaSettings.from_env <fraudstream.kafka.KafkaSettings.from_env>`: the Kafka
    settings of the environment alone, parsed and validated as the CLI does."""
    specs = []
    hints = _kafka_hints()
    for name, info in KafkaConnection.model_fields.items():
        annotation = hints[name]
        specs.append(
            Setting(
                dest=f"kafka_{name}",
                name=name,
                flag="--" + name.replace("_", "-"),
                env=prefix + name.upper(),
                table="kafka",
                aliases=(),
                annotation=annotation,
                default=info.default,
                required=False,
                secret=SecretStr in typing.get_args(annotation),
                help=info.description or "",
            )
        )
    if not environ.get(prefix + "BOOTSTRAP_SERVERS", "").strip():
        raise ConfigError(f"{prefix}BOOTSTRAP_SERVERS is not set")
    values, origins = _validate(tuple(specs), {}, [_env_layer(specs, environ)])
    settings = Settings(("kafka",), tuple(specs), values, origins).kafka()
    assert settings is not None
    return settings
