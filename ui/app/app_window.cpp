#include "ui/app/app_window.h"

#define GLFW_INCLUDE_VULKAN
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_vulkan.h>
#include <stb_image_write.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace attn::app {

namespace {

std::string g_glfw_error;

void on_glfw_error(int code, const char* description) {
    g_glfw_error = cat("GLFW error ", code, ": ", description ? description : "?");
}

void check_imgui_vk(VkResult result) {
    if (result != VK_SUCCESS) render::check_vk(result, "ImGui_ImplVulkan", __FILE__, __LINE__);
}

const char* first_existing(std::initializer_list<const char*> paths) {
    for (const char* p : paths) {
        std::error_code ec;
        if (std::filesystem::is_regular_file(p, ec)) return p;
    }
    return nullptr;
}

}  // namespace

GlfwScope::GlfwScope() {
    const char* display = std::getenv("DISPLAY");
    const char* wayland = std::getenv("WAYLAND_DISPLAY");
    const bool has_display = (display && *display) || (wayland && *wayland);
    if (!has_display)
        throw NoDisplayError(
            "no display: neither DISPLAY nor WAYLAND_DISPLAY is set. Use --headless to render offscreen, e.g. "
            "attnscope view SESSION --headless --size 1280x720 --screenshot out.png (or run under xvfb-run)");
    g_glfw_error.clear();
    glfwSetErrorCallback(on_glfw_error);
    if (!glfwInit())
        throw NoDisplayError(cat("could not open the display (", g_glfw_error.empty() ? "glfwInit failed" : g_glfw_error,
                                 "). Use --headless to render offscreen, e.g. attnscope view SESSION --headless "
                                 "--screenshot out.png"));
    if (!glfwVulkanSupported()) {
        glfwTerminate();
        throw NoDisplayError(
            "GLFW found no Vulkan loader/driver that can present to this display. Use --headless to render offscreen");
    }
}

GlfwScope::~GlfwScope() { glfwTerminate(); }

