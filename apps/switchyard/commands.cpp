#include "apps/switchyard/commands.hpp"

#include <exception>
#include <iostream>

#include <fmt/format.h>

namespace sy::apps {

int CommandTable::run_selected(const CLI::App& app) const {
  for (const CLI::App* sub : app.get_subcommands()) {
    const auto it = actions_.find(sub);
    if (it == actions_.end()) continue;
    try {
      return it->second();
    } catch (const std::exception& e) {
      std::cerr << fmt::format("switchyard {}: {}\n", sub->get_name(), e.what());
      return 1;
    }
  }
  std::cerr << "switchyard: no command selected\n";
  return 2;
}

}  // namespace sy::apps
