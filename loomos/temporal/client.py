"""One way to connect to Temporal, so every process agrees on the data converter and on how it
reaches the cluster, and the registration of LoomOS's search attributes on a namespace.

The connection is Temporal's own client configuration (temporalio.envconfig) with LoomOS's
settings over it, so a profile made for the `temporal` CLI or Temporal Cloud works as it is:

1. envconfig's profile: temporal.profile, else $TEMPORAL_PROFILE, else "default" (an unknown
   name is an error, a missing "default" is not), from the TOML file temporal.config_file, else
   $TEMPORAL_CONFIG_FILE, else Temporal's default path (~/.config/temporalio/temporal.toml),
   with envconfig's variables over the file (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
   TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, ..., TEMPORAL_GRPC_META_*).
   Skipped when temporal.envconfig is false (the children of `loomos dev`).
2. LoomOS's settings over it where they are set: temporal.address and temporal.namespace when the
   YAML file or a variable (or code) gives them, their defaults only filling what the profile
   leaves open; temporal.api_key and each temporal.tls.* key when not null.

TLS is on with any certificate or server name (from either side), else with an API key or a
profile that asks for it; a profile's TEMPORAL_TLS=false turns it off unless LoomOS's own TLS
keys are set. Certificates are read here, so a missing or non-PEM file is a ConfigError that
names its key before any dialling.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import HeaderCodecBehavior
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig, ClientConfigProfile, ClientConnectConfig
from temporalio.service import TLSConfig

from loomos.settings import ConfigError, Settings
from loomos.temporal import search_attributes as sa

# temporal-dev.yaml's type names -> Temporal's enum.
INDEXED_TYPES: dict[str, IndexedValueType.ValueType] = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class SearchAttributeConflict(RuntimeError):
    pass


@dataclass(frozen=True)
class TemporalConnection:
    """What connect_temporal passes to Client.connect, and where each part came from
    (`loomos config show` prints both)."""

    config: ClientConnectConfig
    # connect argument (target_host, namespace, api_key, tls, rpc_metadata) and "profile" -> where
    # it came from
    origins: dict[str, str] = field(default_factory=dict)
    profile: str | None = None  # envconfig's profile read; None with temporal.envconfig false


# temporal.tls.<key> -> ClientConfigTLS's attribute and TLSConfig's argument of the same file.
_TLS_FILES = {
    "server_ca_cert": "server_root_ca_cert",
    "client_cert": "client_cert",
    "client_key": "client_private_key",
}
# envconfig's variable of each part of a profile, to say where a profile's value came from.
_ENVCONFIG_VARS = {
    "address": "TEMPORAL_ADDRESS",
    "namespace": "TEMPORAL_NAMESPACE",
    "api_key": "TEMPORAL_API_KEY",
    "tls": "TEMPORAL_TLS",
    "server_name": "TEMPORAL_TLS_SERVER_NAME",
    "server_ca_cert": "TEMPORAL_TLS_SERVER_CA_CERT",
    "client_cert": "TEMPORAL_TLS_CLIENT_CERT",
    "client_key": "TEMPORAL_TLS_CLIENT_KEY",
    "grpc_meta": "TEMPORAL_GRPC_META_",
}


class _Profile:
    """envconfig's profile, as loaded, and how to say where a part of it came from."""

    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        t = settings.temporal
        self.env = env
        source = Path(t.config_file) if t.config_file else None
        if source is not None:
            file_origin = str(source)
            try:
                source.open("rb").close()  # envconfig would take a missing file for an empty one
            except OSError as exc:
                raise ConfigError(
                    f"temporal.config_file: cannot read {source} ({exc.strerror})"
                    f" (from {_origin(settings, 'temporal.config_file')})"
                ) from None
            where = _origin(settings, "temporal.config_file")
        elif env.get("TEMPORAL_CONFIG_FILE"):
            file_origin, where = env["TEMPORAL_CONFIG_FILE"], "$TEMPORAL_CONFIG_FILE"
        else:
            file_origin = where = "Temporal's default config file"
        self.file_origin = file_origin
        try:
            profiles = ClientConfig.load(config_source=source, override_env_vars=env).profiles
        except RuntimeError as exc:  # envconfig's ConfigError: a file it cannot read or parse
            raise ConfigError(f"temporal.config_file: {_one_line(str(exc))} (from {where})") from None
        asked = t.profile or env.get("TEMPORAL_PROFILE")
        self.name = asked or "default"
        if t.profile:
            self.name_origin = f"temporal.profile ({_origin(settings, 'temporal.profile')})"
        else:
            self.name_origin = "$TEMPORAL_PROFILE" if asked else "envconfig's default"
        if asked and asked not in profiles:
            where = _origin(settings, "temporal.profile") if t.profile else "$TEMPORAL_PROFILE"
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(
                f"temporal.profile: no profile {asked!r} in {file_origin} (it has: {known}) (from {where})"
            )
        try:
            self.loaded = ClientConfigProfile.load(t.profile, config_source=source, override_env_vars=env)
        except RuntimeError as exc:
            raise ConfigError(f"temporal.profile: {_one_line(str(exc))} (from {file_origin})") from None

    def origin(self, part: str) -> str:
        var = _ENVCONFIG_VARS[part]
        if var.endswith("_"):
            named = sorted(name for name in self.env if name.startswith(var))
        else:
            named = [name for name in (var, f"{var}_PATH", f"{var}_DATA") if self.env.get(name)]
        where = f"${named[0]}" if named else self.file_origin
        return f"profile {self.name!r} ({where})"


