#include <rcnn/rcnn.hpp>
int odr_b() { return 0; }
