"""The committed stubs are what ``make proto`` generates, and speak KEDA's contract."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from scaler.keda import codegen
from scaler.keda.proto import externalscaler_pb2 as pb

F = FieldDescriptor


def test_regenerating_the_stubs_changes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scaler.keda.codegen", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(codegen.GENERATED)
    for name in codegen.GENERATED:
        fresh = (tmp_path / name).read_bytes()
        assert fresh == (codegen.OUT / name).read_bytes(), f"{name} is stale: run make proto"


def test_the_service_stub_imports_the_messages_relative_to_its_package() -> None:
    text = (codegen.OUT / "externalscaler_pb2_grpc.py").read_text()
    assert "from . import externalscaler_pb2 as externalscaler__pb2" in text


def fields(message: Descriptor) -> dict[str, tuple[int, int, bool]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}


def test_messages_have_kedas_field_names_numbers_and_types() -> None:
    assert pb.DESCRIPTOR.package == "externalscaler"
    described = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(described)  # protobuf 7 dropped FileDescriptor.syntax
    assert described.syntax == "proto3"
    messages = pb.DESCRIPTOR.message_types_by_name
    assert fields(messages["ScaledObjectRef"]) == {
        "name": (1, F.TYPE_STRING, False),
        "namespace": (2, F.TYPE_STRING, False),
        "scalerMetadata": (3, F.TYPE_MESSAGE, True),
    }
    entry = messages["ScaledObjectRef"].fields_by_name["scalerMetadata"].message_type
    assert entry is not None
    assert entry.GetOptions().map_entry
    assert fields(entry) == {"key": (1, F.TYPE_STRING, False), "value": (2, F.TYPE_STRING, False)}
    assert fields(messages["IsActiveResponse"]) == {"result": (1, F.TYPE_BOOL, False)}
    assert fields(messages["GetMetricSpecResponse"]) == {"metricSpecs": (1, F.TYPE_MESSAGE, True)}
    assert fields(messages["MetricSpec"]) == {
        "metricName": (1, F.TYPE_STRING, False),
        "targetSize": (2, F.TYPE_INT64, False),
        "targetSizeFloat": (3, F.TYPE_DOUBLE, False),
    }
    assert fields(messages["GetMetricsRequest"]) == {
        "scaledObjectRef": (1, F.TYPE_MESSAGE, False),
        "metricName": (2, F.TYPE_STRING, False),
    }
    assert fields(messages["GetMetricsResponse"]) == {"metricValues": (1, F.TYPE_MESSAGE, True)}
    assert fields(messages["MetricValue"]) == {
        "metricName": (1, F.TYPE_STRING, False),
        "metricValue": (2, F.TYPE_INT64, False),
        "metricValueFloat": (3, F.TYPE_DOUBLE, False),
    }


def test_the_service_has_kedas_methods() -> None:
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    assert service.full_name == "externalscaler.ExternalScaler"
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in service.methods
    }
    assert methods == {
        "IsActive": ("ScaledObjectRef", "IsActiveResponse", False, False),
        "StreamIsActive": ("ScaledObjectRef", "IsActiveResponse", False, True),
        "GetMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", False, False),
        "GetMetrics": ("GetMetricsRequest", "GetMetricsResponse", False, False),
        "StreamMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", False, True),
    }


def test_wire_bytes_match_a_hand_encoding() -> None:
    """Field numbers and wire types, byte for byte, as KEDA's Go side decodes them."""
    value = pb.MetricValue(metricName="m", metricValue=5, metricValueFloat=5.0)
    assert value.SerializeToString() == b"\x0a\x01m" + b"\x10\x05" + b"\x19" + struct.pack(
        "<d", 5.0
    )
    spec = pb.MetricSpec(metricName="m", targetSize=100, targetSizeFloat=100.0)
    assert spec.SerializeToString() == b"\x0a\x01m" + b"\x10\x64" + b"\x19" + struct.pack(
        "<d", 100.0
    )
    request = pb.GetMetricsRequest(
        scaledObjectRef=pb.ScaledObjectRef(name="n", namespace="s", scalerMetadata={"k": "v"}),
        metricName="m",
    )
    entry = b"\x0a\x01k\x12\x01v"
    inner = b"\x0a\x01n" + b"\x12\x01s" + b"\x1a" + bytes([len(entry)]) + entry
    assert request.SerializeToString() == b"\x0a" + bytes([len(inner)]) + inner + b"\x12\x01m"
    assert pb.IsActiveResponse(result=True).SerializeToString() == b"\x08\x01"
