// The one place an absl::Status becomes a grpc::Status (DESIGN.md: convert in exactly one
// function), and back for client calls. Header-only so common/ needs no gRPC link; only service
// and client code includes it.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace dpinfer {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace dpinfer
