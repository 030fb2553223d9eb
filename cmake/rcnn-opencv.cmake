# rcnn's component "opencv" (rcnn::opencv): finds OpenCV, then defines the target.
# Included by rcnnConfig.cmake when find_package(rcnn COMPONENTS opencv) asks for it.
set(rcnn_opencv_FOUND FALSE)
include(CMakeFindDependencyMacro)
# On failure find_dependency sets rcnn_FOUND to FALSE with a message and returns from this file.
find_dependency(OpenCV COMPONENTS core imgproc imgcodecs)
include("${CMAKE_CURRENT_LIST_DIR}/rcnn-opencvTargets.cmake")
set(rcnn_opencv_FOUND TRUE)
