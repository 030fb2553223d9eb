# The library's targets, one per heavy dependency (docs/explanation/architecture.md):
#   rcnn::rcnn    INTERFACE, header-only core (Eigen, xtensor, nlohmann_json): no LibTorch, no OpenCV
#   rcnn::omp     rcnn::rcnn + OpenMP (OmpRoIAlign and other OpenMP policies)
#   rcnn::torch   executors that run TorchScript modules (LibTorch)
#   rcnn::opencv  image decoding and drawing (OpenCV)
find_package(Eigen3 3.3 REQUIRED NO_MODULE)
find_package(xtl REQUIRED)
find_package(xtensor REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)

add_library(rcnn INTERFACE)
add_library(rcnn::rcnn ALIAS rcnn)
target_include_directories(rcnn INTERFACE
  $<BUILD_INTERFACE:${CMAKE_CURRENT_LIST_DIR}/../include>
  $<INSTALL_INTERFACE:include>)
target_link_libraries(rcnn INTERFACE Eigen3::Eigen xtensor nlohmann_json::nlohmann_json)
target_compile_features(rcnn INTERFACE cxx_std_20)
# Parity with the frameworks needs float32 arithmetic in the written order: no FMA contraction.
target_compile_options(rcnn INTERFACE $<$<CXX_COMPILER_ID:GNU,Clang>:-ffp-contract=off>)

add_library(rcnn_omp INTERFACE)
add_library(rcnn::omp ALIAS rcnn_omp)
target_link_libraries(rcnn_omp INTERFACE rcnn OpenMP::OpenMP_CXX)

# LibTorch: Debian's libtorch-dev ships a CMake package (Torch).
find_package(Torch QUIET)
if(Torch_FOUND)
  add_library(rcnn_torch INTERFACE)
  add_library(rcnn::torch ALIAS rcnn_torch)
  target_link_libraries(rcnn_torch INTERFACE rcnn ${TORCH_LIBRARIES} ${CMAKE_DL_LIBS})
  set(RCNN_HAVE_TORCH ON)
  # CudaExec (rcnn/exec/cuda_exec.hpp) is compiled only against a LibTorch with CUDA.
  if(CAFFE2_USE_CUDA OR TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
    set(_rcnn_torch_has_cuda ON)
  else()
    set(_rcnn_torch_has_cuda OFF)
  endif()
  option(RCNN_WITH_CUDA "Compile CudaExec (needs a LibTorch built with CUDA)" ${_rcnn_torch_has_cuda})
  if(RCNN_WITH_CUDA)
    target_compile_definitions(rcnn_torch INTERFACE RCNN_WITH_CUDA=1)
  endif()
  message(STATUS "rcnn: CudaExec ${RCNN_WITH_CUDA} (LibTorch CUDA: ${_rcnn_torch_has_cuda})")
else()
  message(WARNING "LibTorch not found: rcnn::torch, rcnn-detect and the parity tests are skipped")
  set(RCNN_HAVE_TORCH OFF)
endif()

find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
if(OpenCV_FOUND)
  add_library(rcnn_opencv INTERFACE)
  add_library(rcnn::opencv ALIAS rcnn_opencv)
  target_include_directories(rcnn_opencv INTERFACE ${OpenCV_INCLUDE_DIRS})
  target_link_libraries(rcnn_opencv INTERFACE rcnn ${OpenCV_LIBS})
  set(RCNN_HAVE_OPENCV ON)
else()
  message(WARNING "OpenCV not found: rcnn::opencv and rcnn-detect are skipped")
  set(RCNN_HAVE_OPENCV OFF)
endif()

set(RCNN_WARNINGS -Wall -Wextra)
