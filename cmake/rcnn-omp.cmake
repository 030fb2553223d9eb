# rcnn's component "omp" (rcnn::omp): finds OpenMP, then defines the target.
# Included by rcnnConfig.cmake when find_package(rcnn COMPONENTS omp) asks for it.
set(rcnn_omp_FOUND FALSE)
include(CMakeFindDependencyMacro)
# On failure find_dependency sets rcnn_FOUND to FALSE with a message and returns from this file.
find_dependency(OpenMP COMPONENTS CXX)
include("${CMAKE_CURRENT_LIST_DIR}/rcnn-ompTargets.cmake")
set(rcnn_omp_FOUND TRUE)
