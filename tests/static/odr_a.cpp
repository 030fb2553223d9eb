// Included from two translation units: every public core header must be ODR-safe.
#include <rcnn/rcnn.hpp>
int odr_b();
int main() { return odr_b() == 0 ? 0 : 1; }
