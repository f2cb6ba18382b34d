import datetime

from genir.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionOptions(_message.Message):
    __slots__ = ("collection", "top_k", "image_delivery", "seed", "width", "height", "num_inference_steps", "guidance_scale", "image_weight", "text_weight", "preset", "prompt_set", "max_new_tokens", "chatir_per_round")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHATIR_PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    collection: str
    top_k: int
    image_delivery: _common_pb2.ImageDelivery
    seed: int
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    image_weight: float
    text_weight: float
    preset: str
    prompt_set: str
    max_new_tokens: int
    chatir_per_round: bool
    def __init__(self, collection: _Optional[str] = ..., top_k: _Optional[int] = ..., image_delivery: _Optional[_Union[_common_pb2.ImageDelivery, str]] = ..., seed: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_inference_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., image_weight: _Optional[float] = ..., text_weight: _Optional[float] = ..., preset: _Optional[str] = ..., prompt_set: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., chatir_per_round: _Optional[bool] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("query", "mode", "options")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    query: str
    mode: str
    options: SessionOptions
    def __init__(self, query: _Optional[str] = ..., mode: _Optional[str] = ..., options: _Optional[_Union[SessionOptions, _Mapping]] = ...) -> None: ...

class NextRoundRequest(_message.Message):
    __slots__ = ("session_id", "query", "feedback", "image_delivery")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    query: str
    feedback: str
    image_delivery: _common_pb2.ImageDelivery
    def __init__(self, session_id: _Optional[str] = ..., query: _Optional[str] = ..., feedback: _Optional[str] = ..., image_delivery: _Optional[_Union[_common_pb2.ImageDelivery, str]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id", "image_delivery")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    image_delivery: _common_pb2.ImageDelivery
    def __init__(self, session_id: _Optional[str] = ..., image_delivery: _Optional[_Union[_common_pb2.ImageDelivery, str]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class RunDialogRequest(_message.Message):
    __slots__ = ("target_id", "mode", "rounds", "dialog", "options", "corpus_fingerprint")
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    DIALOG_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    target_id: str
    mode: str
    rounds: int
    dialog: _containers.RepeatedScalarFieldContainer[str]
    options: SessionOptions
    corpus_fingerprint: str
    def __init__(self, target_id: _Optional[str] = ..., mode: _Optional[str] = ..., rounds: _Optional[int] = ..., dialog: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[SessionOptions, _Mapping]] = ..., corpus_fingerprint: _Optional[str] = ...) -> None: ...

class GetImageRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class GetCorpusImageRequest(_message.Message):
    __slots__ = ("collection", "id", "max_side")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    max_side: int
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ..., max_side: _Optional[int] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("mode", "options")
    MODE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    options: SessionOptions
    def __init__(self, mode: _Optional[str] = ..., options: _Optional[_Union[SessionOptions, _Mapping]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("models", "settings_json")
    class ModelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    models: _containers.ScalarMap[str, str]
    settings_json: str
    def __init__(self, models: _Optional[_Mapping[str, str]] = ..., settings_json: _Optional[str] = ...) -> None: ...

class Round(_message.Message):
    __slots__ = ("index", "query", "generated", "hits", "feedback", "timings", "target_rank", "seed", "session_id", "prompt_id", "query_cut", "rendered_query", "backend_timings")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TARGET_RANK_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_CUT_FIELD_NUMBER: _ClassVar[int]
    RENDERED_QUERY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    index: int
    query: str
    generated: _common_pb2.Image
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.Hit]
    feedback: str
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Timing]
    target_rank: int
    seed: int
    session_id: str
    prompt_id: str
    query_cut: bool
    rendered_query: str
    backend_timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Timing]
    def __init__(self, index: _Optional[int] = ..., query: _Optional[str] = ..., generated: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[_common_pb2.Hit, _Mapping]]] = ..., feedback: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.Timing, _Mapping]]] = ..., target_rank: _Optional[int] = ..., seed: _Optional[int] = ..., session_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., query_cut: _Optional[bool] = ..., rendered_query: _Optional[str] = ..., backend_timings: _Optional[_Iterable[_Union[_common_pb2.Timing, _Mapping]]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "mode", "options", "rounds", "created_at", "expires_at", "created", "expires")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    mode: str
    options: SessionOptions
    rounds: _containers.RepeatedCompositeFieldContainer[Round]
    created_at: float
    expires_at: float
    created: _timestamp_pb2.Timestamp
    expires: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., mode: _Optional[str] = ..., options: _Optional[_Union[SessionOptions, _Mapping]] = ..., rounds: _Optional[_Iterable[_Union[Round, _Mapping]]] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
