# Linux packages: install rules and CPack (tar.gz and .deb) for the four
# programs, the systemd units, the sample config and the man pages.
#
# Included by the top-level CMakeLists.txt on Linux AFTER host/posix and
# guest are added, because install(TARGETS) needs the program targets to
# exist. Paths are the Debian ones: programs in /usr/bin, units in
# /usr/lib/systemd/system, the config in /etc/lorelay (a conffile, so an
# upgrade never overwrites an admin's edits). The install is staged with
# DESTDIR (CPACK_SET_DESTDIR) so the absolute /etc destination works for
# both generators; the tar.gz is therefore laid out from / as well
# (usr/..., etc/...), ready for "tar -C / -xzf".
include_guard(GLOBAL)

if(WIN32)
  return()
endif()

set(LORELAY_PKG_DIR ${PROJECT_SOURCE_DIR}/packaging)
set(LORELAY_PROGRAMS lorelayd lorelay-agent lorelay-init lorelayctl)

foreach(prog IN LISTS LORELAY_PROGRAMS)
  if(TARGET ${prog})
    install(TARGETS ${prog} RUNTIME DESTINATION bin)
  else()
    # A target named differently but writing bin/<prog>: install the file;
    # a missing file then fails the install loudly instead of shipping
    # a package without it.
    install(PROGRAMS ${CMAKE_BINARY_DIR}/bin/${prog} DESTINATION bin)
  endif()
endforeach()

install(FILES
  ${LORELAY_PKG_DIR}/systemd/lorelayd.service
  ${LORELAY_PKG_DIR}/systemd/lorelayd@.service
  ${LORELAY_PKG_DIR}/systemd/lorelayd-netns@.service
  ${LORELAY_PKG_DIR}/systemd/lorelay-agent.service
  DESTINATION lib/systemd/system)

install(FILES ${LORELAY_PKG_DIR}/config/lorelay.ini DESTINATION /etc/lorelay)
install(FILES
  ${LORELAY_PKG_DIR}/config/guest.env.example
  ${LORELAY_PKG_DIR}/config/agent.env.example
  DESTINATION share/doc/lorelay/examples)
if(EXISTS ${PROJECT_SOURCE_DIR}/docs/setups.md)
  install(FILES ${PROJECT_SOURCE_DIR}/docs/setups.md DESTINATION share/doc/lorelay)
endif()

# Who the packages name as their maintainer, in the Debian control file,
# the Debian changelog and the copyright file's Upstream-Contact.
set(LORELAY_MAINTAINER "lorelay developers <lorelay@users.noreply.github.com>")

# Man pages, gzipped as Debian ships them (-n: no timestamp, so rebuilds
# produce identical packages). The footer names the version from project(),
# put into the .TH line here so the page sources never carry one.
find_program(LORELAY_GZIP gzip REQUIRED)
set(lorelay_doc_outputs "")
foreach(page lorelayd.8 lorelay-agent.8 lorelay-init.8 lorelayctl.1)
  string(REGEX REPLACE "^.*\\.([0-9])$" "\\1" section ${page})
  set(src ${LORELAY_PKG_DIR}/man/${page})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(READ ${src} text)
  string(REGEX REPLACE "(\n\\.TH [^\n]*) \"lorelay\" " "\\1 \"lorelay ${PROJECT_VERSION}\" " text "${text}")
  if(NOT text MATCHES "\n\\.TH [^\n]* \"lorelay ${PROJECT_VERSION}\" ")
    message(FATAL_ERROR "${src}: its .TH line does not name the source as \"lorelay\"")
  endif()
  file(WRITE ${CMAKE_BINARY_DIR}/man/${page}.tmp "${text}")
  configure_file(${CMAKE_BINARY_DIR}/man/${page}.tmp ${CMAKE_BINARY_DIR}/man/${page} COPYONLY)
  set(out ${CMAKE_BINARY_DIR}/man/${page}.gz)
  add_custom_command(OUTPUT ${out}
    COMMAND ${LORELAY_GZIP} -9 -n -c ${CMAKE_BINARY_DIR}/man/${page} > ${out}
    DEPENDS ${CMAKE_BINARY_DIR}/man/${page}
    COMMENT "Compressing man page ${page}"
    VERBATIM)
  list(APPEND lorelay_doc_outputs ${out})
  install(FILES ${out} DESTINATION share/man/man${section})
endforeach()

