# rcnn's component "torch" (rcnn::torch): finds LibTorch (Torch), then defines the target.
# Included by rcnnConfig.cmake when find_package(rcnn COMPONENTS torch) asks for it.
set(rcnn_torch_FOUND FALSE)
include(CMakeFindDependencyMacro)
# On failure find_dependency sets rcnn_FOUND to FALSE with a message and returns from this file.
find_dependency(Torch)
include("${CMAKE_CURRENT_LIST_DIR}/rcnn-torchTargets.cmake")
set(rcnn_torch_FOUND TRUE)
