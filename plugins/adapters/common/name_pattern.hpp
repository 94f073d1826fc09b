#pragma once
// Shared by the adapters that choose backbone modules or parameters by name (lora, freeze).
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>

namespace tlab_adapters {

// A name pattern: "re:<regex>" must match the whole name (ECMAScript syntax); anything else is
// a glob in which '*' matches any run of characters (dots included) and '?' one character.
class NamePattern {
 public:
  explicit NamePattern(std::string text) : text_(std::move(text)) {
    if (text_.rfind("re:", 0) == 0) {
      try {
        re_ = std::make_shared<std::regex>(text_.substr(3), std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw std::invalid_argument("pattern '" + text_ +
                                    "' is not a valid regular expression: " + e.what());
      }
    }
  }
  bool matches(const std::string& name) const {
    return re_ ? std::regex_match(name, *re_) : glob(text_.c_str(), name.c_str());
  }
  const std::string& text() const { return text_; }

 private:
  static bool glob(const char* p, const char* s) {
    const char* star = nullptr;
    const char* resume = nullptr;
    while (*s) {
      if (*p == '?' || (*p && *p != '*' && *p == *s)) {
        ++p, ++s;
      } else if (*p == '*') {
        star = p++;
        resume = s;
      } else if (star) {
        p = star + 1;
        s = ++resume;
      } else {
        return false;
      }
    }
    while (*p == '*') ++p;
    return !*p;
  }
  std::string text_;
  std::shared_ptr<std::regex> re_;
};

}  // namespace tlab_adapters
