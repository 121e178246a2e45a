# Dear ImGui from Debian's libimgui-dev: the core is the packaged static library; the GLFW and
# Vulkan backends ship as sources under /usr/share/doc/libimgui-dev/examples/backends. Some
# builds of the package already carry the backends in libimgui.a; when it doesn't, compile the
# shipped backend sources here. Provides the target attnscope_imgui (or nothing, with a
# status message, when a piece is missing).
include_guard(GLOBAL)
include(CheckCXXSourceCompiles)

pkg_check_modules(IMGUI QUIET IMPORTED_TARGET imgui)
pkg_check_modules(GLFW3 QUIET IMPORTED_TARGET glfw3)
set(ATTNSCOPE_HAVE_IMGUI OFF)
if(NOT IMGUI_FOUND)
  message(STATUS "attnscope: ImGui glue disabled: libimgui-dev not found")
  return()
endif()
if(NOT GLFW3_FOUND)
  message(STATUS "attnscope: ImGui glue disabled: libglfw3-dev not found")
  return()
endif()

find_path(ATTNSCOPE_IMGUI_BACKEND_DIR imgui_impl_vulkan.cpp
          PATHS /usr/share/doc/libimgui-dev/examples/backends NO_DEFAULT_PATH)
find_path(ATTNSCOPE_IMGUI_BACKEND_INCLUDE imgui_impl_vulkan.h PATHS ${IMGUI_INCLUDEDIR}/backends /usr/include/imgui/backends NO_DEFAULT_PATH)

set(CMAKE_REQUIRED_LIBRARIES PkgConfig::IMGUI PkgConfig::GLFW3 Vulkan::Vulkan)
set(CMAKE_REQUIRED_INCLUDES ${IMGUI_INCLUDE_DIRS} ${ATTNSCOPE_IMGUI_BACKEND_INCLUDE})
check_cxx_source_compiles([[
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_vulkan.h>
int main() { return ImGui_ImplVulkan_Init == nullptr || ImGui_ImplGlfw_InitForVulkan == nullptr; }
]] ATTNSCOPE_IMGUI_LIB_HAS_BACKENDS)
unset(CMAKE_REQUIRED_LIBRARIES)
unset(CMAKE_REQUIRED_INCLUDES)

if(ATTNSCOPE_IMGUI_LIB_HAS_BACKENDS)
  add_library(attnscope_imgui INTERFACE)
elseif(ATTNSCOPE_IMGUI_BACKEND_DIR)
  add_library(attnscope_imgui STATIC
    ${ATTNSCOPE_IMGUI_BACKEND_DIR}/imgui_impl_glfw.cpp
    ${ATTNSCOPE_IMGUI_BACKEND_DIR}/imgui_impl_vulkan.cpp)
  set_target_properties(attnscope_imgui PROPERTIES POSITION_INDEPENDENT_CODE ON)
else()
  message(STATUS "attnscope: ImGui glue disabled: libimgui.a lacks the GLFW/Vulkan backends and their sources are not installed")
  return()
endif()
get_target_property(attnscope_imgui_type attnscope_imgui TYPE)
if(attnscope_imgui_type STREQUAL "INTERFACE_LIBRARY")
  set(attnscope_imgui_scope INTERFACE)
else()
  set(attnscope_imgui_scope PUBLIC)
endif()
target_include_directories(attnscope_imgui SYSTEM ${attnscope_imgui_scope} ${IMGUI_INCLUDE_DIRS} ${ATTNSCOPE_IMGUI_BACKEND_INCLUDE})
target_link_libraries(attnscope_imgui ${attnscope_imgui_scope} PkgConfig::IMGUI PkgConfig::GLFW3 Vulkan::Vulkan)
set(ATTNSCOPE_HAVE_IMGUI ON)
