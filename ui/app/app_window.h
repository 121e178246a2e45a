#pragma once
// The windowed shell: a GLFW window with a Vulkan surface and swapchain on the renderer's
// VulkanContext, and Dear ImGui (Debian's 1.86 with its GLFW and Vulkan backends) on top.
//
// Per frame:  begin_frame()  → polls events, waits while minimised, starts an ImGui frame;
//             …build the UI…
//             end_frame(pre)  → acquires a swapchain image, clears it, lets `pre` record transfer
//                               commands into it (the attention map is blitted here), runs the
//                               ImGui render pass on top (load, not clear), submits and presents.
// Three frames in flight (a fence, an image-acquired semaphore and a command buffer each; one
// render-complete semaphore per swapchain image). The swapchain is recreated when it is out of
// date or suboptimal and whenever the framebuffer size changes; a minimised window (zero-sized
// framebuffer) is waited out with glfwWaitEvents. Where Vulkan renders on the CPU, frames reach an
// X11 window through shared memory instead of the swapchain (shm_presenter.h): only the damaged
// rectangles, sent by a thread of their own.
#include <vulkan/vulkan.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/error.h"
#include "ui/app/frame_damage.h"
#include "ui/app/shm_presenter.h"
#include "ui/render/vulkan_context.h"

struct GLFWwindow;
struct ImFont;

namespace attn::app {

// No display could be opened (no $DISPLAY/$WAYLAND_DISPLAY, glfwInit failed, or GLFW has no Vulkan
// loader): the caller should suggest --headless.
struct NoDisplayError : Error {
    using Error::Error;
};

struct AppWindowOptions {
    int width = 1600, height = 900;  // screen coordinates (scaled by the monitor's content scale)
    std::string title = "attnscope";
    bool validation = false;
    bool require_validation = false;
    bool vsync = true;           // FIFO; false prefers MAILBOX, then IMMEDIATE
    float base_font_px = 15.f;   // before the content scale
    bool full_redraw = false;    // every frame drawn whole and presented (no frame damage: for comparison)
    // How frames reach the window: Auto uses X11 shared memory (shm_presenter.h) when the Vulkan
    // device renders on the CPU and the window allows it, the swapchain otherwise.
    PresentPath present = PresentPath::Auto;
};

// GLFW for the lifetime of the object: checks $DISPLAY / $WAYLAND_DISPLAY, then glfwInit; throws
// NoDisplayError with a message that suggests --headless. glfwTerminate on destruction (before the
// display can go away — matters for in-process tests that run their own Xvfb).
class GlfwScope {
public:
    GlfwScope();
    ~GlfwScope();
    GlfwScope(const GlfwScope&) = delete;
    GlfwScope& operator=(const GlfwScope&) = delete;
};

// Needs a live GlfwScope.
class AppWindow {
public:
    explicit AppWindow(const AppWindowOptions& options);
    ~AppWindow();
    AppWindow(const AppWindow&) = delete;
    AppWindow& operator=(const AppWindow&) = delete;

    render::VulkanContext& context() { return *context_; }
    GLFWwindow* window() const { return window_; }
    float content_scale() const { return scale_; }
    // Rebuilds fonts and style for a new content scale (clamped to [0.5, 4]); begin_frame calls it
    // when the monitor's scale changes, scripts call it to simulate that. Between frames only.
    void set_content_scale(float scale);
    int content_scale_changes() const { return scale_changes_; }
    VkFormat swapchain_format() const { return format_.format; }
    // "x11-shm", or "swapchain" (with why shared memory was not used, where it was considered).
    const std::string& present_note() const { return present_note_; }
    bool presents_through_shared_memory() const { return presenter_ != nullptr; }
    VkExtent2D extent() const { return extent_; }

    bool should_close() const;
    void request_close();

    // Polls events (waiting while minimised) and starts an ImGui frame. Returns false when the
    // window was asked to close.
    bool begin_frame();
    // Sleeps until an input event arrives or `seconds` pass (call before begin_frame when idle).
    void wait_events(double seconds);

    // Draws what changed since the last presented frame (frame_damage.h) and presents it; a frame
    // in which nothing changed is neither drawn nor presented. `layers` are what `pre` draws under
    // the UI (rectangles and content versions, for the damage). `pre` records commands before the
    // ImGui pass, writing only inside `damage` (already cleared); the image is in
    // TRANSFER_DST_OPTIMAL and must be left so. If screenshot_path is set, the frame is presented
    // and the image (UI included) is read back and written as a PNG. Returns false if the frame
    // could not be drawn (swapchain out of date: it has been recreated; build the next frame as usual).
    using PreRecord =
        std::function<void(VkCommandBuffer cmd, VkImage image, VkExtent2D extent, std::span<const VkRect2D> damage)>;
    bool end_frame(const PreRecord& pre, std::span<const UnderLayer> layers = {}, const std::string& screenshot_path = {});

