# The hardening Debian builds its own packages with (dpkg-buildflags'
# defaults): stack protector, fortified libc calls, read-only relocations
# resolved at load time. Debian's gcc already makes position-independent
# executables. Only for the Linux programs that get packaged: the sanitizer
# build has its own instrumentation, and _FORTIFY_SOURCE needs an
# optimising build (glibc warns, and warnings are errors, without one).
if(NOT WIN32 AND NOT LORELAY_SANITIZE)
  add_compile_options(-fstack-protector-strong
                      "$<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:-D_FORTIFY_SOURCE=2>")
  add_link_options(-Wl,-z,relro -Wl,-z,now)
endif()