# /usr/share/doc/lorelay/copyright and changelog.gz, generated at build time
# from LICENSE and CHANGELOG.md (see cmake/LorelayDebDocs.cmake). The
# package version has no Debian revision, so dpkg and lintian treat lorelay
# as a native package, whose changelog is called changelog.gz.
set(lorelay_deb_docs ${CMAKE_BINARY_DIR}/deb)
set(lorelay_deb_docs_script ${PROJECT_SOURCE_DIR}/cmake/LorelayDebDocs.cmake)
add_custom_command(OUTPUT ${lorelay_deb_docs}/copyright
  COMMAND ${CMAKE_COMMAND} -E make_directory ${lorelay_deb_docs}
  COMMAND ${CMAKE_COMMAND} -DMODE=copyright -DSRC=${PROJECT_SOURCE_DIR}/LICENSE
          -DDEST=${lorelay_deb_docs}/copyright -DMAINTAINER=${LORELAY_MAINTAINER}
          -P ${lorelay_deb_docs_script}
  DEPENDS ${PROJECT_SOURCE_DIR}/LICENSE ${lorelay_deb_docs_script}
  COMMENT "Generating the Debian copyright file from LICENSE"
  VERBATIM)
add_custom_command(OUTPUT ${lorelay_deb_docs}/changelog.gz
  COMMAND ${CMAKE_COMMAND} -E make_directory ${lorelay_deb_docs}
  COMMAND ${CMAKE_COMMAND} -DMODE=changelog -DSRC=${PROJECT_SOURCE_DIR}/CHANGELOG.md
          -DDEST=${lorelay_deb_docs}/changelog -DVERSION=${PROJECT_VERSION}
          -DMAINTAINER=${LORELAY_MAINTAINER} -P ${lorelay_deb_docs_script}
  COMMAND ${LORELAY_GZIP} -9 -n -f ${lorelay_deb_docs}/changelog
  DEPENDS ${PROJECT_SOURCE_DIR}/CHANGELOG.md ${lorelay_deb_docs_script}
  COMMENT "Generating the Debian changelog for ${PROJECT_VERSION} from CHANGELOG.md"
  VERBATIM)
list(APPEND lorelay_doc_outputs ${lorelay_deb_docs}/copyright ${lorelay_deb_docs}/changelog.gz)
install(FILES ${lorelay_deb_docs}/copyright ${lorelay_deb_docs}/changelog.gz
        DESTINATION share/doc/lorelay)
add_custom_target(lorelay_docs ALL DEPENDS ${lorelay_doc_outputs})

# --- CPack ----------------------------------------------------------------
set(CPACK_PACKAGE_NAME lorelay)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the lorelay developers")
set(CPACK_PACKAGE_CONTACT "${LORELAY_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${LORELAY_MAINTAINER}")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "localhost relay between a host and its VMs, containers and network namespaces")
# Lines within 72 columns: dpkg shows the description as written, and
# lintian wants every line of it within 80.
set(CPACK_PACKAGE_DESCRIPTION
    "lorelay forwards the TCP and UDP ports a guest listens on to the\n"
    "host's loopback, the way WSL2 does for its distributions, for\n"
    "QEMU/KVM (vsock), Firecracker and Cloud Hypervisor (hybrid vsock),\n"
    "containers and network namespaces. Contains the host daemon lorelayd,\n"
    "the guest agent lorelay-agent with its supervisor lorelay-init, the\n"
    "status client lorelayctl and systemd units for both sides.")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_GENERATOR "TGZ;DEB")
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INCLUDE_TOPLEVEL_DIRECTORY OFF)
set(CPACK_STRIP_FILES ON)
set(CPACK_SOURCE_GENERATOR "")

execute_process(COMMAND dpkg --print-architecture
  OUTPUT_VARIABLE lorelay_deb_arch OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT lorelay_deb_arch)
  set(lorelay_deb_arch ${CMAKE_SYSTEM_PROCESSOR})
endif()
set(CPACK_PACKAGE_FILE_NAME "lorelay-${PROJECT_VERSION}-linux-${lorelay_deb_arch}")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # lorelay_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${lorelay_deb_arch})
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# CPack puts the summary on the Description line itself; this is the body.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
# dpkg-shlibdeps derives the exact library dependencies (libuv1, libinih1,
# libcjson1, libbpf1 when the agent links it); without it, name those we
# always need.
find_program(LORELAY_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(LORELAY_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libuv1 (>= 1.44), libinih1, libcjson1, libssl3, libsystemd0")
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${LORELAY_PKG_DIR}/deb/conffiles
    ${LORELAY_PKG_DIR}/deb/postinst
    ${LORELAY_PKG_DIR}/deb/prerm
    ${LORELAY_PKG_DIR}/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