AppWindow::AppWindow(const AppWindowOptions& options) : options_(options) {
    glfwWindowHint(GLFW_CLIENT_API, GLFW_NO_API);
    glfwWindowHint(GLFW_RESIZABLE, GLFW_TRUE);
    glfwWindowHint(GLFW_SCALE_TO_MONITOR, GLFW_TRUE);  // DPI: the window grows with the content scale
    window_ = glfwCreateWindow(options.width, options.height, options.title.c_str(), nullptr, nullptr);
    if (!window_) throw NoDisplayError(cat("could not create a window (", g_glfw_error, "); use --headless"));

    render::VulkanContextOptions vk;
    vk.validation = options.validation;
    vk.require_validation = options.require_validation;
    uint32_t count = 0;
    const char** required = glfwGetRequiredInstanceExtensions(&count);
    if (!required) throw NoDisplayError(cat("GLFW cannot create Vulkan surfaces here (", g_glfw_error, "); use --headless"));
    vk.instance_extensions.assign(required, required + count);
    vk.device_extensions = {VK_KHR_SWAPCHAIN_EXTENSION_NAME};
    if (options.present != PresentPath::Swapchain) vk.optional_device_extensions = {kShmPresenterDeviceExtension};
    context_ = std::make_unique<render::VulkanContext>(vk);

    float xs = 1, ys = 1;
    glfwGetWindowContentScale(window_, &xs, &ys);
    reported_scale_ = std::max(xs, ys);
    scale_ = std::clamp(reported_scale_, 0.5f, 4.f);

    open_presenter();
    if (presenter_) {
        format_ = {ShmPresenter::format(), VK_COLOR_SPACE_SRGB_NONLINEAR_KHR};
        glfwSetWindowUserPointer(window_, this);
        glfwSetWindowRefreshCallback(window_, &AppWindow::on_window_refresh);
    } else {
        create_surface_and_check_present();
    }
    check_blit_support();
    create_render_pass();  // needs only the surface format; the swapchain's framebuffers need it
    create_swapchain();

    VkDevice device = context_->device();
    VkCommandPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pool_info.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pool_info.queueFamilyIndex = context_->queue_family();
    ATTN_VK(vkCreateCommandPool(device, &pool_info, nullptr, &command_pool_));
    for (Frame& f : frames_) {
        VkCommandBufferAllocateInfo alloc{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
        alloc.commandPool = command_pool_;
        alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
        alloc.commandBufferCount = 1;
        ATTN_VK(vkAllocateCommandBuffers(device, &alloc, &f.cmd));
        VkFenceCreateInfo fence_info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        fence_info.flags = VK_FENCE_CREATE_SIGNALED_BIT;
        ATTN_VK(vkCreateFence(device, &fence_info, nullptr, &f.fence));
        VkSemaphoreCreateInfo sem_info{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
        ATTN_VK(vkCreateSemaphore(device, &sem_info, nullptr, &f.image_acquired));
    }
    init_imgui();
}

AppWindow::~AppWindow() {
    if (context_) {
        VkDevice device = context_->device();
        vkDeviceWaitIdle(device);
        presenter_.reset();  // its thread and segments, before the window and the device go
        if (imgui_vulkan_) ImGui_ImplVulkan_Shutdown();
        if (imgui_glfw_) ImGui_ImplGlfw_Shutdown();
        if (ImGui::GetCurrentContext()) ImGui::DestroyContext();
        context_->destroy(screenshot_buffer_);
        for (Frame& f : frames_) {
            vkDestroyFence(device, f.fence, nullptr);
            vkDestroySemaphore(device, f.image_acquired, nullptr);
        }
        vkDestroyCommandPool(device, command_pool_, nullptr);
        vkDestroyDescriptorPool(device, imgui_pool_, nullptr);
        destroy_swapchain_views();
        vkDestroySwapchainKHR(device, swapchain_, nullptr);
        vkDestroyRenderPass(device, render_pass_, nullptr);
        if (surface_) vkDestroySurfaceKHR(context_->instance(), surface_, nullptr);
        context_.reset();
    }
    if (window_) glfwDestroyWindow(window_);
}

void AppWindow::create_surface_and_check_present() {
    ATTN_VK(glfwCreateWindowSurface(context_->instance(), window_, nullptr, &surface_));
    VkBool32 supported = VK_FALSE;
    ATTN_VK(vkGetPhysicalDeviceSurfaceSupportKHR(context_->physical_device(), context_->queue_family(), surface_, &supported));
    if (!supported)
        fail("the Vulkan device ", context_->device_description(), " (queue family ", context_->queue_family(),
             ") cannot present to this window; use --headless, or pick another driver with VK_DRIVER_FILES");

    uint32_t count = 0;
    ATTN_VK(vkGetPhysicalDeviceSurfaceFormatsKHR(context_->physical_device(), surface_, &count, nullptr));
    std::vector<VkSurfaceFormatKHR> formats(count);
    ATTN_VK(vkGetPhysicalDeviceSurfaceFormatsKHR(context_->physical_device(), surface_, &count, formats.data()));
    if (formats.empty()) fail("the window surface reports no formats");
    // UNORM, not SRGB: ImGui's colours and the colormaps are already sRGB-encoded values.
    format_ = formats[0];
    bool found = false;
    for (VkFormat want : {VK_FORMAT_B8G8R8A8_UNORM, VK_FORMAT_R8G8B8A8_UNORM}) {
        for (const VkSurfaceFormatKHR& f : formats)
            if (f.format == want && f.colorSpace == VK_COLOR_SPACE_SRGB_NONLINEAR_KHR) {
                format_ = f;
                found = true;
                break;
            }
        if (found) break;
    }
    if (!found) std::fprintf(stderr, "attnscope: warning: no UNORM 8-bit surface format; colours may be off\n");

    ATTN_VK(vkGetPhysicalDeviceSurfacePresentModesKHR(context_->physical_device(), surface_, &count, nullptr));
    std::vector<VkPresentModeKHR> modes(count);
    ATTN_VK(vkGetPhysicalDeviceSurfacePresentModesKHR(context_->physical_device(), surface_, &count, modes.data()));
    present_mode_ = VK_PRESENT_MODE_FIFO_KHR;  // always available
    if (!options_.vsync) {
        for (VkPresentModeKHR want : {VK_PRESENT_MODE_MAILBOX_KHR, VK_PRESENT_MODE_IMMEDIATE_KHR})
            if (std::find(modes.begin(), modes.end(), want) != modes.end()) {
                present_mode_ = want;
                break;
            }
    }

}

void AppWindow::open_presenter() {
    const bool cpu = context_->properties().deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    if (options_.present == PresentPath::Swapchain || (options_.present == PresentPath::Auto && !cpu)) {
        present_note_ = "swapchain";
        return;
    }
    std::string why_not;
    presenter_ = ShmPresenter::open(*context_, window_, static_cast<int>(kFramesInFlight), why_not);
    if (presenter_) {
        present_note_ = "x11-shm";
        return;
    }
    if (options_.present == PresentPath::SharedMemory) fail("--present x11-shm: ", why_not);
    present_note_ = cat("swapchain (x11-shm: ", why_not, ")");
}

void AppWindow::on_window_refresh(GLFWwindow* window) {
    if (auto* self = static_cast<AppWindow*>(glfwGetWindowUserPointer(window))) self->put_whole_ = true;
}

void AppWindow::check_blit_support() {
    // The map is blitted from the renderer's RGBA8 target into the canvas.
    VkFormatProperties src{}, dst{};
    vkGetPhysicalDeviceFormatProperties(context_->physical_device(), VK_FORMAT_R8G8B8A8_UNORM, &src);
    vkGetPhysicalDeviceFormatProperties(context_->physical_device(), format_.format, &dst);
    blit_supported_ = (src.optimalTilingFeatures & VK_FORMAT_FEATURE_BLIT_SRC_BIT) &&
                      (dst.optimalTilingFeatures & VK_FORMAT_FEATURE_BLIT_DST_BIT);
}

void AppWindow::create_swapchain() {
    if (presenter_) {
        int fb_w = 0, fb_h = 0;
        glfwGetFramebufferSize(window_, &fb_w, &fb_h);
        extent_ = {static_cast<uint32_t>(std::max(fb_w, 1)), static_cast<uint32_t>(std::max(fb_h, 1))};
        presenter_->resize(extent_);
        min_image_count_ = 2;
        put_whole_ = true;
    } else {
        create_vulkan_swapchain();
    }
    create_canvas();
}

void AppWindow::create_vulkan_swapchain() {
    VkSurfaceCapabilitiesKHR caps{};
    ATTN_VK(vkGetPhysicalDeviceSurfaceCapabilitiesKHR(context_->physical_device(), surface_, &caps));
    const VkImageUsageFlags usage =
        VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT;
    if ((caps.supportedUsageFlags & usage) != usage)
        fail("the window surface does not support transfer usage on swapchain images (needed to draw the map)");
    int fb_w = 0, fb_h = 0;
    glfwGetFramebufferSize(window_, &fb_w, &fb_h);
    if (caps.currentExtent.width != UINT32_MAX) {
        extent_ = caps.currentExtent;
    } else {
        extent_.width = std::clamp<uint32_t>(static_cast<uint32_t>(fb_w), caps.minImageExtent.width, caps.maxImageExtent.width);
        extent_.height = std::clamp<uint32_t>(static_cast<uint32_t>(fb_h), caps.minImageExtent.height, caps.maxImageExtent.height);
    }
    min_image_count_ = std::max(2u, caps.minImageCount);
    uint32_t image_count = caps.minImageCount + 1;
    if (caps.maxImageCount > 0) image_count = std::min(image_count, caps.maxImageCount);
    image_count = std::max(image_count, min_image_count_);

    VkSwapchainCreateInfoKHR info{VK_STRUCTURE_TYPE_SWAPCHAIN_CREATE_INFO_KHR};
    info.surface = surface_;
    info.minImageCount = image_count;
    info.imageFormat = format_.format;
    info.imageColorSpace = format_.colorSpace;
    info.imageExtent = extent_;
    info.imageArrayLayers = 1;
    info.imageUsage = usage;
    info.imageSharingMode = VK_SHARING_MODE_EXCLUSIVE;
    info.preTransform = (caps.supportedTransforms & VK_SURFACE_TRANSFORM_IDENTITY_BIT_KHR)
                            ? VK_SURFACE_TRANSFORM_IDENTITY_BIT_KHR
                            : caps.currentTransform;
    info.compositeAlpha = VK_COMPOSITE_ALPHA_OPAQUE_BIT_KHR;
    for (VkCompositeAlphaFlagBitsKHR a : {VK_COMPOSITE_ALPHA_OPAQUE_BIT_KHR, VK_COMPOSITE_ALPHA_INHERIT_BIT_KHR,
                                          VK_COMPOSITE_ALPHA_PRE_MULTIPLIED_BIT_KHR, VK_COMPOSITE_ALPHA_POST_MULTIPLIED_BIT_KHR})
        if (caps.supportedCompositeAlpha & a) {
            info.compositeAlpha = a;
            break;
        }
    info.presentMode = present_mode_;
    info.clipped = VK_TRUE;
    VkSwapchainKHR old = swapchain_;
    info.oldSwapchain = old;
    VkDevice device = context_->device();
    ATTN_VK(vkCreateSwapchainKHR(device, &info, nullptr, &swapchain_));
    if (old) vkDestroySwapchainKHR(device, old, nullptr);

    uint32_t count = 0;
    ATTN_VK(vkGetSwapchainImagesKHR(device, swapchain_, &count, nullptr));
    images_.resize(count);
    ATTN_VK(vkGetSwapchainImagesKHR(device, swapchain_, &count, images_.data()));
    for (size_t i = 0; i < images_.size(); ++i) {
        VkSemaphoreCreateInfo sem_info{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
        VkSemaphore sem = VK_NULL_HANDLE;
        ATTN_VK(vkCreateSemaphore(device, &sem_info, nullptr, &sem));
        render_complete_.push_back(sem);
    }
}

void AppWindow::create_canvas() {
    VkDevice device = context_->device();
    // The canvas keeps the last frame's pixels: a frame redraws only its damaged rectangles there,
    // then copies the canvas into the swapchain image (whose old contents Vulkan does not promise).
    canvas_ = context_->create_image(format_.format, extent_.width, extent_.height, 1,
                                     VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT |
                                         VK_IMAGE_USAGE_TRANSFER_DST_BIT);
    canvas_initialised_ = false;
    damage_.invalidate();
    VkFramebufferCreateInfo fb{VK_STRUCTURE_TYPE_FRAMEBUFFER_CREATE_INFO};
    fb.renderPass = render_pass_;
    fb.attachmentCount = 1;
    fb.pAttachments = &canvas_.view;
    fb.width = extent_.width;
    fb.height = extent_.height;
    fb.layers = 1;
    ATTN_VK(vkCreateFramebuffer(device, &fb, nullptr, &canvas_framebuffer_));
}

void AppWindow::destroy_swapchain_views() {
    VkDevice device = context_->device();
    if (canvas_framebuffer_) vkDestroyFramebuffer(device, canvas_framebuffer_, nullptr);
    canvas_framebuffer_ = VK_NULL_HANDLE;
    context_->destroy(canvas_);
    for (VkSemaphore s : render_complete_) vkDestroySemaphore(device, s, nullptr);
    render_complete_.clear();
    images_.clear();
}

void AppWindow::recreate_swapchain() {
    // A minimised window has a zero-sized framebuffer: wait until it is shown again.
    int w = 0, h = 0;
    glfwGetFramebufferSize(window_, &w, &h);
    while ((w == 0 || h == 0) && !glfwWindowShouldClose(window_)) {
        glfwWaitEvents();
        glfwGetFramebufferSize(window_, &w, &h);
    }
    if (w == 0 || h == 0) return;
    if (presenter_) presenter_->wait_idle();
    ATTN_VK(vkDeviceWaitIdle(context_->device()));
    destroy_swapchain_views();
    create_swapchain();
    if (imgui_vulkan_) ImGui_ImplVulkan_SetMinImageCount(min_image_count_);
    swapchain_dirty_ = false;
}

void AppWindow::create_render_pass() {
    // One pass over the canvas, used twice a frame: to clear the damaged rectangles, and for ImGui
    // on top of the maps blitted in between. The canvas is in TRANSFER_DST_OPTIMAL before and after.
    VkSubpassDependency deps[2]{};
    deps[0].srcSubpass = VK_SUBPASS_EXTERNAL;
    deps[0].dstSubpass = 0;
    deps[0].srcStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT;
    deps[0].dstStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
    deps[0].srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT;
    deps[0].dstAccessMask = VK_ACCESS_COLOR_ATTACHMENT_READ_BIT | VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
    deps[1].srcSubpass = 0;
    deps[1].dstSubpass = VK_SUBPASS_EXTERNAL;
    deps[1].srcStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
    deps[1].dstStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT;
    deps[1].srcAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
    deps[1].dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    render_pass_ = context_->create_color_pass(format_.format, VK_ATTACHMENT_LOAD_OP_LOAD,
                                               VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, deps);
}

void AppWindow::load_fonts() {
    ImGuiIO& io = ImGui::GetIO();
    const float px = std::round(options_.base_font_px * scale_);
    const char* latin = first_existing({"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                                        "/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"});
    const char* cjk = first_existing({"/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                                      "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
                                      "/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-Regular.ttc"});
    ImFont* base = nullptr;
    if (latin) {
        // Latin, Latin-1 supplement, Latin Extended-A/B, Greek, Cyrillic, general punctuation, arrows, box drawing.
        static const ImWchar latin_ranges[] = {0x0020, 0x024F, 0x0370, 0x03FF, 0x0400, 0x04FF, 0x2000, 0x206F,
                                               0x2190, 0x21FF, 0x2200, 0x22FF, 0x2500, 0x25FF, 0};
        base = io.Fonts->AddFontFromFileTTF(latin, px, nullptr, latin_ranges);
    }
    if (!base) {
        std::fprintf(stderr, "attnscope: warning: DejaVu Sans not found (Debian: fonts-dejavu-core); using ImGui's default font\n");
        ImFontConfig config;
        config.SizePixels = px;
        base = io.Fonts->AddFontDefault(&config);
        font_note_ = "ImGui default font";
    } else {
        font_note_ = "DejaVu Sans";
    }
    if (cjk) {
        ImFontConfig config;
        config.MergeMode = true;
        config.FontNo = 2;  // NotoSansCJK-Regular.ttc: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK
        config.OversampleH = 1;  // ~2,500 CJK glyphs: keep the atlas small
        config.PixelSnapH = true;
        if (io.Fonts->AddFontFromFileTTF(cjk, px, &config, io.Fonts->GetGlyphRangesChineseSimplifiedCommon()))
            font_note_ += " + Noto Sans CJK SC";
    } else {
        std::fprintf(stderr, "attnscope: warning: Noto Sans CJK not found (Debian: fonts-noto-cjk); Chinese tokens will show as '?'\n");
    }
    // A second, larger copy of the Latin font is not needed: the style scales with the content scale.
    io.Fonts->Build();
}

void AppWindow::init_imgui() {
    IMGUI_CHECKVERSION();
    ImGui::CreateContext();
    ImGuiIO& io = ImGui::GetIO();
    io.IniFilename = nullptr;  // layout is fixed; nothing to persist between runs
    apply_style();

    VkDescriptorPoolSize sizes[] = {{VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 16}};
    VkDescriptorPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    pool_info.flags = VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT;
    pool_info.maxSets = 16;
    pool_info.poolSizeCount = 1;
    pool_info.pPoolSizes = sizes;
    ATTN_VK(vkCreateDescriptorPool(context_->device(), &pool_info, nullptr, &imgui_pool_));

    if (!ImGui_ImplGlfw_InitForVulkan(window_, true)) fail("ImGui_ImplGlfw_InitForVulkan failed");
    imgui_glfw_ = true;
    init_imgui_vulkan();
}

void AppWindow::apply_style() {
    ImGuiStyle style;  // a fresh default, so that scaling twice does not compound
    ImGui::StyleColorsDark(&style);
    style.ScaleAllSizes(scale_);
    style.WindowRounding = 0;
    ImGui::GetStyle() = style;
}

void AppWindow::init_imgui_vulkan() {
    ImGui_ImplVulkan_InitInfo init{};
    init.Instance = context_->instance();
    init.PhysicalDevice = context_->physical_device();
    init.Device = context_->device();
    init.QueueFamily = context_->queue_family();
    init.Queue = context_->queue();
    init.PipelineCache = VK_NULL_HANDLE;
    init.DescriptorPool = imgui_pool_;
    init.Subpass = 0;
    init.MinImageCount = min_image_count_;
    // ImGui cycles its vertex buffers over ImageCount frames; a frame slot is free before it records.
    init.ImageCount = std::max(static_cast<uint32_t>(images_.size()), kFramesInFlight);
    init.MSAASamples = VK_SAMPLE_COUNT_1_BIT;
    init.Allocator = nullptr;
    init.CheckVkResultFn = check_imgui_vk;
    if (!ImGui_ImplVulkan_Init(&init, render_pass_)) fail("ImGui_ImplVulkan_Init failed");
    imgui_vulkan_ = true;

    ImGui::GetIO().Fonts->Clear();
    load_fonts();
    context_->submit_and_wait([](VkCommandBuffer cmd) {
        if (!ImGui_ImplVulkan_CreateFontsTexture(cmd)) fail("ImGui_ImplVulkan_CreateFontsTexture failed");
    });
    ImGui_ImplVulkan_DestroyFontUploadObjects();
}

void AppWindow::set_content_scale(float scale) {
    scale = std::clamp(scale, 0.5f, 4.f);
    if (std::abs(scale - scale_) < 0.01f) return;
    scale_ = scale;
    damage_.invalidate();  // a new font atlas under the same texture
    ++scale_changes_;
    // Debian's ImGui 1.86 Vulkan backend has no call to replace just the font texture, so the
    // backend is shut down and initialised again (its pipeline is cheap to rebuild). Nothing may
    // be in flight: its buffers and the old font image are destroyed.
    ATTN_VK(vkDeviceWaitIdle(context_->device()));
    ImGui_ImplVulkan_Shutdown();
    imgui_vulkan_ = false;
    ATTN_VK(vkResetDescriptorPool(context_->device(), imgui_pool_, 0));  // the old font descriptor set
    apply_style();
    init_imgui_vulkan();
}

bool AppWindow::should_close() const { return glfwWindowShouldClose(window_); }
void AppWindow::request_close() { glfwSetWindowShouldClose(window_, GLFW_TRUE); }

float AppWindow::framebuffer_scale_x() const { return ImGui::GetIO().DisplayFramebufferScale.x; }
float AppWindow::framebuffer_scale_y() const { return ImGui::GetIO().DisplayFramebufferScale.y; }

void AppWindow::wait_events(double seconds) { glfwWaitEventsTimeout(seconds); }

int AppWindow::refresh_rate_hz() const {
    GLFWmonitor* monitor = glfwGetPrimaryMonitor();
    const GLFWvidmode* mode = monitor ? glfwGetVideoMode(monitor) : nullptr;
    return mode ? mode->refreshRate : 0;
}

bool AppWindow::begin_frame() {
    glfwPollEvents();
    int w = 0, h = 0;
    glfwGetFramebufferSize(window_, &w, &h);
    while ((w == 0 || h == 0) && !glfwWindowShouldClose(window_)) {  // minimised
        glfwWaitEvents();
        glfwGetFramebufferSize(window_, &w, &h);
    }
    if (glfwWindowShouldClose(window_)) return false;
    // DPI: the window moved to a monitor with another content scale (GLFW_SCALE_TO_MONITOR has
    // resized it already); fonts and style follow before the frame is built.
    float xs = 1, ys = 1;
    glfwGetWindowContentScale(window_, &xs, &ys);
    if (std::abs(std::max(xs, ys) - reported_scale_) >= 0.01f) {
        reported_scale_ = std::max(xs, ys);
        set_content_scale(reported_scale_);
    }
    if (swapchain_dirty_ || static_cast<uint32_t>(w) != extent_.width || static_cast<uint32_t>(h) != extent_.height)
        recreate_swapchain();
    ImGui_ImplVulkan_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGui::NewFrame();
    return true;
}

bool AppWindow::end_frame(const PreRecord& pre, std::span<const UnderLayer> layers, const std::string& screenshot_path) {
    using Clock = std::chrono::steady_clock;
    const auto ms_since = [](Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); };
    auto phase = Clock::now();
    ImGui::Render();
    ImDrawData* draw_data = ImGui::GetDrawData();
    const bool screenshot = !screenshot_path.empty();
    if (presenter_ && !screenshot && !presenter_->slot_free(static_cast<int>(frame_index_))) {
        // x11-shm: the rasteriser or the X server is still on the frames before. Rather than wait,
        // the UI thread skips drawing this one; the damage stays against the last drawn frame, so
        // the next drawn frame carries this one's changes too.
        last_timing_ = {};
        last_timing_.deferred = true;
        return true;
    }
    if (options_.full_redraw) damage_.invalidate();
    const std::vector<VkRect2D> damage = damage_.update(*draw_data, layers, extent_);
    last_timing_ = {};
    last_timing_.damage_ms = ms_since(phase);
    last_timing_.damaged_fraction = damage_.damaged_fraction();
    // x11-shm: an exposed window (or a new one) is sent whole, even if nothing changed.
    const bool put_whole = presenter_ && put_whole_;
    // Nothing changed on screen: the window keeps showing the last presented image.
    if (damage.empty() && !screenshot && !put_whole) return true;

    phase = Clock::now();
    VkDevice device = context_->device();
    Frame& frame = frames_[frame_index_];
    uint32_t image_index = 0;
    if (presenter_) {
        presenter_->wait_until_free(static_cast<int>(frame_index_));  // its put done, so its fence too
    } else {
        ATTN_VK(vkWaitForFences(device, 1, &frame.fence, VK_TRUE, UINT64_MAX));
        const VkResult acquired =
            vkAcquireNextImageKHR(device, swapchain_, UINT64_MAX, frame.image_acquired, VK_NULL_HANDLE, &image_index);
        if (acquired == VK_ERROR_OUT_OF_DATE_KHR) {
            recreate_swapchain();
            return false;
        }
        if (acquired == VK_SUBOPTIMAL_KHR) swapchain_dirty_ = true;
        else ATTN_VK(acquired);
    }
    ATTN_VK(vkResetFences(device, 1, &frame.fence));
    last_timing_.wait_ms = ms_since(phase);
    phase = Clock::now();

    VkCommandBuffer cmd = frame.cmd;
    ATTN_VK(vkResetCommandBuffer(cmd, 0));
    VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    ATTN_VK(vkBeginCommandBuffer(cmd, &begin));

    const VkImageSubresourceRange whole{VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1};
    const auto image_barrier = [&](VkImage image, VkImageLayout from, VkImageLayout to, VkAccessFlags src_access,
                                   VkAccessFlags dst_access, VkPipelineStageFlags src_stage, VkPipelineStageFlags dst_stage) {
        VkImageMemoryBarrier barrier{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
        barrier.srcAccessMask = src_access;
        barrier.dstAccessMask = dst_access;
        barrier.oldLayout = from;
        barrier.newLayout = to;
        barrier.srcQueueFamilyIndex = barrier.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
        barrier.image = image;
        barrier.subresourceRange = whole;
        vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 0, nullptr, 0, nullptr, 1, &barrier);
    };
    // The canvas: last frame's copy read it (TRANSFER_SRC); this frame writes it.
    image_barrier(canvas_.image, canvas_initialised_ ? VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL : VK_IMAGE_LAYOUT_UNDEFINED,
                  VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_ACCESS_TRANSFER_READ_BIT,
                  VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT);
    canvas_initialised_ = true;

    VkRenderPassBeginInfo pass{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
    pass.renderPass = render_pass_;
    pass.framebuffer = canvas_framebuffer_;
    pass.renderArea.extent = extent_;
    if (!damage.empty()) {
        // 1. the damaged rectangles to the background colour (not where a layer's blit covers them),
        vkCmdBeginRenderPass(cmd, &pass, VK_SUBPASS_CONTENTS_INLINE);
        const ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
        VkClearAttachment clear{};
        clear.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
        clear.colorAttachment = 0;
        clear.clearValue.color = VkClearColorValue{{bg.x, bg.y, bg.z, 1.0f}};
        std::vector<VkClearRect> clear_rects;
        for (const VkRect2D& r : uncovered_parts(damage, layers)) clear_rects.push_back(VkClearRect{r, 0, 1});
        if (!clear_rects.empty())
            vkCmdClearAttachments(cmd, 1, &clear, static_cast<uint32_t>(clear_rects.size()), clear_rects.data());
        vkCmdEndRenderPass(cmd);
        // 2. the maps under the UI, inside them,
        if (pre) pre(cmd, canvas_.image, extent_, damage);
        // 3. ImGui on top, clipped to them.
        clip_draw_data(*draw_data, damage, extent_);
        vkCmdBeginRenderPass(cmd, &pass, VK_SUBPASS_CONTENTS_INLINE);
        ImGui_ImplVulkan_RenderDrawData(draw_data, cmd);
        vkCmdEndRenderPass(cmd);
    }

    image_barrier(canvas_.image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                  VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT, VK_ACCESS_TRANSFER_READ_BIT,
                  VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
    std::vector<VkRect2D> put_rects;
    if (presenter_) {
        // What changed, out of the canvas into the frame's shared-memory segment.
        put_rects = put_whole ? std::vector<VkRect2D>{VkRect2D{{0, 0}, extent_}} : damage;
        presenter_->record_copy(cmd, canvas_.image, static_cast<int>(frame_index_), put_rects);
    } else {
        // The canvas into the swapchain image.
        VkImage image = images_[image_index];
        image_barrier(image, VK_IMAGE_LAYOUT_UNDEFINED, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 0, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
        VkImageCopy copy{};
        copy.srcSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
        copy.dstSubresource = copy.srcSubresource;
        copy.extent = {extent_.width, extent_.height, 1};
        vkCmdCopyImage(cmd, canvas_.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1,
                       &copy);
        image_barrier(image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_PRESENT_SRC_KHR, VK_ACCESS_TRANSFER_WRITE_BIT,
                      0, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT);
    }

    if (screenshot) {
        const VkDeviceSize bytes = VkDeviceSize(extent_.width) * extent_.height * 4;
        if (screenshot_buffer_.size < bytes) {
            context_->destroy(screenshot_buffer_);
            screenshot_buffer_ = context_->create_buffer(bytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true);
        }
        VkBufferImageCopy to_buffer{};
        to_buffer.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
        to_buffer.imageExtent = {extent_.width, extent_.height, 1};
        vkCmdCopyImageToBuffer(cmd, canvas_.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, screenshot_buffer_.buffer, 1, &to_buffer);
        render::record_transfer_to_host_barrier(cmd, screenshot_buffer_.buffer);
    }
    ATTN_VK(vkEndCommandBuffer(cmd));

    const VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
    VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &cmd;
    if (!presenter_) {
        submit.waitSemaphoreCount = 1;
        submit.pWaitSemaphores = &frame.image_acquired;
        submit.pWaitDstStageMask = &wait_stage;
        submit.signalSemaphoreCount = 1;
        submit.pSignalSemaphores = &render_complete_[image_index];
    }
    ATTN_VK(vkQueueSubmit(context_->queue(), 1, &submit, frame.fence));
    last_timing_.record_submit_ms = ms_since(phase);

    if (screenshot) {
        ATTN_VK(vkWaitForFences(device, 1, &frame.fence, VK_TRUE, UINT64_MAX));
        write_screenshot(screenshot_path);
    }

    phase = Clock::now();
    if (presenter_) {
        // The put thread sends the rectangles once the GPU is done; the UI thread goes on.
        presenter_->queue_put(static_cast<int>(frame_index_), frame.fence, std::move(put_rects));
        put_whole_ = false;
    } else {
        VkPresentInfoKHR present{VK_STRUCTURE_TYPE_PRESENT_INFO_KHR};
        present.waitSemaphoreCount = 1;
        present.pWaitSemaphores = &render_complete_[image_index];
        present.swapchainCount = 1;
        present.pSwapchains = &swapchain_;
        present.pImageIndices = &image_index;
        const VkResult presented = vkQueuePresentKHR(context_->queue(), &present);
        if (presented == VK_ERROR_OUT_OF_DATE_KHR || presented == VK_SUBOPTIMAL_KHR) swapchain_dirty_ = true;
        else ATTN_VK(presented);
    }
    last_timing_.present_ms = ms_since(phase);
    last_timing_.drawn = true;
    frame_index_ = (frame_index_ + 1) % kFramesInFlight;
    ++frames_presented_;
    return true;
}

void AppWindow::wait_presented() {
    if (presenter_) presenter_->wait_idle();
    else ATTN_VK(vkQueueWaitIdle(context_->queue()));
}

void AppWindow::write_screenshot(const std::string& path) {
    const uint32_t w = extent_.width, h = extent_.height;
    std::vector<uint8_t> rgba(size_t(w) * h * 4);
    std::memcpy(rgba.data(), screenshot_buffer_.mapped, rgba.size());
    const bool bgra = format_.format == VK_FORMAT_B8G8R8A8_UNORM || format_.format == VK_FORMAT_B8G8R8A8_SRGB;
    for (size_t i = 0; i < rgba.size(); i += 4) {
        if (bgra) std::swap(rgba[i], rgba[i + 2]);
        rgba[i + 3] = 255;
    }
    if (!stbi_write_png(path.c_str(), static_cast<int>(w), static_cast<int>(h), 4, rgba.data(), static_cast<int>(w) * 4))
        fail(path, ": could not write the screenshot");
}

}  // namespace attn::app