    // Framebuffer pixels per ImGui (screen) unit; ImGui works in screen coordinates.
    float framebuffer_scale_x() const;
    float framebuffer_scale_y() const;

    // Where the last end_frame's time went on the calling thread: waiting for a frame slot and a
    // swapchain image (the renderer, or with x11-shm the put thread, still busy with earlier
    // frames), recording and submitting, and presenting (through lavapipe's swapchain under X11
    // the whole image is copied to the X server here; x11-shm only queues the put).
    struct FrameTiming {
        double damage_ms = 0, wait_ms = 0, record_submit_ms = 0, present_ms = 0;
        double damaged_fraction = 0;  // of the framebuffer's area redrawn
        bool drawn = false;           // false: nothing changed, nothing was drawn or presented
        bool deferred = false;        // x11-shm: not drawn because every frame slot was busy (drawn later)
    };
    const FrameTiming& last_timing() const { return last_timing_; }

    // The monitor's refresh rate (0 when GLFW does not know it).
    int refresh_rate_hz() const;
    bool blit_supported() const { return blit_supported_; }
    const std::string& font_note() const { return font_note_; }
    uint64_t frames_presented() const { return frames_presented_; }
    // Whether the caller must pace drawn frames to the refresh rate itself: with vsync on, the
    // swapchain's FIFO does it; x11-shm has no vertical blank to wait for.
    bool needs_pacing() const { return presenter_ && options_.vsync; }
    // Blocks until every frame drawn so far has been handed to the window system (tests).
    void wait_presented();

private:
    struct Frame {
        VkCommandBuffer cmd = VK_NULL_HANDLE;
        VkFence fence = VK_NULL_HANDLE;
        VkSemaphore image_acquired = VK_NULL_HANDLE;
    };

    void create_surface_and_check_present();
    void check_blit_support();
    void open_presenter();
    static void on_window_refresh(GLFWwindow* window);
    void create_swapchain();  // the swapchain, or the presenter's segments; then the canvas
    void create_vulkan_swapchain();
    void create_canvas();
    void destroy_swapchain_views();
    void recreate_swapchain();
    void create_render_pass();
    void init_imgui();
    void init_imgui_vulkan();
    void apply_style();
    void load_fonts();
    void write_screenshot(const std::string& path);

    AppWindowOptions options_;
    GLFWwindow* window_ = nullptr;
    std::unique_ptr<render::VulkanContext> context_;
    float scale_ = 1.f;
    float reported_scale_ = 1.f;  // what GLFW last said (scale_ may be set by a script instead)
    int scale_changes_ = 0;

    VkSurfaceKHR surface_ = VK_NULL_HANDLE;
    VkSurfaceFormatKHR format_{};
    VkPresentModeKHR present_mode_ = VK_PRESENT_MODE_FIFO_KHR;
    VkSwapchainKHR swapchain_ = VK_NULL_HANDLE;
    VkExtent2D extent_{};
    uint32_t min_image_count_ = 2;
    std::vector<VkImage> images_;
    render::GpuImage canvas_;  // the UI as last drawn (frame_damage.h); copied into each presented image
    VkFramebuffer canvas_framebuffer_ = VK_NULL_HANDLE;
    bool canvas_initialised_ = false;
    FrameDamage damage_;
    std::vector<VkSemaphore> render_complete_;  // one per swapchain image
    VkRenderPass render_pass_ = VK_NULL_HANDLE;
    VkDescriptorPool imgui_pool_ = VK_NULL_HANDLE;
    VkCommandPool command_pool_ = VK_NULL_HANDLE;
    static constexpr uint32_t kFramesInFlight = 3;
    Frame frames_[kFramesInFlight];
    uint32_t frame_index_ = 0;
    bool swapchain_dirty_ = false;
    bool blit_supported_ = false;
    bool imgui_glfw_ = false, imgui_vulkan_ = false;
    std::string font_note_;
    uint64_t frames_presented_ = 0;
    FrameTiming last_timing_;
    std::unique_ptr<ShmPresenter> presenter_;  // null: the swapchain presents
    bool put_whole_ = true;                    // x11-shm: the window was exposed; send it all next frame
    std::string present_note_;

    render::GpuBuffer screenshot_buffer_;
};

}  // namespace attn::app
