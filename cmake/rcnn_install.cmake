# Install rules: `cmake --install build --prefix P` gives
#   P/include/rcnn/...                      the headers
#   P/lib/cmake/rcnn/rcnnConfig.cmake       find_package(rcnn [COMPONENTS omp torch opencv])
#     rcnnConfigVersion.cmake, rcnnTargets.cmake (rcnn::rcnn) and one rcnn-<component>.cmake +
#     rcnn-<component>Targets.cmake per component (rcnn::omp, rcnn::torch, rcnn::opencv)
#   P/lib/pkgconfig/rcnn.pc                 the core, for pkg-config
#   P/bin/rcnn-detect, rcnn-bench, rcnn-eval, rcnn-export-torchvision, rcnn-export-detectron2
#   P/share/rcnn/tools/                     the Python exporters the rcnn-export-* wrappers run
# docs/how-to/use-rcnn-in-your-project.md.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(RCNN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/rcnn CACHE STRING
  "Where rcnnConfig.cmake is installed, relative to the prefix")
set(RCNN_EXPORT_PYTHON /usr/bin/python3 CACHE FILEPATH
  "Python (with torch) that the installed rcnn-export-* wrappers run")

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/rcnn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# One export set per target: a consumer loads only the components (and dependencies) it asks for.
install(TARGETS rcnn EXPORT rcnnTargets)
install(EXPORT rcnnTargets NAMESPACE rcnn:: DESTINATION ${RCNN_INSTALL_CMAKEDIR})
foreach(_c omp torch opencv)
  if(TARGET rcnn_${_c})
    install(TARGETS rcnn_${_c} EXPORT rcnn-${_c}Targets)
    install(EXPORT rcnn-${_c}Targets NAMESPACE rcnn:: DESTINATION ${RCNN_INSTALL_CMAKEDIR})
    install(FILES ${CMAKE_CURRENT_LIST_DIR}/rcnn-${_c}.cmake DESTINATION ${RCNN_INSTALL_CMAKEDIR})
  endif()
endforeach()

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/rcnnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/rcnnConfig.cmake INSTALL_DESTINATION ${RCNN_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API (CHANGELOG.md), so only the same minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/rcnnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${PROJECT_BINARY_DIR}/rcnnConfig.cmake ${PROJECT_BINARY_DIR}/rcnnConfigVersion.cmake
  DESTINATION ${RCNN_INSTALL_CMAKEDIR})

configure_file(${CMAKE_CURRENT_LIST_DIR}/rcnn.pc.in ${PROJECT_BINARY_DIR}/rcnn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/rcnn.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# OPTIONAL: the programs that were built (`cmake --build build --target rcnn-detect` is enough
# to install rcnn-detect and the library).
foreach(_app rcnn-detect rcnn-bench rcnn-eval)
  if(TARGET ${_app})
    install(TARGETS ${_app} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} OPTIONAL)
  endif()
endforeach()

# The exporters: the package and its entry scripts, and a wrapper per entry script in bin/.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/tools/rcnn_export DESTINATION ${CMAKE_INSTALL_DATADIR}/rcnn/tools
  PATTERN __pycache__ EXCLUDE)
foreach(_framework torchvision detectron2)
  install(PROGRAMS ${PROJECT_SOURCE_DIR}/tools/export_${_framework}.py
    DESTINATION ${CMAKE_INSTALL_DATADIR}/rcnn/tools)
  set(RCNN_EXPORT_SCRIPT export_${_framework}.py)
  file(RELATIVE_PATH RCNN_BIN_TO_TOOLS ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}
    ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATADIR}/rcnn/tools)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/rcnn-export.sh.in
    ${PROJECT_BINARY_DIR}/rcnn-export-${_framework} @ONLY)
  install(PROGRAMS ${PROJECT_BINARY_DIR}/rcnn-export-${_framework} DESTINATION ${CMAKE_INSTALL_BINDIR})
endforeach()
