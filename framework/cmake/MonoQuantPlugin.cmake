# mq_add_plugin(NAME <name> KIND <observer|quantizer|format|validator|architecture>
#               SOURCES <src>... [LIBRARIES <lib>...] [OUTPUT_DIRECTORY <dir>] [NO_INSTALL])
#
# Builds one plugin from the same sources twice over (DuckDB's loadable/static split):
#   mq_<kind>_<name>_objects  an OBJECT library a unit test can link directly;
#   mq_<kind>_<name>          the loadable module, file mq_<kind>_<name>.so, which the
#                             loader finds by its mq_ prefix.
function(mq_add_plugin)
  cmake_parse_arguments(ARG "NO_INSTALL" "NAME;KIND;OUTPUT_DIRECTORY" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_NAME OR NOT ARG_KIND OR NOT ARG_SOURCES)
    message(FATAL_ERROR "mq_add_plugin needs NAME, KIND and SOURCES")
  endif()
  if(NOT ARG_KIND MATCHES "^(observer|quantizer|format|validator|architecture)$")
    message(FATAL_ERROR "mq_add_plugin: KIND must be observer, quantizer, format, validator or architecture")
  endif()
  set(target mq_${ARG_KIND}_${ARG_NAME})
  add_library(${target}_objects OBJECT ${ARG_SOURCES})
  set_target_properties(${target}_objects PROPERTIES
    POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_compile_features(${target}_objects PUBLIC cxx_std_17)
  target_link_libraries(${target}_objects PUBLIC mq::framework ${ARG_LIBRARIES})
  # MQ_PLUGIN checks its NAME and KIND against these at compile time.
  target_compile_definitions(${target}_objects PRIVATE MQ_PLUGIN_TARGET_NAME="${ARG_NAME}"
    MQ_PLUGIN_TARGET_KIND="${ARG_KIND}")
  if(TARGET mq_pch)
    target_precompile_headers(${target}_objects REUSE_FROM mq_pch)
  endif()

  add_library(${target} MODULE)
  target_link_libraries(${target} PRIVATE ${target}_objects)
  set(output_dir ${CMAKE_CURRENT_BINARY_DIR})
  if(ARG_OUTPUT_DIRECTORY)
    set(output_dir ${ARG_OUTPUT_DIRECTORY})
  elseif(MQ_PLUGIN_OUTPUT_DIR)
    set(output_dir ${MQ_PLUGIN_OUTPUT_DIR})
  endif()
  set_target_properties(${target} PROPERTIES PREFIX "" LIBRARY_OUTPUT_DIRECTORY ${output_dir})
  if(MQ_PLUGIN_INSTALL_DIR AND NOT ARG_NO_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${MQ_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
