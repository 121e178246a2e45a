#include "ui/render/vulkan_context.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "engine/error.h"

namespace attn::render {

const char* vk_result_name(VkResult result) {
    switch (result) {
#define ATTN_VK_CASE(name) \
    case name:             \
        return #name;
        ATTN_VK_CASE(VK_SUCCESS)
        ATTN_VK_CASE(VK_NOT_READY)
        ATTN_VK_CASE(VK_TIMEOUT)
        ATTN_VK_CASE(VK_INCOMPLETE)
        ATTN_VK_CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
        ATTN_VK_CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        ATTN_VK_CASE(VK_ERROR_INITIALIZATION_FAILED)
        ATTN_VK_CASE(VK_ERROR_DEVICE_LOST)
        ATTN_VK_CASE(VK_ERROR_MEMORY_MAP_FAILED)
        ATTN_VK_CASE(VK_ERROR_LAYER_NOT_PRESENT)
        ATTN_VK_CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
        ATTN_VK_CASE(VK_ERROR_FEATURE_NOT_PRESENT)
        ATTN_VK_CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
        ATTN_VK_CASE(VK_ERROR_TOO_MANY_OBJECTS)
        ATTN_VK_CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
        ATTN_VK_CASE(VK_ERROR_OUT_OF_DATE_KHR)
        ATTN_VK_CASE(VK_ERROR_SURFACE_LOST_KHR)
        ATTN_VK_CASE(VK_SUBOPTIMAL_KHR)
#undef ATTN_VK_CASE
        default:
            return "VkResult(unknown)";
    }
}

void check_vk(VkResult result, const char* call, const char* file, int line) {
    if (result == VK_SUCCESS) return;
    std::string where = std::filesystem::path(file).filename().string();
    fail(call, " failed: ", vk_result_name(result), " (", static_cast<int>(result), ") at ", where, ":", line);
}

namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

bool has_layer(const char* name) {
    uint32_t count = 0;
    ATTN_VK(vkEnumerateInstanceLayerProperties(&count, nullptr));
    std::vector<VkLayerProperties> layers(count);
    ATTN_VK(vkEnumerateInstanceLayerProperties(&count, layers.data()));
    return std::any_of(layers.begin(), layers.end(), [&](const VkLayerProperties& l) { return !std::strcmp(l.layerName, name); });
}

const char* device_type_name(VkPhysicalDeviceType type) {
    switch (type) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete gpu";
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated gpu";
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual gpu";
        case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
        default: return "other";
    }
}

// Higher is better: real GPUs first, then software rasterisers such as lavapipe.
int device_rank(VkPhysicalDeviceType type) {
    switch (type) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
        case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
        default: return 0;
    }
}

std::string no_device_hint() {
    const char* icd = std::getenv("VK_ICD_FILENAMES");
    const char* drivers = std::getenv("VK_DRIVER_FILES");
    std::string hint = "no Vulkan physical device found";
    if (!icd && !drivers) {
        const char* lavapipe = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
        if (std::filesystem::exists(lavapipe))
            hint += cat("; try VK_DRIVER_FILES=", lavapipe, " (Mesa's lavapipe, a CPU Vulkan driver)");
        else
            hint += "; install a Vulkan driver (Debian: mesa-vulkan-drivers provides lavapipe)";
    } else {
        hint += cat("; VK_ICD_FILENAMES=", icd ? icd : "(unset)", " VK_DRIVER_FILES=", drivers ? drivers : "(unset)");
    }
    return hint;
}

}  // namespace

