#pragma once

// A unique temporary folder for a test, removed with everything in it when the object goes.

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace floodgate::testing {

class TempDir {
 public:
  // Makes <tmp>/<prefix>.XXXXXX (a test failure when it cannot).
  explicit TempDir(std::string_view prefix = "floodgate-test") {
    std::string pattern =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + ".XXXXXX")).string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr) << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  // Writes `text` (any string type that streams) to the file `name` in the folder; returns its
  // path.
  template <typename Text>
  std::string Write(const std::string& name, const Text& text) const {
    std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::trunc) << text;
    return file;
  }

 private:
  std::string path_;
};

}  // namespace floodgate::testing
