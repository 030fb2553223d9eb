# The library's targets, one per heavy dependency (docs/explanation/architecture.md):
#   rcnn::rcnn    INTERFACE, header-only core (nlohmann_json, for the bundle reader): no LibTorch,
#                 no OpenCV, no OpenMP (the tests find xtensor for .npy files themselves)
#   rcnn::omp     rcnn::rcnn + OpenMP (OmpRoIAlign and other OpenMP policies)
#   rcnn::torch   executors that run TorchScript modules (LibTorch)
#   rcnn::opencv  image decoding and drawing (OpenCV)
# Each dependency is looked for here, by the target that needs it, so that rcnn works as a
# subproject (add_subdirectory, FetchContent) without the parent finding anything first; the
# installed package does the same per component (cmake/rcnnConfig.cmake.in).
include_guard(GLOBAL)

# find_package(ARGS...) that makes the imported targets it creates visible in every directory
# (IMPORTED_GLOBAL). Imported targets are otherwise scoped to the directory that found them:
# a parent project linking rcnn::torch would fail with `Target "torch" not found`. Targets that
# already existed (found by the parent) are left as they are.
macro(rcnn_find_package)
  get_directory_property(_rcnn_imported_before IMPORTED_TARGETS)
  find_package(${ARGV})
  get_directory_property(_rcnn_imported_after IMPORTED_TARGETS)
  foreach(_rcnn_t IN LISTS _rcnn_imported_after)
    if(NOT _rcnn_t IN_LIST _rcnn_imported_before)
      get_target_property(_rcnn_global ${_rcnn_t} IMPORTED_GLOBAL)
      if(NOT _rcnn_global)
        set_target_properties(${_rcnn_t} PROPERTIES IMPORTED_GLOBAL TRUE)
      endif()
    endif()
  endforeach()
endmacro()

rcnn_find_package(nlohmann_json 3 REQUIRED)

add_library(rcnn INTERFACE)
add_library(rcnn::rcnn ALIAS rcnn)
target_include_directories(rcnn INTERFACE
  $<BUILD_INTERFACE:${CMAKE_CURRENT_LIST_DIR}/../include>
  $<INSTALL_INTERFACE:include>)
target_link_libraries(rcnn INTERFACE nlohmann_json::nlohmann_json)
target_compile_features(rcnn INTERFACE cxx_std_20)
# Parity with the frameworks needs float32 arithmetic in the written order: no FMA contraction.
target_compile_options(rcnn INTERFACE $<$<CXX_COMPILER_ID:GNU,Clang>:-ffp-contract=off>)

rcnn_find_package(OpenMP COMPONENTS CXX)
if(OpenMP_CXX_FOUND)
  add_library(rcnn_omp INTERFACE)
  add_library(rcnn::omp ALIAS rcnn_omp)
  set_target_properties(rcnn_omp PROPERTIES EXPORT_NAME omp)
  target_link_libraries(rcnn_omp INTERFACE rcnn OpenMP::OpenMP_CXX)
  set(RCNN_HAVE_OPENMP ON)
else()
  message(WARNING "OpenMP not found: rcnn::omp (OmpRoIAlign, OpenMP mask pastes) and the apps are skipped")
  set(RCNN_HAVE_OPENMP OFF)
endif()

# LibTorch: Debian's libtorch-dev ships a CMake package (Torch).
rcnn_find_package(Torch QUIET)
if(Torch_FOUND)
  add_library(rcnn_torch INTERFACE)
  add_library(rcnn::torch ALIAS rcnn_torch)
  set_target_properties(rcnn_torch PROPERTIES EXPORT_NAME torch)
  # TORCH_LIBRARIES is `torch torch_library <path of libc10>`: link the targets (c10 comes
  # with torch), so that the installed rcnnTargets names no absolute path.
  target_link_libraries(rcnn_torch INTERFACE rcnn torch $<TARGET_NAME_IF_EXISTS:torch_library>
                                             ${CMAKE_DL_LIBS})
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

rcnn_find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
if(OpenCV_FOUND)
  add_library(rcnn_opencv INTERFACE)
  add_library(rcnn::opencv ALIAS rcnn_opencv)
  set_target_properties(rcnn_opencv PROPERTIES EXPORT_NAME opencv)
  # OpenCV's imported targets carry their include directories.
  target_link_libraries(rcnn_opencv INTERFACE rcnn opencv_core opencv_imgproc opencv_imgcodecs)
  set(RCNN_HAVE_OPENCV ON)
else()
  message(WARNING "OpenCV not found: rcnn::opencv and rcnn-detect are skipped")
  set(RCNN_HAVE_OPENCV OFF)
endif()
