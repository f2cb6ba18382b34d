from genir.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptionStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPTION_STYLE_UNSPECIFIED: _ClassVar[CaptionStyle]
    CAPTION_STYLE_GENERATION: _ClassVar[CaptionStyle]
    CAPTION_STYLE_RETRIEVAL: _ClassVar[CaptionStyle]
CAPTION_STYLE_UNSPECIFIED: CaptionStyle
CAPTION_STYLE_GENERATION: CaptionStyle
CAPTION_STYLE_RETRIEVAL: CaptionStyle

class CaptionRequest(_message.Message):
    __slots__ = ("target", "sampling", "style")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.Image
    sampling: _common_pb2.Sampling
    style: CaptionStyle
    def __init__(self, target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ..., style: _Optional[_Union[CaptionStyle, str]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("target", "generated", "caption", "sampling")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.Image
    generated: _common_pb2.Image
    caption: str
    sampling: _common_pb2.Sampling
    def __init__(self, target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., generated: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., caption: _Optional[str] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ...) -> None: ...

class RefineRequest(_message.Message):
    __slots__ = ("caption", "feedback", "target", "generated", "shown_rank", "sampling")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    SHOWN_RANK_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    caption: str
    feedback: str
    target: _common_pb2.Image
    generated: _common_pb2.Image
    shown_rank: int
    sampling: _common_pb2.Sampling
    def __init__(self, caption: _Optional[str] = ..., feedback: _Optional[str] = ..., target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., generated: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., shown_rank: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ...) -> None: ...

class CritiqueRequest(_message.Message):
    __slots__ = ("target", "caption", "sampling")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.Image
    caption: str
    sampling: _common_pb2.Sampling
    def __init__(self, target: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., caption: _Optional[str] = ..., sampling: _Optional[_Union[_common_pb2.Sampling, _Mapping]] = ...) -> None: ...

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
