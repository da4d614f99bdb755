// Cutting a byte stream into the pieces a socket might deliver, for the tests that feed the
// readers at every split point.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace ebb::test {

// `data` cut before each offset in `cuts` (ascending).
inline std::vector<std::string_view> split_at(std::string_view data, const std::vector<size_t>& cuts) {
  std::vector<std::string_view> pieces;
  size_t at = 0;
  for (size_t c : cuts) {
    pieces.push_back(data.substr(at, c - at));
    at = c;
  }
  pieces.push_back(data.substr(at));
  return pieces;
}

// 1, 2, ..., n-1: every byte its own piece.
inline std::vector<size_t> every_offset(size_t n) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < n; ++i) cuts.push_back(i);
  return cuts;
}

}  // namespace ebb::test
