#include "src/service/simulate_json.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "src/core/simulate.h"

namespace floodgate::service {
namespace {

// Clamps a uint64 field into the simulator's int64 seconds: anything past the bound is refused
// there, with its message.
int64_t Seconds(uint64_t value) {
  return static_cast<int64_t>(std::min<uint64_t>(value, uint64_t{1} << 40));
}

template <typename T>
void AppendArray(const std::vector<T>& values, std::string& out) {
  out.push_back('[');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    absl::StrAppend(&out, values[i]);
  }
  out.push_back(']');
}

}  // namespace

absl::StatusOr<std::string> SimulateJson(const floodgate::v1::SimulateRequest& request) {
  core::SimulationInput in;
  in.limit = request.limit();
  in.period_seconds = Seconds(request.period_seconds());
  in.burst = request.burst();
  if (request.shape().empty()) {
    return absl::InvalidArgumentError("\"shape\" is required: steady, burst, ramp or edge");
  }
  absl::StatusOr<core::TrafficShape> shape = core::ParseTrafficShape(request.shape());
  if (!shape.ok()) {
    return shape.status();
  }
  in.shape = *shape;
  in.rate = request.rate();
  in.duration_seconds = Seconds(request.duration_seconds());
  in.step_seconds = request.step_seconds() == 0 ? 1 : Seconds(request.step_seconds());
  absl::StatusOr<core::SimulationResult> result = core::Simulate(in);
  if (!result.ok()) {
    return result.status();
  }
  std::string json = "{\"steps\":";
  AppendArray(result->step_starts_seconds, json);
  json.append(",\"offered\":");
  AppendArray(result->offered, json);
  json.append(",\"algorithms\":{");
  bool first = true;
  for (const core::AlgorithmSeries& series : result->algorithms) {
    if (!first) {
      json.push_back(',');
    }
    first = false;
    const std::string_view name = AlgorithmName(series.algorithm);
    json.push_back('"');
    json.append(name);
    json.append("\":{\"admitted\":");
    AppendArray(series.admitted, json);
    absl::StrAppend(&json, ",\"total\":", series.total, "}");
  }
  json.append("}}");
  return json;
}

}  // namespace floodgate::service
