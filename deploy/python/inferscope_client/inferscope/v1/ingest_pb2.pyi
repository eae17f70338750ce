from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_BINARY_CLASSIFICATION: _ClassVar[TaskType]
    TASK_TYPE_MULTICLASS_CLASSIFICATION: _ClassVar[TaskType]
    TASK_TYPE_REGRESSION: _ClassVar[TaskType]
    TASK_TYPE_GENERATION: _ClassVar[TaskType]

class FeatureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_KIND_UNSPECIFIED: _ClassVar[FeatureKind]
    FEATURE_KIND_NUMERIC: _ClassVar[FeatureKind]
    FEATURE_KIND_CATEGORICAL: _ClassVar[FeatureKind]

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_REASON_MISSING_FIELD: _ClassVar[RejectReason]
    REJECT_REASON_INVALID_VALUE: _ClassVar[RejectReason]
    REJECT_REASON_TOO_LONG: _ClassVar[RejectReason]
    REJECT_REASON_TOO_MANY: _ClassVar[RejectReason]
    REJECT_REASON_SCHEMA_MISMATCH: _ClassVar[RejectReason]
    REJECT_REASON_UNKNOWN_CLASS: _ClassVar[RejectReason]
    REJECT_REASON_INVALID_TRACEPARENT: _ClassVar[RejectReason]
    REJECT_REASON_UNDECLARED_CLASS: _ClassVar[RejectReason]
    REJECT_REASON_MALFORMED: _ClassVar[RejectReason]
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_BINARY_CLASSIFICATION: TaskType
TASK_TYPE_MULTICLASS_CLASSIFICATION: TaskType
TASK_TYPE_REGRESSION: TaskType
TASK_TYPE_GENERATION: TaskType
FEATURE_KIND_UNSPECIFIED: FeatureKind
FEATURE_KIND_NUMERIC: FeatureKind
FEATURE_KIND_CATEGORICAL: FeatureKind
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_REASON_MISSING_FIELD: RejectReason
REJECT_REASON_INVALID_VALUE: RejectReason
REJECT_REASON_TOO_LONG: RejectReason
REJECT_REASON_TOO_MANY: RejectReason
REJECT_REASON_SCHEMA_MISMATCH: RejectReason
REJECT_REASON_UNKNOWN_CLASS: RejectReason
REJECT_REASON_INVALID_TRACEPARENT: RejectReason
REJECT_REASON_UNDECLARED_CLASS: RejectReason
REJECT_REASON_MALFORMED: RejectReason

class RecordBatch(_message.Message):
    __slots__ = ("sequence", "model", "version", "declarations", "records", "client_dropped_records")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_DROPPED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    model: str
    version: str
    declarations: _containers.RepeatedCompositeFieldContainer[ModelDeclaration]
    records: _containers.RepeatedCompositeFieldContainer[InferenceRecord]
    client_dropped_records: int
    def __init__(self, sequence: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., declarations: _Optional[_Iterable[_Union[ModelDeclaration, _Mapping]]] = ..., records: _Optional[_Iterable[_Union[InferenceRecord, _Mapping]]] = ..., client_dropped_records: _Optional[int] = ...) -> None: ...

class ModelDeclaration(_message.Message):
    __slots__ = ("model", "version", "task", "class_names", "positive_class", "features", "gen_ai_provider", "allow_undeclared_classes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_CLASS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    GEN_AI_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNDECLARED_CLASSES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    task: TaskType
    class_names: _containers.RepeatedScalarFieldContainer[str]
    positive_class: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureSpec]
    gen_ai_provider: str
    allow_undeclared_classes: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[_Union[TaskType, str]] = ..., class_names: _Optional[_Iterable[str]] = ..., positive_class: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureSpec, _Mapping]]] = ..., gen_ai_provider: _Optional[str] = ..., allow_undeclared_classes: bool = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("name", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: FeatureKind
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[FeatureKind, str]] = ...) -> None: ...

class InferenceRecord(_message.Message):
    __slots__ = ("model", "version", "request_id", "time_unix_nano", "latency_seconds", "error_type", "numeric_features", "categorical_features", "named_features", "classification", "regression", "generation", "label", "traceparent", "tracestate", "attributes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FEATURES_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    NAMED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    request_id: str
    time_unix_nano: int
    latency_seconds: float
    error_type: str
    numeric_features: _containers.RepeatedScalarFieldContainer[float]
    categorical_features: _containers.RepeatedScalarFieldContainer[str]
    named_features: _containers.RepeatedCompositeFieldContainer[NamedFeature]
    classification: Classification
    regression: Regression
    generation: Generation
    label: Label
    traceparent: str
    tracestate: str
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., request_id: _Optional[str] = ..., time_unix_nano: _Optional[int] = ..., latency_seconds: _Optional[float] = ..., error_type: _Optional[str] = ..., numeric_features: _Optional[_Iterable[float]] = ..., categorical_features: _Optional[_Iterable[str]] = ..., named_features: _Optional[_Iterable[_Union[NamedFeature, _Mapping]]] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., regression: _Optional[_Union[Regression, _Mapping]] = ..., generation: _Optional[_Union[Generation, _Mapping]] = ..., label: _Optional[_Union[Label, _Mapping]] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ...) -> None: ...

