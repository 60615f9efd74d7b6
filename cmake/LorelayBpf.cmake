# The agent's eBPF listener trigger (guest/bpf/listen_trace.bpf.c), built
# into lorelay-agent:
#   clang       compiles the program: clang -target bpf -g -O2
#   bpftool     the DWARF-free object (gen object) and the skeleton header
#               (gen skeleton) that embeds it
#   libbpf      loads it at run time (Debian: libbpf-dev to build, libbpf1 to run)
# The kernel types come from guest/bpf/vmlinux_min.h, committed with the
# source, not from the build machine's /sys/kernel/btf/vmlinux: the object
# is the same whatever kernel builds it (a container, a kernel without BTF),
# and its CO-RE relocations are resolved by libbpf against the running
# kernel's BTF when the agent loads it.
#
# LORELAY_EBPF: ON (default) fails the configure, naming what is missing,
# when clang, bpftool or libbpf-dev is not here, so a CI or release build
# can never ship an agent without eBPF by accident; OFF builds the agent
# polling only (lr_bpfwatch.c without the skeleton), for those who choose
# it. A cross build (the Windows one) has no agent and is always OFF.
#
# tests/bpf checks the object: rebuilt with the kernel BTF hidden it is the
# same byte for byte, and its CO-RE relocations resolve on this kernel.
#
# Sets LORELAY_EBPF_BUILT (ON/OFF) and LORELAY_EBPF_MISSING (why not), also
# as global properties of those names for the tests, and defines
# lorelay_bpf_enable(target).
include_guard(GLOBAL)

option(LORELAY_EBPF "Build the agent's eBPF listener trigger (OFF: the agent polls only)" ON)

set(LORELAY_EBPF_BUILT OFF)
set(LORELAY_EBPF_MISSING "")

set_property(GLOBAL PROPERTY LORELAY_EBPF_BUILT OFF)
if(CMAKE_CROSSCOMPILING)
  set(LORELAY_EBPF_MISSING "not built in a cross build")
  function(lorelay_bpf_enable target)
  endfunction()
  return()
endif()
if(NOT LORELAY_EBPF)
  set(LORELAY_EBPF_MISSING "disabled (LORELAY_EBPF=${LORELAY_EBPF})")
  set_property(GLOBAL PROPERTY LORELAY_EBPF_MISSING "${LORELAY_EBPF_MISSING}")
  message(STATUS "lorelay: eBPF listener trigger disabled (LORELAY_EBPF=${LORELAY_EBPF}): "
                 "lorelay-agent polls only")
  function(lorelay_bpf_enable target)
  endfunction()
  return()
endif()

find_program(LORELAY_CLANG NAMES clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14)
# bpftool is in sbin on Debian, which a user's PATH may lack.
find_program(LORELAY_BPFTOOL bpftool PATHS /usr/sbin /sbin /usr/local/sbin)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(LIBBPF QUIET IMPORTED_TARGET libbpf)
endif()

set(_lr_missing "")
if(NOT LORELAY_CLANG)
  list(APPEND _lr_missing "clang (apt-get install clang)")
endif()
if(NOT LORELAY_BPFTOOL)
  list(APPEND _lr_missing "bpftool (apt-get install bpftool)")
endif()
if(NOT LIBBPF_FOUND)
  list(APPEND _lr_missing "libbpf (apt-get install libbpf-dev)")
endif()

if(_lr_missing)
  list(JOIN _lr_missing ", " LORELAY_EBPF_MISSING)
  set(LORELAY_EBPF_MISSING "missing ${LORELAY_EBPF_MISSING}")
  message(FATAL_ERROR "lorelay: the agent's eBPF listener trigger cannot be built: "
                      "${LORELAY_EBPF_MISSING}. Install them (scripts/deps.sh run), or "
                      "configure with -DLORELAY_EBPF=OFF for an agent that polls only.")
endif()

set(LORELAY_EBPF_BUILT ON)
set_property(GLOBAL PROPERTY LORELAY_EBPF_BUILT ON)
message(STATUS "lorelay: eBPF listener trigger enabled (${LORELAY_CLANG}, ${LORELAY_BPFTOOL}, "
               "libbpf ${LIBBPF_VERSION})")

# __TARGET_ARCH_* for bpf_tracing.h.
set(_lr_arch ${CMAKE_SYSTEM_PROCESSOR})
if(_lr_arch MATCHES "^(x86_64|AMD64|amd64|i.86)$")
  set(_lr_arch x86)
