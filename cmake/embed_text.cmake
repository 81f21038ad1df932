# Writes a C++ source file that embeds a text file as a raw string literal, returned by
# a function `std::string_view NAMESPACE::FUNCTION()` declared in HEADER.
#
#   cmake -DINPUT=<file> -DOUTPUT=<file.cpp> -DHEADER=<include> -DNAMESPACE=<ns> -DFUNCTION=<name> -P embed_text.cmake
#
# Fails when the text contains the literal's closing sequence, so it can never be cut short.

foreach(var INPUT OUTPUT HEADER NAMESPACE FUNCTION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_text.cmake: -D${var}=... is required")
  endif()
endforeach()

set(delimiter "sg_embed_")
file(READ "${INPUT}" content)
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "embed_text.cmake: ${INPUT} contains ')${delimiter}\"'; pick another raw string delimiter")
endif()

set(source "// Generated from ${INPUT} by cmake/embed_text.cmake at build time; do not edit.\n")
string(APPEND source "#include \"${HEADER}\"\n\n")
string(APPEND source "namespace ${NAMESPACE} {\n\n")
string(APPEND source "std::string_view ${FUNCTION}() {\n")
string(APPEND source "  static constexpr std::string_view text = R\"${delimiter}(")
string(APPEND source "${content}")
string(APPEND source ")${delimiter}\";\n")
string(APPEND source "  return text;\n}\n\n}  // namespace ${NAMESPACE}\n")

file(WRITE "${OUTPUT}" "${source}")
