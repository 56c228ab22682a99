#pragma once

// POST /v1/simulate in the service's terms: a decoded request in, the answer's JSON out, by the
// real algorithms (core/simulate.h). Front ends decode the body; the rest is here, so that they
// need not know the core.
//
// Thread-safety: a pure function.

#include <string>

#include "absl/status/statusor.h"
#include "floodgate/v1/console.pb.h"

namespace floodgate::service {

// Returns {"steps":[...],"offered":[...],"algorithms":{"fixed_window":{"admitted":[...],
// "total":N},...}}; InvalidArgument naming the field for a value out of range or a trace past
// the bounds (core::kMaxSimulatedRequests, core::kMaxSimulationSteps).
absl::StatusOr<std::string> SimulateJson(const floodgate::v1::SimulateRequest& request);

}  // namespace floodgate::service
