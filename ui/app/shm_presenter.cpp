#include "ui/app/shm_presenter.h"

#include "engine/error.h"

namespace attn::app {

PresentPath parse_present_path(const std::string& text) {
    if (text == "auto") return PresentPath::Auto;
    if (text == "swapchain") return PresentPath::Swapchain;
    if (text == "x11-shm") return PresentPath::SharedMemory;
    fail("--present must be auto, swapchain or x11-shm, not '", text, "'");
}

const char* present_path_name(PresentPath path) {
    switch (path) {
        case PresentPath::Auto: return "auto";
        case PresentPath::Swapchain: return "swapchain";
        case PresentPath::SharedMemory: return "x11-shm";
    }
    return "?";
}

}  // namespace attn::app

#ifndef ATTNSCOPE_HAVE_XCB_SHM

namespace attn::app {
std::unique_ptr<ShmPresenter> ShmPresenter::open(render::VulkanContext&, GLFWwindow*, int, std::string& why_not) {
    why_not = "built without xcb-shm (Debian: libxcb-shm0-dev)";
    return nullptr;
}
}  // namespace attn::app

#else

#include <GLFW/glfw3.h>
#include <dlfcn.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <xcb/shm.h>
#include <xcb/xcb.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

namespace attn::app {

namespace {

// GLFW's X11 window handle. Looked up at run time rather than through glfw3native.h: that header
// pulls in Xlib and Xrandr, and a GLFW built for Wayland only has no such function at all.
uint32_t x11_window_of(GLFWwindow* window) {
    using GetX11Window = unsigned long (*)(GLFWwindow*);
    auto get = reinterpret_cast<GetX11Window>(dlsym(RTLD_DEFAULT, "glfwGetX11Window"));
    return get ? static_cast<uint32_t>(get(window)) : 0;
}

struct Slot {
    uint32_t segment = 0;  // xcb_shm_seg_t, 0 when none
    int shm_id = -1;
    void* address = nullptr;
    VkDeviceSize bytes = 0;
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    bool busy = false;  // queued for, or waiting on, the put thread
};

struct PutJob {
    int slot = 0;
    VkFence fence = VK_NULL_HANDLE;
    std::vector<VkRect2D> rects;
};

class XcbShmPresenter final : public ShmPresenter {
public:
    XcbShmPresenter(render::VulkanContext& context, xcb_connection_t* connection, uint32_t window, uint8_t depth,
                    uint8_t completion_event, VkDeviceSize alignment, int slots)
        : context_(context), connection_(connection), window_(window), depth_(depth),
          completion_event_(completion_event), alignment_(alignment), slots_(static_cast<size_t>(slots)) {
        gc_ = xcb_generate_id(connection_);
        const uint32_t no_exposures = 0;  // no GraphicsExpose/NoExpose events for our puts
        xcb_create_gc(connection_, gc_, window_, XCB_GC_GRAPHICS_EXPOSURES, &no_exposures);
        get_host_pointer_properties_ = reinterpret_cast<PFN_vkGetMemoryHostPointerPropertiesEXT>(
            vkGetDeviceProcAddr(context_.device(), "vkGetMemoryHostPointerPropertiesEXT"));
        if (!get_host_pointer_properties_) fail("vkGetMemoryHostPointerPropertiesEXT is not available");
        thread_ = std::thread([this] { put_loop(); });
    }

    ~XcbShmPresenter() override {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
        release_slots();
        xcb_free_gc(connection_, gc_);
        xcb_disconnect(connection_);
    }

    // Attaches one segment to check that the server can read our memory (it cannot when the
    // display is on another machine): the caller falls back to the swapchain then.
    bool probe(VkExtent2D extent, std::string& why_not) {
        try {
            resize(extent);
        } catch (const Error& e) {
            why_not = e.what();
            return false;
        }
        return true;
    }

    void resize(VkExtent2D extent) override {
        wait_idle();
        release_slots();
        extent_ = extent;
        const VkDeviceSize bytes = VkDeviceSize(std::max(1u, extent.width)) * std::max(1u, extent.height) * 4;
        const VkDeviceSize rounded = (bytes + alignment_ - 1) / alignment_ * alignment_;
        for (Slot& slot : slots_) create_slot(slot, rounded);
    }

    void wait_until_free(int slot) override {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return !slots_[static_cast<size_t>(slot)].busy; });
        if (!error_.empty()) fail(error_);
    }

