#pragma once

// SipHash (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012), with the number of
// compression and finalization rounds as template parameters: SipHash<1, 3> is what KeyHasher
// uses (the variant Rust's std and CPython >= 3.11 use for hash tables); SipHash<2, 4> is the
// paper's default and exists so tests can check this code against the paper's vectors.
//
// Private to src/store: callers use floodgate::KeyHasher.

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace floodgate::store {

namespace siphash_internal {

inline uint64_t LoadLittleEndian64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  if constexpr (std::endian::native == std::endian::big) {
    v = __builtin_bswap64(v);
  }
  return v;
}

struct SipState {
  uint64_t v0, v1, v2, v3;

  inline void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
};

}  // namespace siphash_internal

// Returns SipHash-kCompressionRounds-kFinalizationRounds of `bytes` under the 128-bit key
// (k0, k1). The key bytes 00 01 .. 0f of the paper are k0 = 0x0706050403020100,
// k1 = 0x0f0e0d0c0b0a0908 (little-endian words).
template <int kCompressionRounds, int kFinalizationRounds>
uint64_t SipHash(uint64_t k0, uint64_t k1, std::string_view bytes) {
  siphash_internal::SipState s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
                               k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL};
  const char* p = bytes.data();
  const size_t n = bytes.size();
  const char* const end_of_words = p + (n & ~size_t{7});
  for (; p != end_of_words; p += 8) {
    const uint64_t m = siphash_internal::LoadLittleEndian64(p);
    s.v3 ^= m;
    for (int i = 0; i < kCompressionRounds; ++i) {
      s.Round();
    }
    s.v0 ^= m;
  }
  // The last word holds the 0..7 trailing bytes and the message length mod 256 in its top byte.
  uint64_t last = static_cast<uint64_t>(n) << 56;
  const size_t tail = n & 7;
  for (size_t i = 0; i < tail; ++i) {
    last |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  s.v3 ^= last;
  for (int i = 0; i < kCompressionRounds; ++i) {
    s.Round();
  }
  s.v0 ^= last;
  s.v2 ^= 0xff;
  for (int i = 0; i < kFinalizationRounds; ++i) {
    s.Round();
  }
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

}  // namespace floodgate::store
