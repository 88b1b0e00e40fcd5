// Read bandwidth from an rgba32uint texture (16 bytes a texel): the same
// access pattern as probe_storage.wgsl, through textureLoad. On lavapipe texel
// loads are straight gathers while storage loads are per-lane loops, so this
// is the fastest layout there.

struct Params {
    texels: u32,   // texels to read, row by row
    groups_x: u32, // workgroups in the grid's first dimension
    width: u32,    // texels per row of src
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var src: texture_2d<u32>; // [height, width] rgba32uint
@group(0) @binding(2) var<storage, read_write> sink: array<u32>; // [1], never written in practice

const WORKGROUP: u32 = 64u;
const ITEMS: u32 = 64u; // texels per invocation

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * params.groups_x;
    let base = group * WORKGROUP * ITEMS + lid;
    var acc = vec4<u32>(0u);
    for (var i = 0u; i < ITEMS; i++) {
        let e = base + i * WORKGROUP;
        if (e < params.texels) {
            acc ^= textureLoad(src, vec2<u32>(e % params.width, e / params.width), 0);
        }
    }
    // the host fills src so that no fold equals this value
    if (all(acc == vec4<u32>(0xdeadbeefu))) {
        sink[0] = acc.x;
    }
}