    bool slot_free(int slot) override {
        std::lock_guard lock(mutex_);
        if (!error_.empty()) fail(error_);
        return !slots_[static_cast<size_t>(slot)].busy;
    }

    void record_copy(VkCommandBuffer cmd, VkImage canvas, int slot, std::span<const VkRect2D> rects) const override {
        const Slot& s = slots_[static_cast<size_t>(slot)];
        std::vector<VkBufferImageCopy> regions;
        regions.reserve(rects.size());
        for (const VkRect2D& r : rects) {
            const VkRect2D c = clipped(r);
            if (c.extent.width == 0 || c.extent.height == 0) continue;
            VkBufferImageCopy region{};
            // The segment is laid out as the X image: rows of the window's width, 4 bytes a pixel.
            region.bufferOffset = (VkDeviceSize(c.offset.y) * extent_.width + VkDeviceSize(c.offset.x)) * 4;
            region.bufferRowLength = extent_.width;
            region.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
            region.imageOffset = {c.offset.x, c.offset.y, 0};
            region.imageExtent = {c.extent.width, c.extent.height, 1};
            regions.push_back(region);
        }
        if (!regions.empty())
            vkCmdCopyImageToBuffer(cmd, canvas, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, s.buffer,
                                   static_cast<uint32_t>(regions.size()), regions.data());
        render::record_transfer_to_host_barrier(cmd, s.buffer);
    }

    void queue_put(int slot, VkFence fence, std::vector<VkRect2D> rects) override {
        {
            std::lock_guard lock(mutex_);
            slots_[static_cast<size_t>(slot)].busy = true;
            jobs_.push_back(PutJob{slot, fence, std::move(rects)});
        }
        wake_.notify_all();
    }

    void wait_idle() override {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] {
            return jobs_.empty() && std::none_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.busy; });
        });
    }

