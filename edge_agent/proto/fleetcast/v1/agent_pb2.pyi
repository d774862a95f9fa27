from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostFacts(_message.Message):
    __slots__ = ("os", "arch", "cpu_features", "runtimes", "execution_providers", "agent_version")
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPU_FEATURES_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    os: str
    arch: str
    cpu_features: _containers.RepeatedScalarFieldContainer[str]
    runtimes: _containers.RepeatedScalarFieldContainer[str]
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    agent_version: str
    def __init__(self, os: _Optional[str] = ..., arch: _Optional[str] = ..., cpu_features: _Optional[_Iterable[str]] = ..., runtimes: _Optional[_Iterable[str]] = ..., execution_providers: _Optional[_Iterable[str]] = ..., agent_version: _Optional[str] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("enrollment_token", "device_id", "host")
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    enrollment_token: str
    device_id: str
    host: HostFacts
    def __init__(self, enrollment_token: _Optional[str] = ..., device_id: _Optional[str] = ..., host: _Optional[_Union[HostFacts, _Mapping]] = ...) -> None: ...

class MqttLogin(_message.Message):
    __slots__ = ("username", "password", "topic_prefix")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    TOPIC_PREFIX_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    topic_prefix: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., topic_prefix: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("device_id", "device_token", "mqtt")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MQTT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_token: str
    mqtt: MqttLogin
    def __init__(self, device_id: _Optional[str] = ..., device_token: _Optional[str] = ..., mqtt: _Optional[_Union[MqttLogin, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_version", "installed")
    class InstalledEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    installed: _containers.ScalarMap[str, str]
    def __init__(self, agent_version: _Optional[str] = ..., installed: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("command_id", "execution_version", "ok", "error", "detail_json")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    execution_version: int
    ok: bool
    error: str
    detail_json: str
    def __init__(self, command_id: _Optional[str] = ..., execution_version: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: CommandAck
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[CommandAck, _Mapping]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "execution_version", "kind", "body_json")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    execution_version: int
    kind: str
    body_json: str
    def __init__(self, command_id: _Optional[str] = ..., execution_version: _Optional[int] = ..., kind: _Optional[str] = ..., body_json: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("sha256", "offset", "chunk_size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    chunk_size: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data", "total_size", "last", "sha256")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    last: bool
    sha256: str
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., last: _Optional[bool] = ..., sha256: _Optional[str] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("seq", "kind", "body_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    body_json: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., body_json: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Upload]
    def __init__(self, items: _Optional[_Iterable[_Union[Upload, _Mapping]]] = ...) -> None: ...

class UploadAck(_message.Message):
    __slots__ = ("acked", "rejected", "errors")
    ACKED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    acked: _containers.RepeatedScalarFieldContainer[int]
    rejected: _containers.RepeatedScalarFieldContainer[int]
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, acked: _Optional[_Iterable[int]] = ..., rejected: _Optional[_Iterable[int]] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
