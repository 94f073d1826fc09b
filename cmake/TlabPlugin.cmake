# tlab_add_plugin(NAME <name> KIND <backbone|adapter|strategy|dataset> SOURCES <files...>
#                 [OUTPUT_DIR <dir>])
#
# Builds one plugin library <name>.so into <plugins dir>/<kind folder>/ (backbones, adapters,
# strategies, datasets), with hidden visibility and
# the SDK (tlab::sdk, which carries LibTorch and its ABI flags) as its only project dependency.
# The plugin's name is its file stem; the loader checks it against the descriptor.
# The dynamic symbol table of a plugin holds exactly the two C symbols of TLAB_PLUGIN(): hidden
# visibility alone still exports weak instantiations of LibTorch's templates.
set(TLAB_PLUGIN_VERSION_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/tlab_plugin.map)

function(tlab_add_plugin)
  cmake_parse_arguments(ARG "" "NAME;KIND;OUTPUT_DIR" "SOURCES" ${ARGN})
  if(NOT ARG_NAME OR NOT ARG_KIND OR NOT ARG_SOURCES)
    message(FATAL_ERROR "tlab_add_plugin: NAME, KIND and SOURCES are required "
                        "(got NAME='${ARG_NAME}' KIND='${ARG_KIND}')")
  endif()
  set(kinds backbone adapter strategy dataset)
  if(NOT ARG_KIND IN_LIST kinds)
    message(FATAL_ERROR "tlab_add_plugin(${ARG_NAME}): KIND '${ARG_KIND}' is not one of: ${kinds}")
  endif()
  if(NOT ARG_OUTPUT_DIR)
    if(ARG_KIND STREQUAL "strategy")
      set(ARG_OUTPUT_DIR ${TLAB_PLUGIN_OUTPUT_DIR}/strategies)
    else()
      set(ARG_OUTPUT_DIR ${TLAB_PLUGIN_OUTPUT_DIR}/${ARG_KIND}s)
    endif()
  endif()
  set(target tlab_plugin_${ARG_KIND}_${ARG_NAME})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE tlab::sdk)
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME ${ARG_NAME}
    PREFIX ""
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIR})
  target_link_options(${target} PRIVATE "LINKER:--version-script=${TLAB_PLUGIN_VERSION_SCRIPT}")
  set_property(GLOBAL APPEND PROPERTY TLAB_PLUGIN_TARGETS ${target})
  if(TARGET tlab_plugin_pch)
    target_precompile_headers(${target} REUSE_FROM tlab_plugin_pch)
    target_include_directories(${target} PRIVATE
      $<TARGET_PROPERTY:tlab_plugin_pch,INTERFACE_INCLUDE_DIRECTORIES>)
  endif()
endfunction()