VulkanContext::VulkanContext(const VulkanContextOptions& options) {
    std::vector<const char*> layers;
    std::vector<const char*> extensions = options.instance_extensions;
    if (options.validation) {
        if (has_layer(kValidationLayer)) {
            layers.push_back(kValidationLayer);
            extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
            validation_enabled_ = true;
        } else if (options.require_validation) {
            fail("Vulkan validation requested but ", kValidationLayer,
                 " is not installed (Debian: vulkan-validationlayers)");
        } else {
            std::fprintf(stderr, "attnscope: warning: %s not installed; running without validation\n", kValidationLayer);
        }
    }

    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "attnscope";
    app.pEngineName = "attnscope";
    app.apiVersion = VK_API_VERSION_1_2;

    VkDebugUtilsMessengerCreateInfoEXT messenger_info{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    messenger_info.messageSeverity =
        VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    messenger_info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                                 VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT;
    // Performance hints are left out on purpose: the tile arrays stay in GENERAL layout (copies,
    // storage writes and sampling all touch them) and the layer would flag every copy.
    messenger_info.pfnUserCallback = &VulkanContext::on_debug_message;
    messenger_info.pUserData = this;

    VkInstanceCreateInfo instance_info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    instance_info.pApplicationInfo = &app;
    instance_info.enabledLayerCount = static_cast<uint32_t>(layers.size());
    instance_info.ppEnabledLayerNames = layers.data();
    instance_info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
    instance_info.ppEnabledExtensionNames = extensions.data();
    // Chained so that instance creation and destruction are validated too.
    if (validation_enabled_) instance_info.pNext = &messenger_info;
    const VkResult created = vkCreateInstance(&instance_info, nullptr, &instance_);
    if (created == VK_ERROR_INCOMPATIBLE_DRIVER) fail("vkCreateInstance failed: VK_ERROR_INCOMPATIBLE_DRIVER; ", no_device_hint());
    ATTN_VK(created);

    if (validation_enabled_) {
        auto create_messenger = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
            vkGetInstanceProcAddr(instance_, "vkCreateDebugUtilsMessengerEXT"));
        if (!create_messenger) fail("vkCreateDebugUtilsMessengerEXT is not available");
        ATTN_VK(create_messenger(instance_, &messenger_info, nullptr, &messenger_));
    }

    pick_physical_device(options);

    VkDeviceQueueCreateInfo queue_info{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    const float priority = 1.0f;
    queue_info.queueFamilyIndex = queue_family_;
    queue_info.queueCount = 1;
    queue_info.pQueuePriorities = &priority;
    VkDeviceCreateInfo device_info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    device_info.queueCreateInfoCount = 1;
    device_info.pQueueCreateInfos = &queue_info;
    std::vector<const char*> device_extensions = options.device_extensions;
    if (!options.optional_device_extensions.empty()) {
        uint32_t count = 0;
        ATTN_VK(vkEnumerateDeviceExtensionProperties(physical_device_, nullptr, &count, nullptr));
        std::vector<VkExtensionProperties> available(count);
        ATTN_VK(vkEnumerateDeviceExtensionProperties(physical_device_, nullptr, &count, available.data()));
        for (const char* wanted : options.optional_device_extensions)
            for (const VkExtensionProperties& e : available)
                if (std::strcmp(e.extensionName, wanted) == 0) {
                    device_extensions.push_back(wanted);
                    break;
                }
    }
    device_extensions_.assign(device_extensions.begin(), device_extensions.end());
    device_info.enabledExtensionCount = static_cast<uint32_t>(device_extensions.size());
    device_info.ppEnabledExtensionNames = device_extensions.data();
    ATTN_VK(vkCreateDevice(physical_device_, &device_info, nullptr, &device_));
    vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

    VkCommandPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pool_info.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pool_info.queueFamilyIndex = queue_family_;
    ATTN_VK(vkCreateCommandPool(device_, &pool_info, nullptr, &command_pool_));
    VkFenceCreateInfo fence_info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    ATTN_VK(vkCreateFence(device_, &fence_info, nullptr, &submit_fence_));
}

VulkanContext::~VulkanContext() {
    if (device_) {
        vkDeviceWaitIdle(device_);
        vkDestroyFence(device_, submit_fence_, nullptr);
        vkDestroyCommandPool(device_, command_pool_, nullptr);
        vkDestroyDevice(device_, nullptr);
    }
    if (messenger_) {
        auto destroy_messenger = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
            vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
        if (destroy_messenger) destroy_messenger(instance_, messenger_, nullptr);
    }
    if (instance_) vkDestroyInstance(instance_, nullptr);
}

void VulkanContext::pick_physical_device(const VulkanContextOptions& options) {
    uint32_t count = 0;
    ATTN_VK(vkEnumeratePhysicalDevices(instance_, &count, nullptr));
    if (count == 0) fail(no_device_hint());
    std::vector<VkPhysicalDevice> devices(count);
    ATTN_VK(vkEnumeratePhysicalDevices(instance_, &count, devices.data()));

    int best_rank = -1;
    for (VkPhysicalDevice candidate : devices) {
        VkPhysicalDeviceProperties props;
        vkGetPhysicalDeviceProperties(candidate, &props);
        if (props.apiVersion < VK_API_VERSION_1_2) continue;
        // One queue family that does graphics and compute (every conformant graphics device has one).
        uint32_t families = 0;
        vkGetPhysicalDeviceQueueFamilyProperties(candidate, &families, nullptr);
        std::vector<VkQueueFamilyProperties> family_props(families);
        vkGetPhysicalDeviceQueueFamilyProperties(candidate, &families, family_props.data());
        std::optional<uint32_t> family;
        for (uint32_t f = 0; f < families; ++f)
            if ((family_props[f].queueFlags & VK_QUEUE_GRAPHICS_BIT) && (family_props[f].queueFlags & VK_QUEUE_COMPUTE_BIT)) {
                family = f;
                break;
            }
        if (!family) continue;
        int rank = device_rank(props.deviceType);
        if (options.preferred_device_uuid) {
            VkPhysicalDeviceIDProperties id{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
            VkPhysicalDeviceProperties2 props2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
            props2.pNext = &id;
            vkGetPhysicalDeviceProperties2(candidate, &props2);
            if (std::equal(options.preferred_device_uuid->begin(), options.preferred_device_uuid->end(), id.deviceUUID))
                rank += 100;  // the device CUDA runs on wins outright
        }
        if (rank > best_rank) {
            best_rank = rank;
            physical_device_ = candidate;
            queue_family_ = *family;
            properties_ = props;
        }
    }
    if (!physical_device_) fail("no Vulkan 1.2 device with a graphics+compute queue among ", count, " device(s)");
    vkGetPhysicalDeviceMemoryProperties(physical_device_, &memory_properties_);
}

void record_transfer_to_host_barrier(VkCommandBuffer cmd, VkBuffer buffer) {
    VkBufferMemoryBarrier host{VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER};
    host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    host.srcQueueFamilyIndex = host.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    host.buffer = buffer;
    host.size = VK_WHOLE_SIZE;
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 0, nullptr, 1, &host, 0, nullptr);
}

bool VulkanContext::has_device_extension(std::string_view name) const {
    return std::find(device_extensions_.begin(), device_extensions_.end(), name) != device_extensions_.end();
}

std::string VulkanContext::device_description() const {
    return cat(properties_.deviceName, " [", device_type_name(properties_.deviceType), ", Vulkan ",
               VK_API_VERSION_MAJOR(properties_.apiVersion), ".", VK_API_VERSION_MINOR(properties_.apiVersion), ".",
               VK_API_VERSION_PATCH(properties_.apiVersion), "]");
}

VKAPI_ATTR VkBool32 VKAPI_CALL VulkanContext::on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                               VkDebugUtilsMessageTypeFlagsEXT,
                                                               const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                               void* user) {
    auto* self = static_cast<VulkanContext*>(user);
    const std::string message = data && data->pMessage ? data->pMessage : "(no message)";
    const bool error = severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    std::fprintf(stderr, "attnscope: vulkan %s: %s\n", error ? "validation error" : "warning", message.c_str());
    std::lock_guard lock(self->messages_mutex_);
    (error ? self->errors_ : self->warnings_).push_back(message);
    return VK_FALSE;  // never abort the call: we want to see every message
}

