#include "src/core/simulate.h"

#include <numeric>

#include "gtest/gtest.h"

namespace floodgate::core {
namespace {

SimulationInput Input(TrafficShape shape) {
  SimulationInput in;
  in.limit = 10;
  in.period_seconds = 60;
  in.shape = shape;
  in.rate = 20;
  in.duration_seconds = 180;
  in.step_seconds = 1;
  return in;
}

const AlgorithmSeries& Of(const SimulationResult& r, Algorithm a) {
  for (const AlgorithmSeries& s : r.algorithms) {
    if (s.algorithm == a) {
      return s;
    }
  }
  ADD_FAILURE() << "no series";
  return r.algorithms.front();
}

uint64_t Sum(const std::vector<uint64_t>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + from, v.begin() + to, uint64_t{0});
}

TEST(SimulateTest, SteadyTrace) {
  absl::StatusOr<SimulationResult> r = Simulate(Input(TrafficShape::kSteady));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->step_starts_seconds.size(), 180u);
  EXPECT_EQ(r->step_starts_seconds[1], 1);
  EXPECT_EQ(Sum(r->offered, 0, 180), 3600u);
  EXPECT_EQ(r->offered[0], 20u);
  ASSERT_EQ(r->algorithms.size(), 4u);
  // Three windows of 10 each.
  EXPECT_EQ(Of(*r, Algorithm::kFixedWindow).total, 30u);
  EXPECT_EQ(Sum(Of(*r, Algorithm::kFixedWindow).admitted, 0, 60), 10u);
  // The windows admit about 10 per minute under a steady overload; the buckets start full, so
  // they add their capacity (10) to the rate's 30.
  EXPECT_NEAR(Of(*r, Algorithm::kSlidingWindow).total, 30, 2);
  EXPECT_NEAR(Of(*r, Algorithm::kTokenBucket).total, 40, 1);
  EXPECT_NEAR(Of(*r, Algorithm::kLeakyBucket).total, 40, 1);
}

TEST(SimulateTest, BurstTraceFillsEachWindowAtOnce) {
  absl::StatusOr<SimulationResult> r = Simulate(Input(TrafficShape::kBurst));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->offered[0], 1200u);  // 20/s × 60 s at the start of each period
  EXPECT_EQ(r->offered[60], 1200u);
  EXPECT_EQ(r->offered[1], 0u);
  EXPECT_EQ(Of(*r, Algorithm::kFixedWindow).admitted[0], 10u);
  EXPECT_EQ(Of(*r, Algorithm::kTokenBucket).admitted[0], 10u);  // the bucket's capacity
}

TEST(SimulateTest, RampTraceGrows) {
  absl::StatusOr<SimulationResult> r = Simulate(Input(TrafficShape::kRamp));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Sum(r->offered, 0, 180), 3600u);
  EXPECT_LT(Sum(r->offered, 0, 60), Sum(r->offered, 60, 120));
  EXPECT_LT(Sum(r->offered, 60, 120), Sum(r->offered, 120, 180));
}

TEST(SimulateTest, EdgeOfWindowShowsTheFixedWindowsDoubleBurst) {
  SimulationInput in = Input(TrafficShape::kEdge);
  in.duration_seconds = 120;  // the boundary at 60 s
  absl::StatusOr<SimulationResult> r = Simulate(in);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->offered[59], 20u);
  EXPECT_EQ(r->offered[60], 20u);
  EXPECT_EQ(Sum(r->offered, 0, 120), 40u);
  // Within two seconds around the boundary the fixed window admits twice its limit...
  EXPECT_EQ(Sum(Of(*r, Algorithm::kFixedWindow).admitted, 59, 61), 20u);
  // ...the sliding window about its limit: the previous window's hits still weigh.
  EXPECT_LE(Sum(Of(*r, Algorithm::kSlidingWindow).admitted, 59, 61), 11u);
  EXPECT_GE(Sum(Of(*r, Algorithm::kSlidingWindow).admitted, 59, 61), 10u);
  EXPECT_LE(Of(*r, Algorithm::kTokenBucket).total, 11u);
}

TEST(SimulateTest, RefusesUnboundedOrBadInput) {
  SimulationInput in = Input(TrafficShape::kSteady);
  in.rate = 1000;
  in.duration_seconds = 1000;  // 1M requests
  EXPECT_EQ(Simulate(in).status().code(), absl::StatusCode::kInvalidArgument);
  in = Input(TrafficShape::kSteady);
  in.duration_seconds = 3000;  // 3000 steps
  EXPECT_EQ(Simulate(in).status().code(), absl::StatusCode::kInvalidArgument);
  in = Input(TrafficShape::kSteady);
  in.rate = 0;
  EXPECT_EQ(Simulate(in).status().code(), absl::StatusCode::kInvalidArgument);
  in = Input(TrafficShape::kSteady);
  in.period_seconds = 0;
  EXPECT_EQ(Simulate(in).status().code(), absl::StatusCode::kInvalidArgument);
  in = Input(TrafficShape::kEdge);
  in.duration_seconds = 30;  // no window boundary inside the trace
  EXPECT_EQ(Simulate(in).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTrafficShape("zigzag").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseTrafficShape("edge"), TrafficShape::kEdge);
}

}  // namespace
}  // namespace floodgate::core
