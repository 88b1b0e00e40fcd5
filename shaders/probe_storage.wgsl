// Read bandwidth from a storage buffer: every invocation reads ITEMS vec4<u32>
// and folds them together; nothing is written unless the fold hits a value
// the host never stores, so the kernel moves only what it reads.
//
// Invocations of a workgroup read neighbouring elements at each step, so every
// subgroup walks contiguous memory (what GPUs coalesce and lavapipe gathers).

struct Params {
    elements: u32, // vec4<u32> elements in src
    groups_x: u32, // workgroups in the grid's first dimension
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>; // [elements]
@group(0) @binding(2) var<storage, read_write> sink: array<u32>; // [1], never written in practice

const WORKGROUP: u32 = 64u;
const ITEMS: u32 = 64u; // elements per invocation: a short loop (llvmpipe stops long ones)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * params.groups_x;
    let base = group * WORKGROUP * ITEMS + lid;
    var acc = vec4<u32>(0u);
    for (var i = 0u; i < ITEMS; i++) {
        let e = base + i * WORKGROUP;
        if (e < params.elements) {
            acc ^= src[e];
        }
    }
    // the host fills src so that no fold equals this value
    if (all(acc == vec4<u32>(0xdeadbeefu))) {
        sink[0] = acc.x;
    }
}