std::vector<std::string> VulkanContext::validation_errors() const {
    std::lock_guard lock(messages_mutex_);
    return errors_;
}

std::vector<std::string> VulkanContext::validation_warnings() const {
    std::lock_guard lock(messages_mutex_);
    return warnings_;
}

void VulkanContext::clear_validation_messages() {
    std::lock_guard lock(messages_mutex_);
    errors_.clear();
    warnings_.clear();
}

uint32_t VulkanContext::memory_type(uint32_t type_bits, VkMemoryPropertyFlags wanted) const {
    for (uint32_t i = 0; i < memory_properties_.memoryTypeCount; ++i)
        if ((type_bits & (1u << i)) && (memory_properties_.memoryTypes[i].propertyFlags & wanted) == wanted) return i;
    fail("no Vulkan memory type with properties 0x", std::hex, wanted, " among bits 0x", type_bits);
}

VkDeviceMemory VulkanContext::allocate(const VkMemoryRequirements& requirements, VkMemoryPropertyFlags wanted) {
    VkMemoryAllocateInfo info{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    info.allocationSize = requirements.size;
    info.memoryTypeIndex = memory_type(requirements.memoryTypeBits, wanted);
    VkDeviceMemory memory = VK_NULL_HANDLE;
    ATTN_VK(vkAllocateMemory(device_, &info, nullptr, &memory));
    return memory;
}

GpuBuffer VulkanContext::create_buffer(VkDeviceSize size, VkBufferUsageFlags usage, bool host_visible) {
    GpuBuffer out;
    out.size = size;
    VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    info.size = size;
    info.usage = usage;
    info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    ATTN_VK(vkCreateBuffer(device_, &info, nullptr, &out.buffer));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device_, out.buffer, &req);
    // Host-coherent so CPU workers can write tiles without explicit flushes.
    out.memory = allocate(req, host_visible ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                                            : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    ATTN_VK(vkBindBufferMemory(device_, out.buffer, out.memory, 0));
    if (host_visible) ATTN_VK(vkMapMemory(device_, out.memory, 0, VK_WHOLE_SIZE, 0, &out.mapped));
    return out;
}

void VulkanContext::destroy(GpuBuffer& buffer) {
    if (buffer.mapped) vkUnmapMemory(device_, buffer.memory);
    if (buffer.buffer) vkDestroyBuffer(device_, buffer.buffer, nullptr);
    if (buffer.memory) vkFreeMemory(device_, buffer.memory, nullptr);
    buffer = {};
}

GpuImage VulkanContext::create_image(VkFormat format, uint32_t width, uint32_t height, uint32_t layers,
                                     VkImageUsageFlags usage) {
    GpuImage out;
    out.format = format;
    out.width = width, out.height = height, out.layers = layers;
    VkImageCreateInfo info{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
    info.imageType = VK_IMAGE_TYPE_2D;
    info.format = format;
    info.extent = {width, height, 1};
    info.mipLevels = 1;
    info.arrayLayers = layers;
    info.samples = VK_SAMPLE_COUNT_1_BIT;
    info.tiling = VK_IMAGE_TILING_OPTIMAL;
    info.usage = usage;
    info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    info.initialLayout = VK_IMAGE_LAYOUT_UNDEFINED;
    ATTN_VK(vkCreateImage(device_, &info, nullptr, &out.image));
    VkMemoryRequirements req;
    vkGetImageMemoryRequirements(device_, out.image, &req);
    out.memory = allocate(req, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    ATTN_VK(vkBindImageMemory(device_, out.image, out.memory, 0));
    out.bytes = req.size;

    VkImageViewCreateInfo view{VK_STRUCTURE_TYPE_IMAGE_VIEW_CREATE_INFO};
    view.image = out.image;
    view.viewType = layers > 1 || (usage & VK_IMAGE_USAGE_SAMPLED_BIT) ? VK_IMAGE_VIEW_TYPE_2D_ARRAY : VK_IMAGE_VIEW_TYPE_2D;
    if (usage & VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT) view.viewType = VK_IMAGE_VIEW_TYPE_2D;
    view.format = format;
    view.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, layers};
    ATTN_VK(vkCreateImageView(device_, &view, nullptr, &out.view));

    // Everything the renderer owns lives in GENERAL: transfers, storage writes and sampling all
    // touch the same arrays, and barriers (not layout changes) order them.
    submit_and_wait([&](VkCommandBuffer cmd) {
        VkImageMemoryBarrier barrier{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
        barrier.srcAccessMask = 0;
        barrier.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
        barrier.oldLayout = VK_IMAGE_LAYOUT_UNDEFINED;
        barrier.newLayout = VK_IMAGE_LAYOUT_GENERAL;
        barrier.srcQueueFamilyIndex = barrier.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
        barrier.image = out.image;
        barrier.subresourceRange = view.subresourceRange;
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 0, nullptr, 0,
                             nullptr, 1, &barrier);
    });
    return out;
}

void VulkanContext::destroy(GpuImage& image) {
    if (image.view) vkDestroyImageView(device_, image.view, nullptr);
    if (image.image) vkDestroyImage(device_, image.image, nullptr);
    if (image.memory) vkFreeMemory(device_, image.memory, nullptr);
    image = {};
}

VkShaderModule VulkanContext::create_shader(const uint32_t* words, size_t word_count) {
    VkShaderModuleCreateInfo info{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    info.codeSize = word_count * sizeof(uint32_t);
    info.pCode = words;
    VkShaderModule module = VK_NULL_HANDLE;
    ATTN_VK(vkCreateShaderModule(device_, &info, nullptr, &module));
    return module;
}

void VulkanContext::submit_and_wait(const std::function<void(VkCommandBuffer)>& record) {
    VkCommandBufferAllocateInfo alloc{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    alloc.commandPool = command_pool_;
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    alloc.commandBufferCount = 1;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    ATTN_VK(vkAllocateCommandBuffers(device_, &alloc, &cmd));
    VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    ATTN_VK(vkBeginCommandBuffer(cmd, &begin));
    record(cmd);
    ATTN_VK(vkEndCommandBuffer(cmd));
    VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &cmd;
    ATTN_VK(vkResetFences(device_, 1, &submit_fence_));
    ATTN_VK(vkQueueSubmit(queue_, 1, &submit, submit_fence_));
    ATTN_VK(vkWaitForFences(device_, 1, &submit_fence_, VK_TRUE, UINT64_MAX));
    vkFreeCommandBuffers(device_, command_pool_, 1, &cmd);
}

VkRenderPass VulkanContext::create_color_pass(VkFormat format, VkAttachmentLoadOp load, VkImageLayout initial_layout,
                                             VkImageLayout final_layout,
                                             std::span<const VkSubpassDependency> dependencies) {
    VkAttachmentDescription attachment{};
    attachment.format = format;
    attachment.samples = VK_SAMPLE_COUNT_1_BIT;
    attachment.loadOp = load;
    attachment.storeOp = VK_ATTACHMENT_STORE_OP_STORE;
    attachment.stencilLoadOp = VK_ATTACHMENT_LOAD_OP_DONT_CARE;
    attachment.stencilStoreOp = VK_ATTACHMENT_STORE_OP_DONT_CARE;
    attachment.initialLayout = initial_layout;
    attachment.finalLayout = final_layout;
    VkAttachmentReference color_ref{0, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL};
    VkSubpassDescription subpass{};
    subpass.pipelineBindPoint = VK_PIPELINE_BIND_POINT_GRAPHICS;
    subpass.colorAttachmentCount = 1;
    subpass.pColorAttachments = &color_ref;
    VkRenderPassCreateInfo info{VK_STRUCTURE_TYPE_RENDER_PASS_CREATE_INFO};
    info.attachmentCount = 1;
    info.pAttachments = &attachment;
    info.subpassCount = 1;
    info.pSubpasses = &subpass;
    info.dependencyCount = static_cast<uint32_t>(dependencies.size());
    info.pDependencies = dependencies.data();
    VkRenderPass pass = VK_NULL_HANDLE;
    ATTN_VK(vkCreateRenderPass(device_, &info, nullptr, &pass));
    return pass;
}

}  // namespace attn::render