class NamedFeature(_message.Message):
    __slots__ = ("name", "number", "category")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: float
    category: str
    def __init__(self, name: _Optional[str] = ..., number: _Optional[float] = ..., category: _Optional[str] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("predicted_class", "predicted_class_index", "class_probabilities", "score")
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    predicted_class: str
    predicted_class_index: int
    class_probabilities: _containers.RepeatedScalarFieldContainer[float]
    score: float
    def __init__(self, predicted_class: _Optional[str] = ..., predicted_class_index: _Optional[int] = ..., class_probabilities: _Optional[_Iterable[float]] = ..., score: _Optional[float] = ...) -> None: ...

class Regression(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: float
    def __init__(self, value: _Optional[float] = ...) -> None: ...

class Generation(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "time_to_first_token_seconds", "finish_reason", "operation", "response_model")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    time_to_first_token_seconds: float
    finish_reason: str
    operation: str
    response_model: str
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., time_to_first_token_seconds: _Optional[float] = ..., finish_reason: _Optional[str] = ..., operation: _Optional[str] = ..., response_model: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("class_name", "class_index", "regression_value", "evaluation")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_VALUE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    class_index: int
    regression_value: float
    evaluation: Evaluation
    def __init__(self, class_name: _Optional[str] = ..., class_index: _Optional[int] = ..., regression_value: _Optional[float] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("name", "score", "label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    label: str
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class Attribute(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("sequence", "accepted", "rejects", "flags", "flags_dropped")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    accepted: int
    rejects: _containers.RepeatedCompositeFieldContainer[RecordReject]
    flags: _containers.RepeatedCompositeFieldContainer[RecordFlags]
    flags_dropped: int
    def __init__(self, sequence: _Optional[int] = ..., accepted: _Optional[int] = ..., rejects: _Optional[_Iterable[_Union[RecordReject, _Mapping]]] = ..., flags: _Optional[_Iterable[_Union[RecordFlags, _Mapping]]] = ..., flags_dropped: _Optional[int] = ...) -> None: ...

class RecordReject(_message.Message):
    __slots__ = ("index", "field", "reason", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    field: str
    reason: RejectReason
    message: str
    def __init__(self, index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[_Union[RejectReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class RecordFlags(_message.Message):
    __slots__ = ("index", "anomalies")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    index: int
    anomalies: _containers.RepeatedCompositeFieldContainer[AnomalyFlag]
    def __init__(self, index: _Optional[int] = ..., anomalies: _Optional[_Iterable[_Union[AnomalyFlag, _Mapping]]] = ...) -> None: ...

class AnomalyFlag(_message.Message):
    __slots__ = ("kind", "score", "subject")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    score: float
    subject: str
    def __init__(self, kind: _Optional[str] = ..., score: _Optional[float] = ..., subject: _Optional[str] = ...) -> None: ...

class LabelBatch(_message.Message):
    __slots__ = ("sequence", "model", "version", "labels")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    model: str
    version: str
    labels: _containers.RepeatedCompositeFieldContainer[GroundTruth]
    def __init__(self, sequence: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[GroundTruth, _Mapping]]] = ...) -> None: ...

class GroundTruth(_message.Message):
    __slots__ = ("model", "version", "request_id", "label", "time_unix_nano")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    request_id: str
    label: Label
    time_unix_nano: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., request_id: _Optional[str] = ..., label: _Optional[_Union[Label, _Mapping]] = ..., time_unix_nano: _Optional[int] = ...) -> None: ...

class LabelAck(_message.Message):
    __slots__ = ("sequence", "accepted", "rejects")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    accepted: int
    rejects: _containers.RepeatedCompositeFieldContainer[RecordReject]
    def __init__(self, sequence: _Optional[int] = ..., accepted: _Optional[int] = ..., rejects: _Optional[_Iterable[_Union[RecordReject, _Mapping]]] = ...) -> None: ...

class CaptureReferenceRequest(_message.Message):
    __slots__ = ("model", "version", "records")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    records: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., records: _Optional[int] = ...) -> None: ...

class CaptureReferenceResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: int
    def __init__(self, records: _Optional[int] = ...) -> None: ...

class ExportReferenceRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ExportReferenceResponse(_message.Message):
    __slots__ = ("profile_json",)
    PROFILE_JSON_FIELD_NUMBER: _ClassVar[int]
    profile_json: str
    def __init__(self, profile_json: _Optional[str] = ...) -> None: ...
