"""Drives kouiki-mpi from Python grpcio over mutual TLS (run by tests/e2e/interop.rs).

Usage: grpc_interop.py ADDRESS CA_PEM CLIENT_PEM CLIENT_KEY
Prints one line per check; exits non-zero on the first failure.
"""
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    address, ca, cert, key = sys.argv[1:5]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    options = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(address, credentials, options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
        print("health SERVING")

        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = reflection.get_services()
        assert "kouiki.mpi.v1.QualificationHistory" in services, services
        print("reflection lists kouiki.mpi.v1.QualificationHistory")

        pool = descriptor_pool.DescriptorPool(reflection)
        service = pool.FindServiceByName("kouiki.mpi.v1.QualificationHistory")
        method = service.methods_by_name["AreSamePerson"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = request_class()
        request.first.patient.insured_id.parts.insurer_number = "01139012"
        request.first.patient.insured_id.parts.number = "4501"
        request.second.patient.insured_id.member_id = "01139013::4501:01"
        request.purpose = pool.FindEnumTypeByName("kouiki.mpi.v1.Purpose").values_by_name[
            "PURPOSE_IDENTITY_MANAGEMENT"
        ].number
        call = channel.unary_unary(
            "/kouiki.mpi.v1.QualificationHistory/AreSamePerson",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            call(request, timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            details = dict(error.trailing_metadata()).get("grpc-status-details-bin")
            assert details, "the status carries google.rpc error details"
            status = status_pb2.Status.FromString(details)
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    for violation in bad_request.field_violations:
                        print(f"AreSamePerson INVALID_ARGUMENT {violation.field}: {violation.description}")
            return
        raise AssertionError("AreSamePerson with a bad check digit was accepted")


if __name__ == "__main__":
    main()
