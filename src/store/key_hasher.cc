#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "floodgate/store.h"
#include "src/store/siphash.h"

namespace floodgate {
namespace {

// Reads `len` bytes into `out` with `read_some` (getrandom or read), retrying after EINTR and
// short reads. Returns whether all of them arrived.
template <typename ReadSome>
bool ReadFully(unsigned char* out, size_t len, ReadSome read_some) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = read_some(out + done, len - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

// Fills `buf` from getrandom(2), falling back to /dev/urandom on kernels without the syscall.
// Returns false only when neither source works.
bool FillRandom(void* buf, size_t len) {
  auto* out = static_cast<unsigned char*>(buf);
  if (ReadFully(out, len, [](unsigned char* p, size_t n) { return getrandom(p, n, 0); })) {
    return true;
  }
  const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  const bool filled =
      ReadFully(out, len, [fd](unsigned char* p, size_t n) { return read(fd, p, n); });
  close(fd);
  return filled;
}

}  // namespace

KeyHasher KeyHasher::Random() {
  uint64_t key[2];
  if (!FillRandom(key, sizeof(key))) {
    // A guessable seed would let clients aim collisions at one shard; there is no safe
    // fallback, and a machine without any OS randomness cannot run the service anyway.
    std::fputs("floodgate: no OS randomness (getrandom and /dev/urandom failed)\n", stderr);
    std::abort();
  }
  return KeyHasher(key[0], key[1]);
}

uint64_t KeyHasher::Hash(std::string_view bytes) const {
  const uint64_t h = store::SipHash<1, 3>(k0_, k1_, bytes);
  // 0 marks an empty slot in the store. Folding it onto 1 makes 1 twice as likely as any other
  // value (2^-63 instead of 2^-64), which changes no collision bound that matters.
  return h != 0 ? h : 1;
}

}  // namespace floodgate
