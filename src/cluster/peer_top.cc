#include "src/cluster/peer_top.h"

#include <memory>
#include <utility>

#include "src/cluster/peer_wire.h"

namespace floodgate::cluster {

void AskTopRefused(PeerLink& link, const std::string& self_id, const std::string& member_id,
                   absl::Duration timeout, PeerTransport::TopRefusedDone done) {
  peer::v1::TopRefusedRequest request;
  request.set_protocol_version(kPeerProtocolVersion);
  request.set_from(self_id);
  // The link either runs the callback or refuses the call; `done` must run once either way.
  auto shared = std::make_shared<PeerTransport::TopRefusedDone>(std::move(done));
  absl::Status queued =
      link.Call(FrameType::kTopRefused, request, timeout,
                [shared, member_id](absl::Status status, const Frame& frame) {
                  peer::v1::TopRefusedResponse response;
                  status = DecodeAnswer(std::move(status), frame, FrameType::kTopRefusedAnswer,
                                        &response, member_id);
                  if (!status.ok()) {
                    std::move (*shared)(std::move(status));
                    return;
                  }
                  std::move (*shared)(FromProto(response));
                });
  if (!queued.ok()) {
    std::move (*shared)(std::move(queued));
  }
}

}  // namespace floodgate::cluster
