#pragma once
// Presents the debugger window through X11 shared memory (MIT-SHM) when the Vulkan device renders
// on the CPU (lavapipe).
//
// Why: lavapipe's X11 swapchain uses shared memory only where the X server offers DRI3. Xvfb,
// Xvnc and other virtual servers do not, and there every present sends the whole image through
// the X socket (xcb_put_image: 8 MB a frame at 1920×1080, copied by the client, the kernel and the
// server, which also allocates the request each time), on the UI thread, after waiting for the
// rasteriser. That alone took a third of the UI thread while the model decoded. This presenter
// sends only the rectangles a frame redrew (frame_damage.h), from memory the server reads in
// place, on a thread of its own: the UI thread waits neither for the rasteriser nor for the server.
//
// One slot per frame in flight: a System V shared-memory segment the size of the window, attached
// by the X server and imported into Vulkan as a buffer (VK_EXT_external_memory_host), so the
// frame's copy out of the canvas lands where the server reads it. A slot's life:
//   UI thread:    wait_until_free(slot) → record_copy(…) into the frame's commands → submit with
//                 the frame's fence → queue_put(slot, fence, rects)
//   put thread:   waits for the fence, sends one ShmPutImage per rectangle (the last asks for a
//                 completion event), waits for that event → the slot is free again.
#include <vulkan/vulkan.h>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ui/render/vulkan_context.h"

struct GLFWwindow;

namespace attn::app {

enum class PresentPath { Auto, Swapchain, SharedMemory };
// "auto", "swapchain" or "x11-shm"; throws attn::Error naming the bad value.
PresentPath parse_present_path(const std::string& text);
const char* present_path_name(PresentPath path);

// The device extension the presenter needs (AppWindow asks for it where the device has it).
inline constexpr const char* kShmPresenterDeviceExtension = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;

class ShmPresenter {
public:
    // Null, with the reason in `why_not`, when this window cannot use it: built without xcb-shm,
    // not an X11 window, a display without MIT-SHM or not on this machine, a visual that is not
    // 24-bit little-endian BGRX, or a device without VK_EXT_external_memory_host.
    static std::unique_ptr<ShmPresenter> open(render::VulkanContext& context, GLFWwindow* window, int slots,
                                              std::string& why_not);
    virtual ~ShmPresenter() = default;

    // The canvas format whose bytes are the window's pixels.
    static constexpr VkFormat format() { return VK_FORMAT_B8G8R8A8_UNORM; }

    // Segments for a window of this size (waits until no slot is in use first).
    virtual void resize(VkExtent2D extent) = 0;
    // Blocks until the slot's last put has been read by the server (its fence has signalled too).
    // Throws attn::Error when the put thread failed (the X connection was lost).
    virtual void wait_until_free(int slot) = 0;
    // The same without blocking: whether wait_until_free(slot) would return at once.
    virtual bool slot_free(int slot) = 0;
    // Records the copy of `rects` of the canvas (TRANSFER_SRC_OPTIMAL) into the slot's segment, and
    // a barrier that makes it visible to the host.
    virtual void record_copy(VkCommandBuffer cmd, VkImage canvas, int slot, std::span<const VkRect2D> rects) const = 0;
    // Hands the slot to the put thread: once `fence` signals, the rectangles go to the window.
    virtual void queue_put(int slot, VkFence fence, std::vector<VkRect2D> rects) = 0;
    // Blocks until every queued put has been read by the server.
    virtual void wait_idle() = 0;
};

}  // namespace attn::app
