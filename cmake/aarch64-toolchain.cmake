# Cross-compiling for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-toolchain.cmake
# Target libraries come from Debian multiarch (apt-get install libfoo-dev:arm64),
# which puts them in /usr/lib/aarch64-linux-gnu; tests run under qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Libraries and packages: the aarch64 sysroot and the multiarch folders only
# (CMake derives CMAKE_LIBRARY_ARCHITECTURE=aarch64-linux-gnu from the compiler),
# never the host's x86-64 copies. Header-only and arch-independent packages in
# /usr/share and /usr/include are shared between architectures.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/cmake)

# pkg-config must read the arm64 .pc files.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Static executables: under Debian 12's qemu-user (7.2) a dynamically linked
# aarch64 program hangs when it starts its first thread; static ones run fine.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# Lets gtest_discover_tests and ctest run target binaries.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)

# Static executables need static libraries (see EDGELM_STATIC_DEPS in CMakeLists.txt).
set(EDGELM_STATIC_DEPS ON CACHE BOOL "link pcre2 and utf8proc statically")
