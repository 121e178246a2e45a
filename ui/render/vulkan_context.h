#pragma once
// The Vulkan instance, device, queue and command pool the renderer runs on, plus the small
// allocation helpers everything above uses. Every Vulkan call is checked: a failing VkResult
// becomes an attn::Error naming the call and the file:line it was made from.
//
// Validation: when enabled, the Khronos validation layer is loaded with a debug messenger that
// records every error message; tests assert that validation_errors() stays empty.
#include <vulkan/vulkan.h>

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attn::render {

// Throws attn::Error("vkCall failed: VK_ERROR_… at file:line") unless result is VK_SUCCESS.
void check_vk(VkResult result, const char* call, const char* file, int line);
const char* vk_result_name(VkResult result);
#define ATTN_VK(call) ::attn::render::check_vk((call), #call, __FILE__, __LINE__)

struct VulkanContextOptions {
    bool validation = false;            // load VK_LAYER_KHRONOS_validation and record its errors
    bool require_validation = false;    // fail if the layer is not installed (tests)
    std::vector<const char*> instance_extensions;  // e.g. what GLFW needs for a surface
    std::vector<const char*> device_extensions;    // e.g. VK_KHR_swapchain
    std::vector<const char*> optional_device_extensions;  // enabled where the device has them (has_device_extension)
    // Hook for CUDA interop (DESIGN.md §2): pick the physical device whose deviceUUID matches.
    std::optional<std::array<uint8_t, VK_UUID_SIZE>> preferred_device_uuid;
};

// Makes a buffer's transfer writes visible to the host (before reading it after the fence).
void record_transfer_to_host_barrier(VkCommandBuffer cmd, VkBuffer buffer);

struct GpuBuffer {
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkDeviceSize size = 0;
    void* mapped = nullptr;  // host-visible buffers stay mapped for their whole life
};

struct GpuImage {
    VkImage image = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkImageView view = VK_NULL_HANDLE;
    VkFormat format = VK_FORMAT_UNDEFINED;
    uint32_t width = 0, height = 0, layers = 0;
    VkDeviceSize bytes = 0;
};

class VulkanContext {
public:
    explicit VulkanContext(const VulkanContextOptions& options);
    ~VulkanContext();
    VulkanContext(const VulkanContext&) = delete;
    VulkanContext& operator=(const VulkanContext&) = delete;

    VkInstance instance() const { return instance_; }
    VkPhysicalDevice physical_device() const { return physical_device_; }
    VkDevice device() const { return device_; }
    VkQueue queue() const { return queue_; }
    uint32_t queue_family() const { return queue_family_; }
    VkCommandPool command_pool() const { return command_pool_; }
    const VkPhysicalDeviceProperties& properties() const { return properties_; }
    std::string device_description() const;  // "llvmpipe (LLVM 15…) [cpu, Vulkan 1.3.230]"
    bool validation_enabled() const { return validation_enabled_; }
    // Whether the device was created with this extension (required or optional ones).
    bool has_device_extension(std::string_view name) const;

    // Validation-layer errors recorded so far (and warnings, for the log), oldest first.
    std::vector<std::string> validation_errors() const;
    std::vector<std::string> validation_warnings() const;
    void clear_validation_messages();

    uint32_t memory_type(uint32_t type_bits, VkMemoryPropertyFlags wanted) const;
    VkDeviceMemory allocate(const VkMemoryRequirements& requirements, VkMemoryPropertyFlags wanted);
    GpuBuffer create_buffer(VkDeviceSize size, VkBufferUsageFlags usage, bool host_visible);
    void destroy(GpuBuffer& buffer);
    // A 2D (array) image in GENERAL layout with a view of the whole array.
    GpuImage create_image(VkFormat format, uint32_t width, uint32_t height, uint32_t layers, VkImageUsageFlags usage);
    void destroy(GpuImage& image);
    VkShaderModule create_shader(const uint32_t* words, size_t word_count);
    // A render pass of one colour attachment and one subpass (every pass here is one).
    VkRenderPass create_color_pass(VkFormat format, VkAttachmentLoadOp load, VkImageLayout initial_layout,
                                   VkImageLayout final_layout, std::span<const VkSubpassDependency> dependencies);

    // Records commands into a one-time command buffer, submits it and waits.
    void submit_and_wait(const std::function<void(VkCommandBuffer)>& record);

private:
    static VKAPI_ATTR VkBool32 VKAPI_CALL on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                           VkDebugUtilsMessageTypeFlagsEXT types,
                                                           const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                           void* self);
    void pick_physical_device(const VulkanContextOptions& options);

    VkInstance instance_ = VK_NULL_HANDLE;
    VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
    VkPhysicalDevice physical_device_ = VK_NULL_HANDLE;
    VkPhysicalDeviceProperties properties_{};
    VkPhysicalDeviceMemoryProperties memory_properties_{};
    VkDevice device_ = VK_NULL_HANDLE;
    VkQueue queue_ = VK_NULL_HANDLE;
    uint32_t queue_family_ = 0;
    VkCommandPool command_pool_ = VK_NULL_HANDLE;
    VkFence submit_fence_ = VK_NULL_HANDLE;
    bool validation_enabled_ = false;
    std::vector<std::string> device_extensions_;  // enabled at vkCreateDevice

    mutable std::mutex messages_mutex_;
    std::vector<std::string> errors_, warnings_;
};

}  // namespace attn::render
