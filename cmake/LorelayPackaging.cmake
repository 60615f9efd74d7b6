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

# Man pages, gzipped as Debian ships them (-n: no timestamp, so rebuilds
# produce identical packages).
find_program(LORELAY_GZIP gzip REQUIRED)
set(lorelay_man_outputs "")
foreach(page lorelayd.8 lorelay-agent.8 lorelay-init.8 lorelayctl.1)
  string(REGEX REPLACE "^.*\\.([0-9])$" "\\1" section ${page})
  set(out ${CMAKE_BINARY_DIR}/man/${page}.gz)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
    COMMAND ${LORELAY_GZIP} -9 -n -c ${LORELAY_PKG_DIR}/man/${page} > ${out}
    DEPENDS ${LORELAY_PKG_DIR}/man/${page}
    COMMENT "Compressing man page ${page}"
    VERBATIM)
  list(APPEND lorelay_man_outputs ${out})
  install(FILES ${out} DESTINATION share/man/man${section})
endforeach()
add_custom_target(lorelay_man ALL DEPENDS ${lorelay_man_outputs})

# --- CPack ----------------------------------------------------------------
set(CPACK_PACKAGE_NAME lorelay)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "lorelay")
set(CPACK_PACKAGE_CONTACT "lorelay maintainers <lorelay@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "localhost relay between a host and its VMs, containers and network namespaces")
set(CPACK_PACKAGE_DESCRIPTION
    "lorelay forwards the TCP ports a guest listens on to the host's loopback, the way\n"
    "WSL2 does for its distributions, for QEMU/KVM (vsock), Firecracker and Cloud\n"
    "Hypervisor (hybrid vsock), containers and network namespaces. Contains the host\n"
    "daemon lorelayd, the guest agent lorelay-agent with its supervisor lorelay-init,\n"
    "the status client lorelayctl and systemd units for both sides.")
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
# libbpf1 when the agent links it); without it, name the two we always need.
find_program(LORELAY_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(LORELAY_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libuv1 (>= 1.44), libinih1")
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${LORELAY_PKG_DIR}/deb/conffiles
    ${LORELAY_PKG_DIR}/deb/postinst
    ${LORELAY_PKG_DIR}/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