private:
    VkRect2D clipped(const VkRect2D& r) const {
        const int32_t x0 = std::clamp<int32_t>(r.offset.x, 0, static_cast<int32_t>(extent_.width));
        const int32_t y0 = std::clamp<int32_t>(r.offset.y, 0, static_cast<int32_t>(extent_.height));
        const int32_t x1 = std::clamp<int32_t>(r.offset.x + static_cast<int32_t>(r.extent.width), x0,
                                               static_cast<int32_t>(extent_.width));
        const int32_t y1 = std::clamp<int32_t>(r.offset.y + static_cast<int32_t>(r.extent.height), y0,
                                               static_cast<int32_t>(extent_.height));
        return VkRect2D{{x0, y0}, {static_cast<uint32_t>(x1 - x0), static_cast<uint32_t>(y1 - y0)}};
    }

    void create_slot(Slot& slot, VkDeviceSize bytes) {
        slot.bytes = bytes;
        slot.shm_id = shmget(IPC_PRIVATE, bytes, IPC_CREAT | 0600);
        if (slot.shm_id < 0) fail("shmget of ", bytes, " bytes failed (kernel.shmmax?)");
        slot.address = shmat(slot.shm_id, nullptr, 0);
        if (slot.address == reinterpret_cast<void*>(-1)) {
            slot.address = nullptr;
            shmctl(slot.shm_id, IPC_RMID, nullptr);
            slot.shm_id = -1;
            fail("shmat failed");
        }
        slot.segment = xcb_generate_id(connection_);
        xcb_generic_error_t* error =
            xcb_request_check(connection_, xcb_shm_attach_checked(connection_, slot.segment, slot.shm_id, 1));
        // The segment goes away with its last attachment (ours or the server's), even if we crash.
        shmctl(slot.shm_id, IPC_RMID, nullptr);
        if (error) {
            const int code = error->error_code;
            free(error);
            slot.segment = 0;
            fail("the X server cannot attach our shared memory (error ", code, "; a display on another machine?)");
        }

        // The same bytes as a Vulkan buffer, for the canvas copy.
        VkExternalMemoryBufferCreateInfo external{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
        external.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
        VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
        info.pNext = &external;
        info.size = bytes;
        info.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
        info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
        ATTN_VK(vkCreateBuffer(context_.device(), &info, nullptr, &slot.buffer));
        VkMemoryRequirements requirements{};
        vkGetBufferMemoryRequirements(context_.device(), slot.buffer, &requirements);
        VkMemoryHostPointerPropertiesEXT pointer{VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
        ATTN_VK(get_host_pointer_properties_(context_.device(), VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
                                             slot.address, &pointer));
        // Host-coherent: the put thread reads the bytes through our own pointer, with no invalidate.
        const uint32_t type = context_.memory_type(requirements.memoryTypeBits & pointer.memoryTypeBits,
                                                   VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
        VkImportMemoryHostPointerInfoEXT import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
        import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
        import.pHostPointer = slot.address;
        VkMemoryAllocateInfo allocate{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
        allocate.pNext = &import;
        allocate.allocationSize = bytes;
        allocate.memoryTypeIndex = type;
        ATTN_VK(vkAllocateMemory(context_.device(), &allocate, nullptr, &slot.memory));
        ATTN_VK(vkBindBufferMemory(context_.device(), slot.buffer, slot.memory, 0));
    }

    // Only with no slot in use (after wait_idle, or before the thread saw any job).
    void release_slots() {
        for (Slot& slot : slots_) {
            if (slot.buffer) vkDestroyBuffer(context_.device(), slot.buffer, nullptr);
            if (slot.memory) vkFreeMemory(context_.device(), slot.memory, nullptr);
            if (slot.segment) xcb_shm_detach(connection_, slot.segment);
            if (slot.address) shmdt(slot.address);
            slot = Slot{};
        }
        xcb_flush(connection_);
    }

    void put_loop() {
        for (;;) {
            PutJob job;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
                if (jobs_.empty()) return;  // stopping, nothing left
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            std::string failure = put(job);
            {
                std::lock_guard lock(mutex_);
                slots_[static_cast<size_t>(job.slot)].busy = false;
                if (!failure.empty() && error_.empty()) error_ = std::move(failure);
            }
            done_.notify_all();
        }
    }

    // Returns what went wrong, or "".
    std::string put(const PutJob& job) {
        const VkResult waited = vkWaitForFences(context_.device(), 1, &job.fence, VK_TRUE, UINT64_MAX);
        if (waited != VK_SUCCESS) return cat("presenting: vkWaitForFences failed: ", render::vk_result_name(waited));
        const Slot& slot = slots_[static_cast<size_t>(job.slot)];
        std::vector<VkRect2D> rects;
        for (const VkRect2D& r : job.rects) {
            const VkRect2D c = clipped(r);
            if (c.extent.width > 0 && c.extent.height > 0) rects.push_back(c);
        }
        if (rects.empty()) return {};
        for (size_t i = 0; i < rects.size(); ++i) {
            const VkRect2D& r = rects[i];
            const bool last = i + 1 == rects.size();
            xcb_shm_put_image(connection_, window_, gc_, static_cast<uint16_t>(extent_.width),
                              static_cast<uint16_t>(extent_.height), static_cast<uint16_t>(r.offset.x),
                              static_cast<uint16_t>(r.offset.y), static_cast<uint16_t>(r.extent.width),
                              static_cast<uint16_t>(r.extent.height), static_cast<int16_t>(r.offset.x),
                              static_cast<int16_t>(r.offset.y), depth_, XCB_IMAGE_FORMAT_Z_PIXMAP, last ? 1 : 0,
                              slot.segment, 0);
        }
        xcb_flush(connection_);
        // The server reads the segment after the request; the slot is reusable once it says so.
        for (;;) {
            xcb_generic_event_t* event = xcb_wait_for_event(connection_);
            if (!event) return "presenting: the X connection was lost";
            const uint8_t type = event->response_type & 0x7f;
            if (type == 0) {
                const auto* error = reinterpret_cast<const xcb_generic_error_t*>(event);
                std::string message = cat("presenting: the X server refused ShmPutImage (error ",
                                          static_cast<int>(error->error_code), ", major ",
                                          static_cast<int>(error->major_code), ")");
                free(event);
                return message;
            }
            const bool ours = type == completion_event_ &&
                              reinterpret_cast<const xcb_shm_completion_event_t*>(event)->shmseg == slot.segment;
            free(event);
            if (ours) return {};
        }
    }

    render::VulkanContext& context_;
    xcb_connection_t* connection_;
    uint32_t window_;
    uint8_t depth_;
    uint8_t completion_event_;
    VkDeviceSize alignment_;
    uint32_t gc_ = 0;
    PFN_vkGetMemoryHostPointerPropertiesEXT get_host_pointer_properties_ = nullptr;
    VkExtent2D extent_{};
    std::vector<Slot> slots_;

    mutable std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::deque<PutJob> jobs_;
    bool stopping_ = false;
    std::string error_;
    std::thread thread_;
};

// The window's visual must be what B8G8R8A8 bytes mean to the server: true colour, red in bits
// 16–23, 32 bits a pixel, least significant byte first.
std::string check_visual(xcb_connection_t* connection, uint32_t window, uint8_t& depth) {
    const xcb_setup_t* setup = xcb_get_setup(connection);
    if (setup->image_byte_order != XCB_IMAGE_ORDER_LSB_FIRST) return "the X server's images are big-endian";
    xcb_get_geometry_reply_t* geometry = xcb_get_geometry_reply(connection, xcb_get_geometry(connection, window), nullptr);
    xcb_get_window_attributes_reply_t* attributes =
        xcb_get_window_attributes_reply(connection, xcb_get_window_attributes(connection, window), nullptr);
    if (!geometry || !attributes) {
        free(geometry);
        free(attributes);
        return "the window is not known to the X server";
    }
    depth = geometry->depth;
    const uint32_t visual_id = attributes->visual;
    free(geometry);
    free(attributes);
    if (depth != 24 && depth != 32) return cat("the window is ", static_cast<int>(depth), " bits deep, not 24 or 32");
    bool format_ok = false;
    for (auto it = xcb_setup_pixmap_formats_iterator(setup); it.rem; xcb_format_next(&it))
        if (it.data->depth == depth) format_ok = it.data->bits_per_pixel == 32;
    if (!format_ok) return "the window's depth is not stored at 32 bits a pixel";
    for (auto screen = xcb_setup_roots_iterator(setup); screen.rem; xcb_screen_next(&screen))
        for (auto d = xcb_screen_allowed_depths_iterator(screen.data); d.rem; xcb_depth_next(&d))
            for (auto v = xcb_depth_visuals_iterator(d.data); v.rem; xcb_visualtype_next(&v))
                if (v.data->visual_id == visual_id) {
                    const bool bgrx = v.data->_class == XCB_VISUAL_CLASS_TRUE_COLOR && v.data->red_mask == 0xff0000 &&
                                      v.data->green_mask == 0xff00 && v.data->blue_mask == 0xff;
                    return bgrx ? "" : "the window's visual is not 8-bit BGRX true colour";
                }
    return "the window's visual was not found";
}

}  // namespace

std::unique_ptr<ShmPresenter> ShmPresenter::open(render::VulkanContext& context, GLFWwindow* window, int slots,
                                                 std::string& why_not) {
    if (!context.has_device_extension(kShmPresenterDeviceExtension)) {
        why_not = cat("the Vulkan device has no ", kShmPresenterDeviceExtension);
        return nullptr;
    }
    const uint32_t x11_window = x11_window_of(window);
    if (!x11_window) {
        why_not = "not an X11 window";
        return nullptr;
    }
    // A connection of our own: its ShmCompletion events are ours, not GLFW's.
    xcb_connection_t* connection = xcb_connect(nullptr, nullptr);
    if (!connection || xcb_connection_has_error(connection)) {
        if (connection) xcb_disconnect(connection);
        why_not = "cannot open a second X connection";
        return nullptr;
    }
    const auto fail_with = [&](std::string reason) -> std::unique_ptr<ShmPresenter> {
        xcb_disconnect(connection);
        why_not = std::move(reason);
        return nullptr;
    };
    const xcb_query_extension_reply_t* shm = xcb_get_extension_data(connection, &xcb_shm_id);
    if (!shm || !shm->present) return fail_with("the X server has no MIT-SHM");
    uint8_t depth = 0;
    if (std::string visual = check_visual(connection, x11_window, depth); !visual.empty()) return fail_with(visual);

    VkPhysicalDeviceExternalMemoryHostPropertiesEXT host{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
    VkPhysicalDeviceProperties2 properties{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    properties.pNext = &host;
    vkGetPhysicalDeviceProperties2(context.physical_device(), &properties);
    const VkDeviceSize alignment = std::max<VkDeviceSize>(host.minImportedHostPointerAlignment, 4096);

    int width = 0, height = 0;
    glfwGetFramebufferSize(window, &width, &height);
    auto presenter = std::make_unique<XcbShmPresenter>(context, connection, x11_window, depth,
                                                       static_cast<uint8_t>(shm->first_event + XCB_SHM_COMPLETION),
                                                       alignment, slots);
    if (!presenter->probe(VkExtent2D{static_cast<uint32_t>(std::max(width, 1)), static_cast<uint32_t>(std::max(height, 1))},
                          why_not))
        return nullptr;  // the presenter's destructor closes the connection
    return presenter;
}

}  // namespace attn::app

#endif
