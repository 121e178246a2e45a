#include "ui/render/attention_map_renderer.h"

#include <stb_image_write.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "ui/render/shaders.h"

namespace attn::render {

namespace {

struct ColorizeParams {
    float empty_color[4];
    float range_low, range_high;
    uint32_t layer, valid_rows, valid_cols, log_scale;
    // The causal mask, cell by cell: cell (column c, row r) is empty when its first key
    // first_key + c·key_cell comes after its last query last_query + r·row_cell.
    int32_t first_key, key_cell, last_query, row_cell;
};

// Quantised so the range (and with it every tile's colouring) changes rarely as tiles arrive.
float quantize_up(float v, float step) { return std::ceil(v / step - 1e-4f) * step; }
float quantize_down(float v, float step) { return std::floor(v / step + 1e-4f) * step; }

}  // namespace

AttentionMapRenderer::AttentionMapRenderer(VulkanContext& context, TileCache& cache, const MatrixExtent& extent,
                                           uint32_t width, uint32_t height)
    : context_(context), cache_(cache), extent_(extent) {
    if (width == 0 || height == 0 || width > 16384 || height > 16384) fail("render size ", width, "×", height, " is not supported");
    for (GpuImage& target : targets_)
        target = context.create_image(VK_FORMAT_R8G8B8A8_UNORM, width, height, 1,
                                      VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT |
                                          VK_IMAGE_USAGE_TRANSFER_DST_BIT);
    colormap_buffer_ = context.create_buffer(sizeof(ColormapTable), VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, true);
    instance_buffer_ = context.create_buffer(sizeof(Instance) * kMaxInstances, VK_BUFFER_USAGE_VERTEX_BUFFER_BIT, true);
    readback_ = context.create_buffer(uint64_t(width) * height * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true);
    create_pipelines();
}

AttentionMapRenderer::~AttentionMapRenderer() {
    VkDevice device = context_.device();
    vkDeviceWaitIdle(device);
    if (pending_fence_) {  // done after the wait: release what it used (the cache outlives us)
        vkDestroyFence(device, pending_fence_, nullptr);
        vkFreeCommandBuffers(device, context_.command_pool(), 1, &pending_cmd_);
        cache_.frame_complete();
    }
    vkDestroyPipeline(device, draw_pipeline_, nullptr);
    vkDestroyPipeline(device, colorize_pipeline_, nullptr);
    vkDestroyPipelineLayout(device, draw_layout_, nullptr);
    vkDestroyPipelineLayout(device, colorize_layout_, nullptr);
    vkDestroyDescriptorPool(device, descriptor_pool_, nullptr);
    vkDestroyDescriptorSetLayout(device, draw_set_layout_, nullptr);
    vkDestroyDescriptorSetLayout(device, colorize_set_layout_, nullptr);
    vkDestroySampler(device, sampler_, nullptr);
    for (VkFramebuffer fb : framebuffers_) vkDestroyFramebuffer(device, fb, nullptr);
    vkDestroyRenderPass(device, load_pass_, nullptr);
    vkDestroyRenderPass(device, render_pass_, nullptr);
    context_.destroy(readback_);
    context_.destroy(instance_buffer_);
    context_.destroy(colormap_buffer_);
    for (GpuImage& target : targets_) context_.destroy(target);
}

void AttentionMapRenderer::create_pipelines() {
    VkDevice device = context_.device();

    // Render pass: clear to the empty colour, draw, leave the image ready to be read back.
    VkSubpassDependency dependencies[2]{};
    dependencies[0].srcSubpass = VK_SUBPASS_EXTERNAL;
    dependencies[0].dstSubpass = 0;
    dependencies[0].srcStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
    dependencies[0].dstStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
    dependencies[0].srcAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
    dependencies[0].dstAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
    dependencies[1].srcSubpass = 0;
    dependencies[1].dstSubpass = VK_SUBPASS_EXTERNAL;
    dependencies[1].srcStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT;
    dependencies[1].dstStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT;
    dependencies[1].srcAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
    dependencies[1].dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
    render_pass_ = context_.create_color_pass(targets_[0].format, VK_ATTACHMENT_LOAD_OP_CLEAR, VK_IMAGE_LAYOUT_UNDEFINED,
                                              VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, dependencies);
    // The incremental pass keeps what is there; the image is moved to COLOR_ATTACHMENT_OPTIMAL by
    // an explicit barrier first (after a shifted copy or a read-back).
    load_pass_ = context_.create_color_pass(targets_[0].format, VK_ATTACHMENT_LOAD_OP_LOAD,
                                            VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                                            dependencies);

    VkFramebufferCreateInfo fb_info{VK_STRUCTURE_TYPE_FRAMEBUFFER_CREATE_INFO};
    fb_info.renderPass = render_pass_;
    fb_info.attachmentCount = 1;
    fb_info.width = targets_[0].width;
    fb_info.height = targets_[0].height;
    fb_info.layers = 1;
    for (int i = 0; i < 2; ++i) {
        fb_info.pAttachments = &targets_[i].view;
        ATTN_VK(vkCreateFramebuffer(device, &fb_info, nullptr, &framebuffers_[i]));
    }

    // Nearest filtering: one texel is one cell; blending neighbours would invent values.
    VkSamplerCreateInfo sampler_info{VK_STRUCTURE_TYPE_SAMPLER_CREATE_INFO};
    sampler_info.magFilter = VK_FILTER_NEAREST;
    sampler_info.minFilter = VK_FILTER_NEAREST;
    sampler_info.mipmapMode = VK_SAMPLER_MIPMAP_MODE_NEAREST;
    sampler_info.addressModeU = sampler_info.addressModeV = sampler_info.addressModeW = VK_SAMPLER_ADDRESS_MODE_CLAMP_TO_EDGE;
    sampler_info.maxLod = 0;
    ATTN_VK(vkCreateSampler(device, &sampler_info, nullptr, &sampler_));

    // Descriptors.
    VkDescriptorSetLayoutBinding colorize_bindings[3]{};
    colorize_bindings[0] = {0, VK_DESCRIPTOR_TYPE_STORAGE_IMAGE, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    colorize_bindings[1] = {1, VK_DESCRIPTOR_TYPE_STORAGE_IMAGE, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    colorize_bindings[2] = {2, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    VkDescriptorSetLayoutCreateInfo layout_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    layout_info.bindingCount = 3;
    layout_info.pBindings = colorize_bindings;
    ATTN_VK(vkCreateDescriptorSetLayout(device, &layout_info, nullptr, &colorize_set_layout_));
    VkDescriptorSetLayoutBinding draw_binding{0, VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 1,
                                              VK_SHADER_STAGE_FRAGMENT_BIT, nullptr};
    layout_info.bindingCount = 1;
    layout_info.pBindings = &draw_binding;
    ATTN_VK(vkCreateDescriptorSetLayout(device, &layout_info, nullptr, &draw_set_layout_));

    VkDescriptorPoolSize pool_sizes[3] = {{VK_DESCRIPTOR_TYPE_STORAGE_IMAGE, 2},
                                          {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1},
                                          {VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 1}};
    VkDescriptorPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    pool_info.maxSets = 2;
    pool_info.poolSizeCount = 3;
    pool_info.pPoolSizes = pool_sizes;
    ATTN_VK(vkCreateDescriptorPool(device, &pool_info, nullptr, &descriptor_pool_));
    VkDescriptorSetLayout set_layouts[2] = {colorize_set_layout_, draw_set_layout_};
    VkDescriptorSet sets[2];
    VkDescriptorSetAllocateInfo alloc{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    alloc.descriptorPool = descriptor_pool_;
    alloc.descriptorSetCount = 2;
    alloc.pSetLayouts = set_layouts;
    ATTN_VK(vkAllocateDescriptorSets(device, &alloc, sets));
    colorize_set_ = sets[0];
    draw_set_ = sets[1];

    VkDescriptorImageInfo raw_info{VK_NULL_HANDLE, cache_.raw_array().view, VK_IMAGE_LAYOUT_GENERAL};
    VkDescriptorImageInfo color_storage_info{VK_NULL_HANDLE, cache_.color_array().view, VK_IMAGE_LAYOUT_GENERAL};
    VkDescriptorBufferInfo colormap_info{colormap_buffer_.buffer, 0, VK_WHOLE_SIZE};
    VkDescriptorImageInfo color_sampled_info{sampler_, cache_.color_array().view, VK_IMAGE_LAYOUT_GENERAL};
    VkWriteDescriptorSet writes[4]{};
    for (auto& w : writes) w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, w.descriptorCount = 1;
    writes[0].dstSet = colorize_set_, writes[0].dstBinding = 0, writes[0].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_IMAGE;
    writes[0].pImageInfo = &raw_info;
    writes[1].dstSet = colorize_set_, writes[1].dstBinding = 1, writes[1].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_IMAGE;
    writes[1].pImageInfo = &color_storage_info;
    writes[2].dstSet = colorize_set_, writes[2].dstBinding = 2, writes[2].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[2].pBufferInfo = &colormap_info;
    writes[3].dstSet = draw_set_, writes[3].dstBinding = 0, writes[3].descriptorType = VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER;
    writes[3].pImageInfo = &color_sampled_info;
    vkUpdateDescriptorSets(device, 4, writes, 0, nullptr);

    // Compute pipeline: colour one tile.
    VkPushConstantRange colorize_push{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(ColorizeParams)};
    VkPipelineLayoutCreateInfo pl_info{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pl_info.setLayoutCount = 1;
    pl_info.pSetLayouts = &colorize_set_layout_;
    pl_info.pushConstantRangeCount = 1;
    pl_info.pPushConstantRanges = &colorize_push;
    ATTN_VK(vkCreatePipelineLayout(device, &pl_info, nullptr, &colorize_layout_));
    VkShaderModule comp = context_.create_shader(spirv::tile_colorize_comp, spirv::tile_colorize_comp_words);
    VkComputePipelineCreateInfo cp_info{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    cp_info.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, nullptr, 0, VK_SHADER_STAGE_COMPUTE_BIT, comp, "main", nullptr};
    cp_info.layout = colorize_layout_;
    const VkResult compute_created = vkCreateComputePipelines(device, VK_NULL_HANDLE, 1, &cp_info, nullptr, &colorize_pipeline_);
    vkDestroyShaderModule(device, comp, nullptr);
    ATTN_VK(compute_created);

    // Graphics pipeline: instanced tile quads.
    VkPushConstantRange draw_push{VK_SHADER_STAGE_VERTEX_BIT, 0, sizeof(float) * 2};
    pl_info.pSetLayouts = &draw_set_layout_;
    pl_info.pPushConstantRanges = &draw_push;
    ATTN_VK(vkCreatePipelineLayout(device, &pl_info, nullptr, &draw_layout_));
    VkShaderModule vert = context_.create_shader(spirv::attention_map_vert, spirv::attention_map_vert_words);
    VkShaderModule frag = context_.create_shader(spirv::attention_map_frag, spirv::attention_map_frag_words);
    VkPipelineShaderStageCreateInfo stages[2] = {
        {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, nullptr, 0, VK_SHADER_STAGE_VERTEX_BIT, vert, "main", nullptr},
        {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, nullptr, 0, VK_SHADER_STAGE_FRAGMENT_BIT, frag, "main", nullptr}};
    VkVertexInputBindingDescription binding{0, sizeof(Instance), VK_VERTEX_INPUT_RATE_INSTANCE};
    VkVertexInputAttributeDescription attributes[3] = {
        {0, 0, VK_FORMAT_R32G32B32A32_SFLOAT, offsetof(Instance, pixel_rect)},
        {1, 0, VK_FORMAT_R32G32B32A32_SFLOAT, offsetof(Instance, texel_rect)},
        {2, 0, VK_FORMAT_R32_UINT, offsetof(Instance, layer)}};
    VkPipelineVertexInputStateCreateInfo vertex_input{VK_STRUCTURE_TYPE_PIPELINE_VERTEX_INPUT_STATE_CREATE_INFO};
    vertex_input.vertexBindingDescriptionCount = 1;
    vertex_input.pVertexBindingDescriptions = &binding;
    vertex_input.vertexAttributeDescriptionCount = 3;
    vertex_input.pVertexAttributeDescriptions = attributes;
    VkPipelineInputAssemblyStateCreateInfo assembly{VK_STRUCTURE_TYPE_PIPELINE_INPUT_ASSEMBLY_STATE_CREATE_INFO};
    assembly.topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_LIST;
    VkPipelineViewportStateCreateInfo viewport{VK_STRUCTURE_TYPE_PIPELINE_VIEWPORT_STATE_CREATE_INFO};
    viewport.viewportCount = 1;
    viewport.scissorCount = 1;
    VkPipelineRasterizationStateCreateInfo raster{VK_STRUCTURE_TYPE_PIPELINE_RASTERIZATION_STATE_CREATE_INFO};
    raster.polygonMode = VK_POLYGON_MODE_FILL;
    raster.cullMode = VK_CULL_MODE_NONE;
    raster.frontFace = VK_FRONT_FACE_COUNTER_CLOCKWISE;
    raster.lineWidth = 1.0f;
    VkPipelineMultisampleStateCreateInfo multisample{VK_STRUCTURE_TYPE_PIPELINE_MULTISAMPLE_STATE_CREATE_INFO};
    multisample.rasterizationSamples = VK_SAMPLE_COUNT_1_BIT;
    VkPipelineColorBlendAttachmentState blend_attachment{};
    blend_attachment.colorWriteMask = VK_COLOR_COMPONENT_R_BIT | VK_COLOR_COMPONENT_G_BIT | VK_COLOR_COMPONENT_B_BIT |
                                      VK_COLOR_COMPONENT_A_BIT;
    VkPipelineColorBlendStateCreateInfo blend{VK_STRUCTURE_TYPE_PIPELINE_COLOR_BLEND_STATE_CREATE_INFO};
    blend.attachmentCount = 1;
    blend.pAttachments = &blend_attachment;
    VkDynamicState dynamic_states[2] = {VK_DYNAMIC_STATE_VIEWPORT, VK_DYNAMIC_STATE_SCISSOR};
    VkPipelineDynamicStateCreateInfo dynamic{VK_STRUCTURE_TYPE_PIPELINE_DYNAMIC_STATE_CREATE_INFO};
    dynamic.dynamicStateCount = 2;
    dynamic.pDynamicStates = dynamic_states;
    VkGraphicsPipelineCreateInfo gp_info{VK_STRUCTURE_TYPE_GRAPHICS_PIPELINE_CREATE_INFO};
    gp_info.stageCount = 2;
    gp_info.pStages = stages;
    gp_info.pVertexInputState = &vertex_input;
    gp_info.pInputAssemblyState = &assembly;
    gp_info.pViewportState = &viewport;
    gp_info.pRasterizationState = &raster;
    gp_info.pMultisampleState = &multisample;
    gp_info.pColorBlendState = &blend;
    gp_info.pDynamicState = &dynamic;
    gp_info.layout = draw_layout_;
    gp_info.renderPass = render_pass_;
    gp_info.subpass = 0;
    const VkResult graphics_created = vkCreateGraphicsPipelines(device, VK_NULL_HANDLE, 1, &gp_info, nullptr, &draw_pipeline_);
    vkDestroyShaderModule(device, vert, nullptr);
    vkDestroyShaderModule(device, frag, nullptr);
    ATTN_VK(graphics_created);
}

void AttentionMapRenderer::set_positions(int64_t positions) {
    if (positions < 1) fail("the attention map needs at least one position");
    set_extent(MatrixExtent::square(positions));
}

void AttentionMapRenderer::set_extent(const MatrixExtent& extent) {
    if (extent.keys < 0 || extent.rows < 0 || extent.first_query < 0)
        fail("the matrix shown (", extent.keys, " keys, ", extent.rows, " rows from query ", extent.first_query, ") is not valid");
    extent_ = extent;
}

uint64_t AttentionMapRenderer::stamp_for(const ColorRange& range) {
    for (const auto& [known, stamp] : stamps_)
        if (known == range) return stamp;
    stamps_.emplace_back(range, stamps_.size() + 1);
    return stamps_.size();
}

ColorRange AttentionMapRenderer::choose_range(const RenderSettings& settings, const std::vector<const CachedTile*>& exact,
                                              const std::vector<const CachedTile*>& stand_ins) const {
    ColorRange range;
    range.log_scale = settings.scale == ValueScale::Log;
    range.colormap = settings.colormap;
    if (settings.manual_range) {
        range.low = settings.range_low, range.high = settings.range_high;
        return range;
    }
    if (settings.lock_range && have_range_ && range_.log_scale == range.log_scale) {
        range.low = range_.low, range.high = range_.high;
        return range;
    }
    const std::vector<const CachedTile*>& tiles = exact.empty() ? stand_ins : exact;
    float peak = 0, smallest = 0;
    for (const CachedTile* t : tiles) {
        peak = std::max(peak, t->max_value);
        if (t->min_positive > 0 && (smallest == 0 || t->min_positive < smallest)) smallest = t->min_positive;
    }
    if (range.log_scale) {
        if (peak <= 0) {
            range.low = -settings.log_decades, range.high = 0;
        } else {
            range.high = quantize_up(std::log10(peak), 0.25f);
            const float floor = range.high - settings.log_decades;
            range.low = smallest > 0 ? std::max(floor, quantize_down(std::log10(smallest), 0.25f)) : floor;
            if (range.low >= range.high) range.low = range.high - 0.25f;
        }
    } else {
        range.low = 0;
        range.high = peak > 0 ? std::pow(10.0f, quantize_up(std::log10(peak), 0.125f)) : 1.0f;
    }
    return range;
}

bool AttentionMapRenderer::gpu_busy() const {
    if (!pending_fence_) return false;
    const VkResult status = vkGetFenceStatus(context_.device(), pending_fence_);
    if (status == VK_NOT_READY) return true;
    ATTN_VK(status);  // VK_ERROR_DEVICE_LOST
    return false;
}

void AttentionMapRenderer::finish_pending() {
    if (!pending_fence_) return;
    VkDevice device = context_.device();
    const VkResult waited = vkWaitForFences(device, 1, &pending_fence_, VK_TRUE, UINT64_MAX);
    vkDestroyFence(device, pending_fence_, nullptr);
    vkFreeCommandBuffers(device, context_.command_pool(), 1, &pending_cmd_);
    pending_fence_ = VK_NULL_HANDLE;
    pending_cmd_ = VK_NULL_HANDLE;
    ATTN_VK(waited);
    cache_.frame_complete();
}

FrameStats AttentionMapRenderer::render(const ViewTransform& view_in, const RenderSettings& settings) {
    const auto start = std::chrono::steady_clock::now();
    finish_pending();
    ViewTransform view = view_in;
    view.width = static_cast<int>(width());
    view.height = static_cast<int>(height());
    ++frame_;
    FrameStats stats;
    const CellLevels levels = lod_levels(view, extent_);
    const int level = levels.key;
    stats.level = levels.key;
    stats.row_level = levels.row;
    const std::vector<TileCoord> coords = visible_tiles(view, extent_, levels);
    stats.visible_tiles = static_cast<int>(coords.size());
    auto key_of = [&](const TileCoord& c) {
        return TileKey{settings.layer, settings.head, c.level, c.tx, c.ty, settings.plane, levels.row_level_delta(),
                       extent_.first_query};
    };
    const int to_top = generations_to_top(levels, extent_);

    // Requests, most useful first: the whole-matrix tile (always a fallback), the cheap
    // overview-level ancestors of the view, then the visible tiles nearest the centre first.
    std::vector<TileKey> wanted;
    if (extent_.rows > 0) wanted.push_back(key_of({level, 0, 0}).ancestor(to_top));
    const int to_overview = std::max(1, CpuTileSource::kFirstOverviewLevel - std::min(levels.key, levels.row));
    if (to_overview < to_top && CpuTileSource::overview_serves(key_of({level, 0, 0}).ancestor(to_overview).request()))
        for (const TileCoord& c : coords) {
            const TileKey up = key_of(c).ancestor(to_overview);
            if (std::find(wanted.begin(), wanted.end(), up) == wanted.end()) wanted.push_back(up);
        }
    for (const TileCoord& c : coords) wanted.push_back(key_of(c));
    // Resident tiles are not asked for again, unless rows they cover have grown since (stale).
    wanted.erase(std::remove_if(wanted.begin(), wanted.end(),
                                [&](const TileKey& k) {
                                    const CachedTile* tile = cache_.find(k);
                                    return tile && !tile->stale;
                                }),
                 wanted.end());
    cache_.request(wanted);

    VkCommandBufferAllocateInfo alloc{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    alloc.commandPool = context_.command_pool();
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    alloc.commandBufferCount = 1;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    ATTN_VK(vkAllocateCommandBuffers(context_.device(), &alloc, &cmd));
    VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    ATTN_VK(vkBeginCommandBuffer(cmd, &begin));

    stats.uploads = static_cast<int>(cache_.upload_arrivals(cmd, frame_, static_cast<size_t>(settings.max_uploads_per_frame)).size());

    // What stands for each visible tile: itself if resident, else its nearest resident ancestor.
    struct Slot {
        TileCoord coord;
        CachedTile* exact = nullptr;
        CachedTile* ancestor = nullptr;
        TileKey ancestor_key;
    };
    std::vector<Slot> slots;
    slots.reserve(coords.size());
    std::vector<const CachedTile*> exact_tiles, stand_ins;
    for (const TileCoord& c : coords) {
        Slot s{c};
        const TileKey key = key_of(c);
        s.exact = cache_.find(key);
        if (s.exact) {
            cache_.touch(*s.exact, frame_);
            exact_tiles.push_back(s.exact);
        }
        if (!s.exact || s.exact->color_stamp == 0) {
            if (auto up = cache_.nearest_ancestor(key, to_top, false)) {
                s.ancestor_key = up->first;
                s.ancestor = up->second;
                cache_.touch(*s.ancestor, frame_);
                if (std::find(stand_ins.begin(), stand_ins.end(), s.ancestor) == stand_ins.end()) stand_ins.push_back(s.ancestor);
            }
        }
        slots.push_back(s);
    }

    const ColorRange range = choose_range(settings, exact_tiles, stand_ins);
    range_ = range;
    have_range_ = true;
    stats.range = range;
    const uint64_t stamp = stamp_for(range);
    if (!colormap_uploaded_ || uploaded_colormap_ != settings.colormap) {
        std::memcpy(colormap_buffer_.mapped, colormap_table(settings.colormap).data(), sizeof(ColormapTable));
        uploaded_colormap_ = settings.colormap;
        colormap_uploaded_ = true;
    }

    // Colouring, within a per-frame budget: tiles never coloured first (they cannot be drawn at
    // all), exact before stand-ins; then tiles coloured with an older range.
    std::vector<ColorizeJob> jobs;
    std::unordered_set<const CachedTile*> queued;
    auto queue = [&](CachedTile* tile, const TileKey& key, bool fresh_only) {
        if (!tile || tile->color_stamp == stamp || (fresh_only && tile->color_stamp != 0)) return;
        if (!queued.insert(tile).second) return;
        jobs.push_back({tile, key});
    };
    for (int pass = 0; pass < 2; ++pass) {
        const bool fresh_only = pass == 0;
        for (const Slot& s : slots) queue(s.exact, key_of(s.coord), fresh_only);
        for (const Slot& s : slots) queue(s.ancestor, s.ancestor_key, fresh_only);
    }
    if (jobs.size() > static_cast<size_t>(std::max(0, settings.max_colorize_per_frame)))
        jobs.resize(static_cast<size_t>(std::max(0, settings.max_colorize_per_frame)));
    if (!jobs.empty()) {
        VkMemoryBarrier before{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        before.srcAccessMask = VK_ACCESS_SHADER_READ_BIT;
        before.dstAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &before,
                             0, nullptr, 0, nullptr);
        vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, colorize_pipeline_);
        vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, colorize_layout_, 0, 1, &colorize_set_, 0, nullptr);
        for (const ColorizeJob& job : jobs) {
            ColorizeParams p{};
            std::copy(kEmptyColor.begin(), kEmptyColor.end(), p.empty_color);
            p.range_low = range.low;
            p.range_high = range.high;
            p.layer = job.tile->slot;
            p.valid_rows = static_cast<uint32_t>(job.tile->valid_rows);
            p.valid_cols = static_cast<uint32_t>(job.tile->valid_cols);
            p.log_scale = range.log_scale;
            const int64_t row_cell = int64_t(1) << job.key.row_level(), key_cell = int64_t(1) << job.key.level;
            // The shader compares in 32 bits: clamped far beyond any real context (2^30 positions).
            const int64_t first_key = job.key.tx * Tile::kEdge * key_cell;
            const int64_t last_query = job.key.first_query + job.key.ty * Tile::kEdge * row_cell + row_cell - 1;
            p.first_key = static_cast<int32_t>(std::min<int64_t>(first_key, INT32_MAX / 2));
            p.last_query = static_cast<int32_t>(std::min<int64_t>(last_query, INT32_MAX / 2));
            p.key_cell = static_cast<int32_t>(std::min<int64_t>(key_cell, INT32_MAX / 1024));
            p.row_cell = static_cast<int32_t>(std::min<int64_t>(row_cell, INT32_MAX / 1024));
            vkCmdPushConstants(cmd, colorize_layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(p), &p);
            vkCmdDispatch(cmd, Tile::kEdge / 16, Tile::kEdge / 16, 1);
            job.tile->color_stamp = stamp;
        }
        VkMemoryBarrier after{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        after.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
        after.dstAccessMask = VK_ACCESS_SHADER_READ_BIT;
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT, 0, 1, &after, 0,
                             nullptr, 0, nullptr);
    }
    stats.colorized = static_cast<int>(jobs.size());

    // Quads: pixel rectangle of the tile's valid cells; texels of the tile or of its ancestor's sub-rectangle.
    std::vector<Instance> instances;
    std::unordered_map<uint64_t, DrawnTile> drawn;
    instances.reserve(slots.size());
    auto coord_id = [](const TileCoord& c) { return static_cast<uint64_t>(c.ty) << 32 | static_cast<uint64_t>(c.tx); };
    for (const Slot& s : slots) {
        const int64_t key_cell = int64_t(1) << levels.key, row_cell = int64_t(1) << levels.row;
        const int64_t key_span = key_cell * Tile::kEdge, row_span = row_cell * Tile::kEdge;
        DrawnTile d;
        d.k0 = static_cast<double>(s.coord.tx * key_span), d.r0 = static_cast<double>(s.coord.ty * row_span);
        d.k1 = d.k0 + static_cast<double>(cells_covering(extent_.keys, levels.key, s.coord.tx) * key_cell);
        d.r1 = d.r0 + static_cast<double>(cells_covering(extent_.rows, levels.row, s.coord.ty) * row_cell);
        if (s.exact && s.exact->color_stamp != 0) {
            d.source = key_of(s.coord);
            d.texel_rect[2] = static_cast<float>((d.k1 - d.k0) / static_cast<double>(key_span));
            d.texel_rect[3] = static_cast<float>((d.r1 - d.r0) / static_cast<double>(row_span));
            d.layer = s.exact->slot;
            d.stamp = s.exact->color_stamp;
            d.contents = s.exact->contents;
            if (s.exact->color_stamp == stamp && !s.exact->stale) ++stats.exact_tiles;
            else ++stats.fallback_tiles;  // right tile, colours of an older range or rows that have grown
        } else if (s.ancestor && s.ancestor->color_stamp != 0) {
            const double anc_key_span = static_cast<double>(int64_t(Tile::kEdge) << s.ancestor_key.level);
            const double anc_row_span = static_cast<double>(int64_t(Tile::kEdge) << s.ancestor_key.row_level());
            const double ak0 = static_cast<double>(s.ancestor_key.tx) * anc_key_span;
            const double ar0 = static_cast<double>(s.ancestor_key.ty) * anc_row_span;
            d.source = s.ancestor_key;
            d.texel_rect[0] = static_cast<float>((d.k0 - ak0) / anc_key_span);
            d.texel_rect[1] = static_cast<float>((d.r0 - ar0) / anc_row_span);
            d.texel_rect[2] = static_cast<float>((d.k1 - ak0) / anc_key_span);
            d.texel_rect[3] = static_cast<float>((d.r1 - ar0) / anc_row_span);
            d.layer = s.ancestor->slot;
            d.stamp = s.ancestor->color_stamp;
            d.contents = s.ancestor->contents;
            ++stats.fallback_tiles;
        } else {
            ++stats.missing_tiles;
            continue;
        }
        Instance inst{};
        inst.pixel_rect[0] = static_cast<float>(view.pixel_x(d.k0));
        inst.pixel_rect[1] = static_cast<float>(view.pixel_y(d.r0));
        inst.pixel_rect[2] = static_cast<float>(view.pixel_x(d.k1));
        inst.pixel_rect[3] = static_cast<float>(view.pixel_y(d.r1));
        std::copy(d.texel_rect, d.texel_rect + 4, inst.texel_rect);
        inst.layer = d.layer;
        if (instances.size() < kMaxInstances) instances.push_back(inst);
        drawn[coord_id(s.coord)] = d;
    }

    // What changed on screen since the last frame drawn. A pan by whole pixels at the same zoom
    // reuses the previous image, shifted; then only the uncovered strips and the tiles whose
    // content changed are redrawn. Anything else redraws everything.
    const int W = static_cast<int>(width()), H = static_cast<int>(height());
    const double shift_x = have_image_ ? (drawn_view_.origin_key - view.origin_key) / view.keys_per_pixel : 0;
    const double shift_y = have_image_ ? (drawn_view_.origin_row - view.origin_row) / view.rows_per_pixel : 0;
    const int dx = static_cast<int>(std::lround(shift_x)), dy = static_cast<int>(std::lround(shift_y));
    const bool full = !have_image_ || drawn_levels_ != levels || view.keys_per_pixel != drawn_view_.keys_per_pixel ||
                      view.rows_per_pixel != drawn_view_.rows_per_pixel || drawn_first_query_ != extent_.first_query ||
                      std::abs(shift_x - dx) > 1e-3 || std::abs(shift_y - dy) > 1e-3 || std::abs(dx) >= W ||
                      std::abs(dy) >= H || settings.layer != drawn_settings_.layer ||
                      settings.head != drawn_settings_.head || settings.plane != drawn_settings_.plane;
    std::vector<PixelRect> dirty;
    auto mark = [&](double x0, double y0, double x1, double y1) {
        const PixelRect r{std::max(0, static_cast<int>(std::floor(x0)) - 1), std::max(0, static_cast<int>(std::floor(y0)) - 1),
                          std::min(W, static_cast<int>(std::ceil(x1)) + 1), std::min(H, static_cast<int>(std::ceil(y1)) + 1)};
        if (r.x0 < r.x1 && r.y0 < r.y1) dirty.push_back(r);
    };
    if (full) {
        dirty.push_back({0, 0, W, H});
    } else {
        if (dx > 0) mark(0, 0, dx, H);
        if (dx < 0) mark(W + dx, 0, W, H);
        if (dy > 0) mark(0, 0, W, dy);
        if (dy < 0) mark(0, H + dy, W, H);
        for (const auto& [id, d] : drawn) {
            const auto old = drawn_.find(id);
            if (old == drawn_.end() || !(old->second == d))
                mark(view.pixel_x(d.k0), view.pixel_y(d.r0), view.pixel_x(d.k1), view.pixel_y(d.r1));
        }
        for (const auto& [id, d] : drawn_)
            if (!drawn.count(id)) mark(view.pixel_x(d.k0), view.pixel_y(d.r0), view.pixel_x(d.k1), view.pixel_y(d.r1));
        // Many small rectangles cost more in passes than one bounding box does in pixels.
        if (dirty.size() > 48) {
            PixelRect box = dirty[0];
            for (const PixelRect& r : dirty)
                box = {std::min(box.x0, r.x0), std::min(box.y0, r.y0), std::max(box.x1, r.x1), std::max(box.y1, r.y1)};
            dirty.assign(1, box);
        }
    }

    if (!dirty.empty() || dx != 0 || dy != 0) {
        std::memcpy(instance_buffer_.mapped, instances.data(), instances.size() * sizeof(Instance));
        VkClearValue clear{};
        std::copy(kEmptyColor.begin(), kEmptyColor.end(), clear.color.float32);
        int target = current_;
        VkRenderPass pass = render_pass_;
        if (!full) {
            pass = load_pass_;
            VkImageMemoryBarrier barrier{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
            barrier.srcQueueFamilyIndex = barrier.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
            barrier.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1};
            if (dx != 0 || dy != 0) {
                // Copy the previous frame, shifted, into the other image (copies may not overlap in one image).
                target = 1 - current_;
                barrier.image = targets_[target].image;
                barrier.srcAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
                barrier.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
                barrier.oldLayout = VK_IMAGE_LAYOUT_UNDEFINED;
                barrier.newLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL;
                vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT,
                                     VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 0, nullptr, 0, nullptr, 1, &barrier);
                VkImageCopy copy{};
                copy.srcSubresource = copy.dstSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
                copy.srcOffset = {std::max(0, -dx), std::max(0, -dy), 0};
                copy.dstOffset = {std::max(0, dx), std::max(0, dy), 0};
                copy.extent = {static_cast<uint32_t>(W - std::abs(dx)), static_cast<uint32_t>(H - std::abs(dy)), 1};
                vkCmdCopyImage(cmd, targets_[current_].image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, targets_[target].image,
                               VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &copy);
                barrier.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
                barrier.oldLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL;
            } else {
                barrier.image = targets_[target].image;
                barrier.srcAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
                barrier.oldLayout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL;
            }
            barrier.dstAccessMask = VK_ACCESS_COLOR_ATTACHMENT_READ_BIT | VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT;
            barrier.newLayout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL;
            vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT, 0, 0,
                                 nullptr, 0, nullptr, 1, &barrier);
        }
        VkRenderPassBeginInfo rp{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
        rp.renderPass = pass;
        rp.framebuffer = framebuffers_[target];
        rp.renderArea = {{0, 0}, {width(), height()}};
        rp.clearValueCount = 1;
        rp.pClearValues = &clear;
        vkCmdBeginRenderPass(cmd, &rp, VK_SUBPASS_CONTENTS_INLINE);
        VkViewport viewport{0, 0, static_cast<float>(W), static_cast<float>(H), 0, 1};
        vkCmdSetViewport(cmd, 0, 1, &viewport);
        if (!instances.empty()) {
            vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, draw_pipeline_);
            vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, draw_layout_, 0, 1, &draw_set_, 0, nullptr);
            const VkDeviceSize offset = 0;
            vkCmdBindVertexBuffers(cmd, 0, 1, &instance_buffer_.buffer, &offset);
            const float size[2] = {static_cast<float>(W), static_cast<float>(H)};
            vkCmdPushConstants(cmd, draw_layout_, VK_SHADER_STAGE_VERTEX_BIT, 0, sizeof(size), size);
        }
        for (const PixelRect& r : dirty) {
            const VkRect2D scissor{{r.x0, r.y0}, {static_cast<uint32_t>(r.x1 - r.x0), static_cast<uint32_t>(r.y1 - r.y0)}};
            if (!full) {
                VkClearAttachment clear_attachment{VK_IMAGE_ASPECT_COLOR_BIT, 0, clear};
                VkClearRect clear_rect{scissor, 0, 1};
                vkCmdClearAttachments(cmd, 1, &clear_attachment, 1, &clear_rect);
            }
            if (instances.empty()) continue;
            vkCmdSetScissor(cmd, 0, 1, &scissor);
            vkCmdDraw(cmd, 6, static_cast<uint32_t>(instances.size()), 0, 0);
        }
        vkCmdEndRenderPass(cmd);
        current_ = target;
        have_image_ = true;
        stats.rendered = true;
    }
    drawn_ = std::move(drawn);
    drawn_view_ = view;
    drawn_settings_ = settings;
    drawn_levels_ = levels;
    drawn_first_query_ = extent_.first_query;
    ATTN_VK(vkEndCommandBuffer(cmd));
    if (stats.rendered || stats.uploads > 0 || stats.colorized > 0) {
        VkFenceCreateInfo fence_info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        VkFence fence = VK_NULL_HANDLE;
        ATTN_VK(vkCreateFence(context_.device(), &fence_info, nullptr, &fence));
        VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
        submit.commandBufferCount = 1;
        submit.pCommandBuffers = &cmd;
        const VkResult submitted = vkQueueSubmit(context_.queue(), 1, &submit, fence);
        if (submitted == VK_SUCCESS && asynchronous_) {
            pending_fence_ = fence;
            pending_cmd_ = cmd;
            stats.cpu_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
            return stats;
        }
        const VkResult waited = submitted == VK_SUCCESS ? vkWaitForFences(context_.device(), 1, &fence, VK_TRUE, UINT64_MAX) : submitted;
        vkDestroyFence(context_.device(), fence, nullptr);
        ATTN_VK(submitted);
        ATTN_VK(waited);
    }
    vkFreeCommandBuffers(context_.device(), context_.command_pool(), 1, &cmd);
    cache_.frame_complete();
    stats.cpu_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return stats;
}

std::vector<uint8_t> AttentionMapRenderer::read_pixels() {
    if (!have_image_) fail("no frame has been rendered yet");
    finish_pending();
    context_.submit_and_wait([&](VkCommandBuffer cmd) {
        VkBufferImageCopy copy{};
        copy.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
        copy.imageExtent = {width(), height(), 1};
        vkCmdCopyImageToBuffer(cmd, target().image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, readback_.buffer, 1, &copy);
        VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        to_host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
        to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0, nullptr, 0,
                             nullptr);
    });
    const auto* bytes = static_cast<const uint8_t*>(readback_.mapped);
    return std::vector<uint8_t>(bytes, bytes + uint64_t(width()) * height() * 4);
}

void AttentionMapRenderer::write_png(const std::string& path) {
    const std::vector<uint8_t> pixels = read_pixels();
    std::string png;
    auto append = [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
    };
    if (!stbi_write_png_to_func(append, &png, static_cast<int>(width()), static_cast<int>(height()), 4, pixels.data(),
                                static_cast<int>(width()) * 4))
        fail(path, ": PNG encoding failed");
    write_file_atomically(path, png);
}

}  // namespace attn::render
