from genir.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_SOURCE_UNSPECIFIED: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_COMPARISON: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_CRITIQUE: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_PERSON: _ClassVar[FeedbackSource]

class CaptionStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPTION_STYLE_UNSPECIFIED: _ClassVar[CaptionStyle]
    CAPTION_STYLE_GENERATION: _ClassVar[CaptionStyle]
    CAPTION_STYLE_RETRIEVAL: _ClassVar[CaptionStyle]
FEEDBACK_SOURCE_UNSPECIFIED: FeedbackSource
FEEDBACK_SOURCE_COMPARISON: FeedbackSource
FEEDBACK_SOURCE_CRITIQUE: FeedbackSource
FEEDBACK_SOURCE_PERSON: FeedbackSource
CAPTION_STYLE_UNSPECIFIED: CaptionStyle
CAPTION_STYLE_GENERATION: CaptionStyle
CAPTION_STYLE_RETRIEVAL: CaptionStyle

class CaptionRequest(_message.Message):
    __slots__ = ("target", "sampling", "style", "prompt_set")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.Image
    sampling: _common_pb2.Sampling
    style: CaptionStyle
    prompt_set: str
    def __init__(self, target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., style: _Optional[_Union[CaptionStyle, str]] = ..., prompt_set: _Optional[str] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("target", "generated", "caption", "sampling", "prompt_set", "style")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.Image
    generated: _common_pb2.Image
    caption: str
    sampling: _common_pb2.Sampling
    prompt_set: str
    style: CaptionStyle
    def __init__(self, target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., generated: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., caption: _Optional[str] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., prompt_set: _Optional[str] = ..., style: _Optional[_Union[CaptionStyle, str]] = ...) -> None: ...

class RefineRequest(_message.Message):
    __slots__ = ("caption", "feedback", "target", "generated", "shown_rank", "sampling", "prompt_set", "feedback_source")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    SHOWN_RANK_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_SOURCE_FIELD_NUMBER: _ClassVar[int]
    caption: str
    feedback: str
    target: _common_pb2.Image
    generated: _common_pb2.Image
    shown_rank: int
    sampling: _common_pb2.Sampling
    prompt_set: str
    feedback_source: FeedbackSource
    def __init__(self, caption: _Optional[str] = ..., feedback: _Optional[str] = ..., target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., generated: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., shown_rank: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., prompt_set: _Optional[str] = ..., feedback_source: _Optional[_Union[FeedbackSource, str]] = ...) -> None: ...

class CritiqueRequest(_message.Message):
    __slots__ = ("target", "caption", "sampling", "prompt_set")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.Image
    caption: str
    sampling: _common_pb2.Sampling
    prompt_set: str
    def __init__(self, target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., caption: _Optional[str] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., prompt_set: _Optional[str] = ...) -> None: ...

class RefinerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RefinerInfo(_message.Message):
    __slots__ = ("model", "triton_model", "prompt_sets", "default_prompt_set", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens_limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRITON_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SETS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    triton_model: str
    prompt_sets: _containers.RepeatedScalarFieldContainer[str]
    default_prompt_set: str
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens_limit: int
    def __init__(self, model: _Optional[str] = ..., triton_model: _Optional[str] = ..., prompt_sets: _Optional[_Iterable[str]] = ..., default_prompt_set: _Optional[str] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., repetition_penalty: _Optional[float] = ..., max_new_tokens_limit: _Optional[int] = ...) -> None: ...

class RefinerResponse(_message.Message):
    __slots__ = ("text", "prompt_id", "timings", "prompt_tokens", "completion_tokens", "model", "seed")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    text: str
    prompt_id: str
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Timing]
    prompt_tokens: int
    completion_tokens: int
    model: str
    seed: int
    def __init__(self, text: _Optional[str] = ..., prompt_id: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.Timing, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., model: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...