elseif(_lr_arch MATCHES "^(aarch64|arm64)$")
  set(_lr_arch arm64)
elseif(_lr_arch MATCHES "^arm")
  set(_lr_arch arm)
elseif(_lr_arch MATCHES "^(ppc|powerpc)")
  set(_lr_arch powerpc)
elseif(_lr_arch MATCHES "^s390")
  set(_lr_arch s390)
elseif(_lr_arch MATCHES "^riscv")
  set(_lr_arch riscv)
elseif(_lr_arch MATCHES "^loongarch")
  set(_lr_arch loongarch)
endif()

set(LORELAY_BPF_SRC ${PROJECT_SOURCE_DIR}/guest/bpf)
set(LORELAY_BPF_OUT ${CMAKE_BINARY_DIR}/guest/bpf)
set(_lr_incs "")
foreach(_d IN LISTS LIBBPF_INCLUDE_DIRS)
  list(APPEND _lr_incs "-I${_d}")
endforeach()

# -Werror: every header it reads is committed (vmlinux_min.h) or libbpf's.
set(LORELAY_BPF_CFLAGS -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_${_lr_arch}
    -I${LORELAY_BPF_SRC} ${_lr_incs})
add_custom_command(
  OUTPUT ${LORELAY_BPF_OUT}/listen_trace.bpf.o
  COMMAND ${CMAKE_COMMAND} -E make_directory ${LORELAY_BPF_OUT}
  COMMAND ${LORELAY_CLANG} ${LORELAY_BPF_CFLAGS}
          -c ${LORELAY_BPF_SRC}/listen_trace.bpf.c -o ${LORELAY_BPF_OUT}/listen_trace.clang.o
  # Links the one object through bpftool, which drops the DWARF (the BTF stays).
  COMMAND ${LORELAY_BPFTOOL} gen object ${LORELAY_BPF_OUT}/listen_trace.bpf.o
          ${LORELAY_BPF_OUT}/listen_trace.clang.o
  DEPENDS ${LORELAY_BPF_SRC}/listen_trace.bpf.c ${LORELAY_BPF_SRC}/listen_trace.h
          ${LORELAY_BPF_SRC}/vmlinux_min.h
  COMMENT "Compiling the eBPF listener trigger"
  VERBATIM)

add_custom_command(
  OUTPUT ${LORELAY_BPF_OUT}/listen_trace.skel.h
  COMMAND sh -c "\"$0\" gen skeleton \"$1\" name listen_trace_bpf > \"$2.tmp\" && mv \"$2.tmp\" \"$2\""
          ${LORELAY_BPFTOOL} ${LORELAY_BPF_OUT}/listen_trace.bpf.o
          ${LORELAY_BPF_OUT}/listen_trace.skel.h
  DEPENDS ${LORELAY_BPF_OUT}/listen_trace.bpf.o
  COMMENT "Generating the eBPF skeleton listen_trace.skel.h"
  VERBATIM)

# For tests/bpf (another directory scope): how the object was made.
set_property(GLOBAL PROPERTY LORELAY_BPF_OBJECT ${LORELAY_BPF_OUT}/listen_trace.bpf.o)
set_property(GLOBAL PROPERTY LORELAY_BPF_BUILD_COMMAND
             ${LORELAY_CLANG} ${LORELAY_BPF_CFLAGS} -c ${LORELAY_BPF_SRC}/listen_trace.bpf.c)
set_property(GLOBAL PROPERTY LORELAY_BPFTOOL ${LORELAY_BPFTOOL})

# lorelay_bpf_enable(target): target compiles lr_bpfwatch.c with the
# skeleton (LR_HAVE_BPF) and links libbpf. Call it from the directory the
# custom commands above were defined in (guest/), so the generated header is
# a real dependency of the target.
function(lorelay_bpf_enable target)
  target_sources(${target} PRIVATE ${LORELAY_BPF_OUT}/listen_trace.skel.h)
  target_compile_definitions(${target} PRIVATE LR_HAVE_BPF=1)
  # SYSTEM: the generated skeleton's unused static functions are not ours to warn about.
  target_include_directories(${target} SYSTEM PRIVATE ${LORELAY_BPF_OUT})
  target_include_directories(${target} PRIVATE ${LORELAY_BPF_SRC})
  target_link_libraries(${target} PUBLIC PkgConfig::LIBBPF)
endfunction()
