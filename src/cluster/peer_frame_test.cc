#include "src/cluster/peer_frame.h"

#include <string>

#include "absl/base/internal/endian.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "gtest/gtest.h"

namespace floodgate::cluster {
namespace {

namespace pb = ::floodgate::peer::v1;

pb::FetchRequest Fetch(int keys) {
  pb::FetchRequest request;
  for (int i = 0; i < keys; ++i) {
    request.add_key_hashes(1000 + i);
  }
  return request;
}

TEST(PeerFrameTest, HeaderIsLittleEndianLengthTypeCallId) {
  std::string out;
  ASSERT_TRUE(AppendFrame(FrameType::kFetch, 0x0102030405060708ULL, Fetch(2), &out).ok());
  const size_t payload = Fetch(2).ByteSizeLong();
  ASSERT_EQ(out.size(), kFrameHeaderSize + payload);
  EXPECT_EQ(absl::little_endian::Load32(out.data()), payload);
  EXPECT_EQ(static_cast<uint8_t>(out[4]), static_cast<uint8_t>(FrameType::kFetch));
  EXPECT_EQ(static_cast<uint8_t>(out[5]), 0x08);  // call id, low byte first
  EXPECT_EQ(absl::little_endian::Load64(out.data() + 5), 0x0102030405060708ULL);
}

TEST(PeerFrameTest, DecodesFramesFedByteByByte) {
  std::string stream;
  ASSERT_TRUE(AppendFrame(FrameType::kFetch, 7, Fetch(3), &stream).ok());
  ASSERT_TRUE(AppendFrame(FrameType::kPing, 9, pb::PingRequest(), &stream).ok());  // empty
  ASSERT_TRUE(AppendFrame(FrameType::kFetchAnswer, 8, Fetch(1), &stream).ok());
  FrameDecoder decoder;
  std::vector<std::pair<Frame, std::string>> frames;
  for (char c : stream) {
    decoder.Feed(std::string_view(&c, 1));
    Frame frame;
    bool got = false;
    ASSERT_TRUE(decoder.Next(&frame, &got).ok());
    if (got) {
      frames.emplace_back(frame, std::string(frame.payload));
    }
  }
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].first.type, FrameType::kFetch);
  EXPECT_EQ(frames[0].first.call_id, 7u);
  pb::FetchRequest decoded;
  ASSERT_TRUE(decoded.ParseFromString(frames[0].second));
  EXPECT_EQ(decoded.key_hashes_size(), 3);
  EXPECT_EQ(decoded.key_hashes(2), 1002u);
  EXPECT_EQ(frames[1].first.type, FrameType::kPing);
  EXPECT_EQ(frames[1].first.call_id, 9u);
  EXPECT_TRUE(frames[1].second.empty());
  EXPECT_EQ(frames[2].first.type, FrameType::kFetchAnswer);
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(PeerFrameTest, DecodesManyFramesFromOneRead) {
  std::string stream;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(AppendFrame(FrameType::kForward, i, pb::ForwardRequest(), &stream).ok());
  }
  FrameDecoder decoder;
  decoder.Feed(stream);
  Frame frame;
  bool got = false;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(decoder.Next(&frame, &got).ok());
    ASSERT_TRUE(got);
    EXPECT_EQ(frame.call_id, static_cast<uint64_t>(i));
  }
  ASSERT_TRUE(decoder.Next(&frame, &got).ok());
  EXPECT_FALSE(got);
}

TEST(PeerFrameTest, OversizedFrameIsRefusedFromItsHeader) {
  char header[kFrameHeaderSize];
  EncodeFrameHeader({kMaxPayload + 1, FrameType::kForward, 1}, header);
  FrameDecoder decoder;
  decoder.Feed(std::string_view(header, sizeof(header)));
  Frame frame;
  bool got = false;
  const absl::Status status = decoder.Next(&frame, &got);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("at most 16777216"), std::string::npos) << status;
  EXPECT_FALSE(got);

  // The largest allowed payload is only waited for.
  EncodeFrameHeader({kMaxPayload, FrameType::kForward, 1}, header);
  FrameDecoder patient;
  patient.Feed(std::string_view(header, sizeof(header)));
  EXPECT_TRUE(patient.Next(&frame, &got).ok());
  EXPECT_FALSE(got);
}

TEST(PeerFrameTest, UnknownTypeAndNonFrameBytesAreRefused) {
  char header[kFrameHeaderSize];
  EncodeFrameHeader({0, static_cast<FrameType>(77), 1}, header);
  FrameDecoder decoder;
  decoder.Feed(std::string_view(header, sizeof(header)));
  Frame frame;
  bool got = false;
  const absl::Status status = decoder.Next(&frame, &got);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("unknown frame type 77"), std::string::npos) << status;

  // An HTTP/2 client (the grpc++ release's peer transport) is refused at its preface.
  FrameDecoder h2;
  h2.Feed("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  EXPECT_FALSE(h2.Next(&frame, &got).ok());
}

TEST(PeerFrameTest, FrameTypeNames) {
  EXPECT_EQ(FrameTypeName(static_cast<uint8_t>(FrameType::kHello)), "hello");
  EXPECT_EQ(FrameTypeName(static_cast<uint8_t>(FrameType::kReplicateAnswer)), "replicate answer");
  EXPECT_EQ(FrameTypeName(static_cast<uint8_t>(FrameType::kGetConfigAnswer)), "get config answer");
  EXPECT_EQ(FrameTypeName(static_cast<uint8_t>(FrameType::kTopRefusedAnswer)),
            "top refused answer");
  EXPECT_TRUE(KnownFrameType(static_cast<uint8_t>(FrameType::kTopRefused)));
  EXPECT_FALSE(KnownFrameType(24));
  EXPECT_EQ(FrameTypeName(9), "unknown(9)");
  EXPECT_FALSE(KnownFrameType(0));
  EXPECT_TRUE(KnownFrameType(static_cast<uint8_t>(FrameType::kError)));
}

}  // namespace
}  // namespace floodgate::cluster