def _origin(settings: Settings, key: str) -> str:
    """Where a LoomOS setting came from: its variable or file, else code or its default."""
    found = settings.origins.get(key)
    if found:
        return found
    section: object = settings
    *path, name = key.split(".")
    for part in path:
        section = getattr(section, part)
    return "settings" if name in getattr(section, "model_fields_set", set()) else "defaults"


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _read_pem(source: Path | str | bytes, key: str, origin: str) -> bytes:
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {source} ({exc.strerror}) (from {origin})") from None
        what = str(source)
    else:
        data = source.encode() if isinstance(source, str) else source
        what = "the data given"
    # Checked here, or the SDK fails later with a TLS handshake error that names no setting.
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{key}: {what} is not PEM (no -----BEGIN line) (from {origin})")
    return data


def temporal_connection(settings: Settings, env: Mapping[str, str] | None = None) -> TemporalConnection:
    """How connect_temporal connects: the profile of envconfig under LoomOS's settings (see the
    module's docstring). `env` stands for os.environ (envconfig's TEMPORAL_* variables)."""
    env = dict(os.environ if env is None else env)
    t = settings.temporal
    profile = _Profile(settings, env) if t.envconfig else None
    theirs = profile.loaded if profile else ClientConfigProfile()
    config: ClientConnectConfig = {}
    origins: dict[str, str] = {}

    def ours_or_theirs(part: str) -> tuple[str, str]:
        # Ours when set (file, variable, code) or when the profile has none: the default then.
        value = getattr(theirs, part)
        if profile is None or part in t.model_fields_set or not value:
            return getattr(t, part), f"temporal.{part} ({_origin(settings, f'temporal.{part}')})"
        return value, profile.origin(part)

    config["target_host"], origins["target_host"] = ours_or_theirs("address")
    config["namespace"], origins["namespace"] = ours_or_theirs("namespace")

    if t.api_key is not None:
        config["api_key"] = t.api_key.get_secret_value()
        origins["api_key"] = f"temporal.api_key ({_origin(settings, 'temporal.api_key')})"
    elif theirs.api_key and profile:
        config["api_key"] = theirs.api_key
        origins["api_key"] = profile.origin("api_key")

    config["tls"], tls_origins = _tls(settings, theirs, profile, bool(config.get("api_key")))
    if tls_origins:
        origins["tls"] = ", ".join(dict.fromkeys(tls_origins))
    if theirs.grpc_meta and profile:
        config["rpc_metadata"] = dict(theirs.grpc_meta)
        origins["rpc_metadata"] = profile.origin("grpc_meta")
    if profile is not None:
        origins["profile"] = profile.name_origin
    return TemporalConnection(config, origins, profile.name if profile else None)


