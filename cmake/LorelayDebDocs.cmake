# Generates the two files Debian policy wants in /usr/share/doc/lorelay,
# from the files in this repository that already say the same thing, so
# neither is written twice:
#
#   MODE=copyright  SRC=LICENSE       -> DEST, machine-readable debian/copyright
#   MODE=changelog  SRC=CHANGELOG.md  -> DEST, Debian changelog, one entry per
#                                       released section, newest first
#
# Run at build time: cmake -DMODE=... -DSRC=... -DDEST=... -DVERSION=...
#   -DMAINTAINER="Name <address>" -P LorelayDebDocs.cmake
# The changelog's newest release must be VERSION (the project() version), so
# a version bump without its CHANGELOG.md entry fails the build instead of
# shipping a package whose changelog names another version.
cmake_minimum_required(VERSION 3.21)

foreach(v MODE SRC DEST MAINTAINER)
  if(NOT DEFINED ${v} OR "${${v}}" STREQUAL "")
    message(FATAL_ERROR "LorelayDebDocs.cmake: -D${v}= is required")
  endif()
endforeach()

# Splits a file into a list of its lines, empty ones included. CMake lists
# treat ';' as a separator and keep '[...]' together across separators, so
# those three characters travel as control characters until lorelay_line()
# puts them back in each line.
string(ASCII 2 lr_semi)
string(ASCII 3 lr_lbr)
string(ASCII 4 lr_rbr)
function(lorelay_read_lines file outvar)
  file(READ "${file}" t)
  string(REPLACE ";" "${lr_semi}" t "${t}")
  string(REPLACE "[" "${lr_lbr}" t "${t}")
  string(REPLACE "]" "${lr_rbr}" t "${t}")
  string(REPLACE "\n" ";" t "${t}")
  set(${outvar} "${t}" PARENT_SCOPE)
endfunction()
macro(lorelay_line var)
  string(REPLACE "${lr_semi}" ";" ${var} "${${var}}")
  string(REPLACE "${lr_lbr}" "[" ${var} "${${var}}")
  string(REPLACE "${lr_rbr}" "]" ${var} "${${var}}")
endmacro()

if(MODE STREQUAL "copyright")
  file(STRINGS "${SRC}" title LIMIT_COUNT 1)
  # The DEP-5 short name of the MIT licence text is "Expat"; any other
  # licence needs its own mapping, not a silent mislabel.
  if(NOT title STREQUAL "MIT License")
    message(FATAL_ERROR "${SRC}: first line is '${title}'; LorelayDebDocs.cmake only knows 'MIT License'")
  endif()
  set(holder "")
  set(body "")
  set(in_body OFF)
  lorelay_read_lines("${SRC}" text)
  foreach(l IN LISTS text)
    lorelay_line(l)
    if(l MATCHES "^Copyright \\(c\\) (.+)$")
      set(holder "${CMAKE_MATCH_1}")
    elseif(l MATCHES "^Permission is hereby granted")
      set(in_body ON)
    endif()
    if(in_body)
      if(l STREQUAL "")
        string(APPEND body " .\n")
      else()
        string(APPEND body " ${l}\n")
      endif()
    endif()
  endforeach()
  if(holder STREQUAL "" OR body STREQUAL "")
    message(FATAL_ERROR "${SRC}: no 'Copyright (c) ...' line or no licence text")
  endif()
  string(REGEX REPLACE "( \\.\n)+$" "" body "${body}")
  # The Format URI is the value DEP-5 requires to mark the file as
  # machine-readable.
  file(WRITE "${DEST}"
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    "Upstream-Name: lorelay\n"
    "Upstream-Contact: ${MAINTAINER}\n"
    "\n"
    "Files: *\n"
    "Copyright: ${holder}\n"
    "License: Expat\n"
    "${body}")
  return()
endif()

if(NOT MODE STREQUAL "changelog")
  message(FATAL_ERROR "LorelayDebDocs.cmake: unknown MODE '${MODE}'")
endif()
if(NOT DEFINED VERSION OR VERSION STREQUAL "")
  message(FATAL_ERROR "LorelayDebDocs.cmake: -DVERSION= is required")
endif()

lorelay_read_lines("${SRC}" text)

# "## [1.2.3] - 2026-11-30" opens a release; "## [Unreleased]" (or any
# other "## ") closes the one before it. Inside a release, "### Added"
# becomes "  * Added:" and each "- item" (with its two-space continuation
# lines) becomes "    - item", indented to fit Debian's 80 columns when the
# CHANGELOG.md line fits 76.
set(out "")
set(cur "")
set(newest "")
set(lineno 0)
set(entry "")
macro(lorelay_close_entry)
  if(cur)
    execute_process(COMMAND date -u -R -d "${cur_date} 00:00:00"
      OUTPUT_VARIABLE rfc_date OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "${SRC}: release ${cur} has a bad date '${cur_date}'")
    endif()
    string(REGEX REPLACE "\n+$" "\n" entry "${entry}")
    if(entry STREQUAL "")
      message(FATAL_ERROR "${SRC}: release ${cur} lists no changes")
    endif()
    string(APPEND out "lorelay (${cur}) unstable; urgency=medium\n\n${entry}\n"
                      " -- ${MAINTAINER}  ${rfc_date}\n\n")
  endif()
  set(cur "")
  set(entry "")
endmacro()
foreach(l IN LISTS text)
  lorelay_line(l)
  math(EXPR lineno "${lineno} + 1")
  if(l MATCHES "^## ")
    lorelay_close_entry()
    if(l MATCHES "^## \\[([0-9]+\\.[0-9]+\\.[0-9]+)\\] - ([0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9])$")
      set(cur "${CMAKE_MATCH_1}")
      set(cur_date "${CMAKE_MATCH_2}")
      if(newest STREQUAL "")
        set(newest "${cur}")
      endif()
    elseif(NOT l MATCHES "^## \\[Unreleased\\]$")
      message(FATAL_ERROR "${SRC}:${lineno}: want '## [X.Y.Z] - YYYY-MM-DD' or '## [Unreleased]', got '${l}'")
    endif()
    continue()
  endif()
  if(NOT cur)
    continue()
  endif()
  if(l MATCHES "^### (.+)$")
    string(APPEND entry "  * ${CMAKE_MATCH_1}:\n")
  elseif(l MATCHES "^- (.+)$")
    string(APPEND entry "    - ${CMAKE_MATCH_1}\n")
  elseif(l MATCHES "^  (.+)$")
    string(APPEND entry "      ${CMAKE_MATCH_1}\n")
  elseif(NOT l STREQUAL "")
    message(FATAL_ERROR "${SRC}:${lineno}: inside a release only '### Heading', '- item' and "
                        "two-space continuation lines are understood, got '${l}'")
  endif()
  string(LENGTH "${l}" len)
  if(len GREATER 76)
    message(FATAL_ERROR "${SRC}:${lineno}: ${len} characters; release notes lines must fit 76 "
                        "(the Debian changelog indents them by up to 4, within 80)")
  endif()
endforeach()
lorelay_close_entry()

if(NOT newest STREQUAL VERSION)
  if(newest STREQUAL "")
    set(newest "no release")
  endif()
  message(FATAL_ERROR "${SRC}: the newest release is ${newest}, but CMakeLists.txt's project() "
                      "says ${VERSION}: add a '## [${VERSION}] - YYYY-MM-DD' section")
endif()
string(REGEX REPLACE "\n+$" "\n" out "${out}")
file(WRITE "${DEST}" "${out}")
