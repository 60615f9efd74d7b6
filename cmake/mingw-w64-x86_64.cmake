# Toolchain for the win64 preset: Debian's mingw-w64 (gcc, win32 thread
# model), so lorelayd.exe is cross-built on the same Linux machine that runs
# its tests under Wine. Linked fully static: the zip must run on a bare
# Windows with no MinGW runtime DLLs beside it.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(LORELAY_MINGW_TRIPLE x86_64-w64-mingw32)
find_program(CMAKE_C_COMPILER NAMES ${LORELAY_MINGW_TRIPLE}-gcc-win32 ${LORELAY_MINGW_TRIPLE}-gcc REQUIRED)
find_program(CMAKE_RC_COMPILER NAMES ${LORELAY_MINGW_TRIPLE}-windres)
find_program(CMAKE_AR NAMES ${LORELAY_MINGW_TRIPLE}-gcc-ar-win32 ${LORELAY_MINGW_TRIPLE}-ar)
find_program(CMAKE_RANLIB NAMES ${LORELAY_MINGW_TRIPLE}-gcc-ranlib-win32 ${LORELAY_MINGW_TRIPLE}-ranlib)

set(CMAKE_FIND_ROOT_PATH /usr/${LORELAY_MINGW_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Windows 8 / Server 2012 API level: what libuv 1.44 itself is built for.
# MinGW's own C99 printf family, so %zu and %lld mean on Windows what they
# mean on Linux (msvcrt.dll's printf predates C99).
set(CMAKE_C_FLAGS_INIT "-D_WIN32_WINNT=0x0602 -DWINVER=0x0602 -D__USE_MINGW_ANSI_STDIO=1")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static -static-libgcc")

# ctest runs Windows test binaries through Wine. The project may replace this
# with a wrapper that pins the Wine prefix (see LorelayWin32Deps.cmake).
find_program(LORELAY_WINE NAMES wine wine64)
if(LORELAY_WINE AND NOT CMAKE_CROSSCOMPILING_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${LORELAY_WINE})
endif()
