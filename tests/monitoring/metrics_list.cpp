// Prints the metric table (monitoring/metrics.hpp), one family a line: "NAME TYPE UNIT labels=...
// buckets=... HELP". promtool_test.sh checks that every metric its alert rules name is listed.
#include <cstdio>

#include "monitoring/metrics.hpp"

int main() {
  std::fputs(sy::monitoring::table_text().c_str(), stdout);
  return 0;
}
