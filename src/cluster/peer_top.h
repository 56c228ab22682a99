#pragma once

// The top refused call of the peer protocol (GET /v1/top): asking one member over its link, and
// asking every live member at once and merging the answers. Kept out of tcp_peer_transport.cc,
// which holds the transport's connections and queues.
//
// Thread-safety: AskTopRefused may be called from any thread; its callback runs on the link's
// loop.

#include <string>

#include "absl/time/time.h"
#include "src/cluster/peer_link.h"
#include "src/cluster/peer_transport.h"

namespace floodgate::cluster {

// Sends a TopRefusedRequest on `link` (to member `member_id`, from `self_id`); `done` gets the
// answer, or the call's error, within `timeout`.
void AskTopRefused(PeerLink& link, const std::string& self_id, const std::string& member_id,
                   absl::Duration timeout, PeerTransport::TopRefusedDone done);

}  // namespace floodgate::cluster