def _tls(
    settings: Settings, theirs: ClientConfigProfile, profile: _Profile | None, api_key: bool
) -> tuple[bool | TLSConfig, list[str]]:
    ours = settings.temporal.tls
    tls = theirs.tls
    disabled = tls is not None and tls.disabled is True
    if disabled or profile is None:
        tls = None  # the profile's certificates no longer count; LoomOS's own still do
    files: dict[str, bytes] = {}
    origins: list[str] = []
    for key, attr in _TLS_FILES.items():
        path = getattr(ours, key)
        if path:
            origin = _origin(settings, f"temporal.tls.{key}")
            files[attr] = _read_pem(Path(path), f"temporal.tls.{key}", origin)
            origins.append(f"temporal.tls.{key} ({origin})")
        elif tls is not None and profile is not None and getattr(tls, attr) is not None:
            origin = profile.origin(key)
            files[attr] = _read_pem(getattr(tls, attr), f"temporal.tls.{key}", origin)
            origins.append(origin)
    server_name = ours.server_name
    if server_name:
        origins.append(f"temporal.tls.server_name ({_origin(settings, 'temporal.tls.server_name')})")
    elif tls is not None and profile is not None and tls.server_name:
        server_name = tls.server_name
        origins.append(profile.origin("server_name"))
    if ("client_cert" in files) != ("client_private_key" in files):
        have, lack = (
            ("client_cert", "client_key") if "client_cert" in files else ("client_key", "client_cert")
        )
        raise ConfigError(
            f"temporal.tls.{lack}: missing, mTLS needs it with {have} (from {', '.join(origins)})"
        )
    if files or server_name:
        return TLSConfig(domain=server_name, **files), origins
    if disabled and profile is not None:
        return False, [profile.origin("tls")]
    if tls is not None and profile is not None:
        return True, [profile.origin("tls")]
    return api_key, ["on for the API key"] if api_key else []


def temporal_connect_config(settings: Settings, env: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """Client.connect's arguments for these settings (temporal_connection without the origins)."""
    return temporal_connection(settings, env).config


def data_converter(settings: Settings) -> DataConverter:
    """pydantic's converter; with security.crypto.payload_encryption, every payload through
    the keyring's encryption codec (loomos.security.crypto.codec), and failure messages and
    stack traces moved into an encrypted payload too (a training log's tail may hold secrets)."""
    crypto = settings.security.crypto
    if not crypto.payload_encryption:
        return pydantic_data_converter
    from loomos.security.crypto.codec import EncryptionCodec
    from loomos.security.crypto.keys import key_provider_from_settings

    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(key_provider_from_settings(crypto)),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect_temporal(settings: Settings) -> Client:
    """A client with LoomOS's data converter. With payload encryption, headers (the caller's
    identity travels in them) go through the codec as well: HeaderCodecBehavior.CODEC, which
    workers made from this client inherit."""
    converter = data_converter(settings)
    headers = HeaderCodecBehavior.CODEC if converter.payload_codec else HeaderCodecBehavior.NO_CODEC
    return await Client.connect(
        **temporal_connect_config(settings), data_converter=converter, header_codec_behavior=headers
    )


def search_attribute_definitions(settings: Settings) -> dict[str, str]:
    """LoomOS's own attributes plus any extra ones temporal-dev.yaml lists.

    The file may not retype one of ours: JobWorkflow writes them with fixed types.
    """
    wanted = dict(sa.DEFINITIONS)
    for name, kind in settings.temporal.search_attributes.items():
        if name in wanted and wanted[name] != kind:
            raise SearchAttributeConflict(
                f"temporal.search_attributes.{name}: LoomOS needs type {wanted[name]}, the file says {kind}"
            )
        wanted[name] = kind
    return wanted


async def ensure_search_attributes(
    client: Client, namespace: str, definitions: Mapping[str, str] = sa.DEFINITIONS
) -> list[str]:
    """Register the attributes the namespace lacks; return the names added.

    Idempotent, so every start of the stack can call it. An attribute that exists with
    another type is an error: adding it again would not change it, and upserts would fail.
    """
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    existing = dict(listed.custom_attributes)
    missing: dict[str, IndexedValueType.ValueType] = {}
    for name, kind in definitions.items():
        want = INDEXED_TYPES[kind]
        if name not in existing:
            missing[name] = want
        elif existing[name] != want:
            have = IndexedValueType.Name(existing[name]).removeprefix("INDEXED_VALUE_TYPE_")
            raise SearchAttributeConflict(
                f"search attribute {name} exists in namespace {namespace!r} as {have}, LoomOS needs {kind}"
            )
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
