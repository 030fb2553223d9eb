# Drives the package tests (tests/CMakeLists.txt: package.installed, package.subdirectory):
#   cmake -DMODE=installed|subdirectory -DRCNN_BUILD=... -DRCNN_SOURCE=... -DWORK=... \
#         -DDETECT=rcnn-detect -DBUNDLE=... -DIMAGES="a;b" -DGENERATOR=... [-DCXX=...] [-DLAUNCHER=...] -P run.cmake
# installed:    cmake --install RCNN_BUILD into WORK/prefix, then configure tests/package with
#               find_package(rcnn REQUIRED COMPONENTS torch opencv) against it
# subdirectory: configure tests/package with add_subdirectory(RCNN_SOURCE), no build type
# then build the consumer, run rcnn-detect and the consumer on IMAGES, and compare.
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    list(JOIN ARGV " " cmd)
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  message(STATUS "ok: ${ARGV0} ... ${out}")
endfunction()

string(REPLACE "|" ";" IMAGES "${IMAGES}")  # "a|b": one ctest argument
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(configure ${CMAKE_COMMAND} -S ${RCNN_SOURCE}/tests/package -B ${WORK}/build -G ${GENERATOR})
if(CXX)
  list(APPEND configure -DCMAKE_CXX_COMPILER=${CXX})
endif()
if(LAUNCHER)
  list(APPEND configure -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
if(MODE STREQUAL "installed")
  run(${CMAKE_COMMAND} --install ${RCNN_BUILD} --prefix ${WORK}/prefix)
  foreach(f lib/cmake/rcnn/rcnnConfig.cmake lib/cmake/rcnn/rcnnConfigVersion.cmake
            lib/cmake/rcnn/rcnnTargets.cmake lib/pkgconfig/rcnn.pc include/rcnn/version.hpp
            bin/rcnn-detect bin/rcnn-export-torchvision bin/rcnn-export-detectron2
            share/rcnn/tools/export_torchvision.py)
    if(NOT EXISTS ${WORK}/prefix/${f})
      message(FATAL_ERROR "not installed: ${f}")
    endif()
  endforeach()
  run(${configure} -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${WORK}/prefix)
  set(detect ${WORK}/prefix/bin/rcnn-detect)  # the installed program
elseif(MODE STREQUAL "subdirectory")
  run(${configure} -DRCNN_SOURCE_DIR=${RCNN_SOURCE})
  set(detect ${DETECT})
else()
  message(FATAL_ERROR "MODE must be installed or subdirectory")
endif()
run(${CMAKE_COMMAND} --build ${WORK}/build --target consumer)
run(${detect} --model ${BUNDLE} --threads 1 --quiet --output ${WORK}/expected.json ${IMAGES})
run(${WORK}/build/consumer ${BUNDLE} ${WORK}/expected.json ${IMAGES})
