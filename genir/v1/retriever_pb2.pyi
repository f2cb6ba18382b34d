from genir.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Fusion(_message.Message):
    __slots__ = ("image", "text", "image_weight", "text_weight")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    text: str
    image_weight: float
    text_weight: float
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., text: _Optional[str] = ..., image_weight: _Optional[float] = ..., text_weight: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "image", "text", "vector", "fusion", "top_k", "target_id", "exact")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: _common_pb2.Image
    text: str
    vector: Vector
    fusion: Fusion
    top_k: int
    target_id: str
    exact: bool
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., fusion: _Optional[_Union[Fusion, _Mapping]] = ..., top_k: _Optional[int] = ..., target_id: _Optional[str] = ..., exact: _Optional[bool] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "target_rank", "timings", "model", "text_truncated", "collection_points")
    HITS_FIELD_NUMBER: _ClassVar[int]
    TARGET_RANK_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_POINTS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.Hit]
    target_rank: int
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Timing]
    model: str
    text_truncated: bool
    collection_points: int
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.Hit, _Mapping]]] = ..., target_rank: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.Timing, _Mapping]]] = ..., model: _Optional[str] = ..., text_truncated: _Optional[bool] = ..., collection_points: _Optional[int] = ...) -> None: ...

class EmbedImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ...) -> None: ...

class EmbedTextsRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vectors", "dim", "model", "truncated", "timings")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    dim: int
    model: str
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Timing]
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., dim: _Optional[int] = ..., model: _Optional[str] = ..., truncated: _Optional[_Iterable[bool]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.Timing, _Mapping]]] = ...) -> None: ...

class UpsertItem(_message.Message):
    __slots__ = ("id", "image", "vector", "payload")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: _common_pb2.Image
    vector: Vector
    payload: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., payload: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "items")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[UpsertItem]
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[UpsertItem, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "collection_points", "failed")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_POINTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    collection_points: int
    failed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, upserted: _Optional[int] = ..., collection_points: _Optional[int] = ..., failed: _Optional[_Iterable[str]] = ...) -> None: ...

class CollectionInfoRequest(_message.Message):
    __slots__ = ("collection", "paths_offset", "paths_limit")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PATHS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PATHS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    paths_offset: int
    paths_limit: int
    def __init__(self, collection: _Optional[str] = ..., paths_offset: _Optional[int] = ..., paths_limit: _Optional[int] = ...) -> None: ...

class CollectionInfoResponse(_message.Message):
    __slots__ = ("name", "model", "dim", "points", "engine", "distance", "hnsw_ready", "corpus_fingerprint", "corpus_size", "paths")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    HNSW_READY_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CORPUS_SIZE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    dim: int
    points: int
    engine: str
    distance: str
    hnsw_ready: bool
    corpus_fingerprint: str
    corpus_size: int
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., dim: _Optional[int] = ..., points: _Optional[int] = ..., engine: _Optional[str] = ..., distance: _Optional[str] = ..., hnsw_ready: _Optional[bool] = ..., corpus_fingerprint: _Optional[str] = ..., corpus_size: _Optional[int] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...
