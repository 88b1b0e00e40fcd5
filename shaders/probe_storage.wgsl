// Read bandwidth from a storage buffer: every invocation reads ITEMS vec4<u32>
// and folds them together; nothing is written unless the fold hits a value
// the host never stores, so the kernel moves only what it reads.
//
// A workgroup reads 4096 contiguous elements; each run of 8 invocations
// (lavapipe's subgroup) walks its own 512 of them, 8 neighbours at a time, so
// a subgroup streams through memory and a GPU's wider ones read whole lines.

struct Params {
    elements: u32, // vec4<u32> elements in src: whole workgroups of ITEMS each
    groups_x: u32, // workgroups in the grid's first dimension
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>; // [elements]
@group(0) @binding(2) var<storage, read_write> sink: array<u32>; // [1], never written in practice

const WORKGROUP: u32 = 64u;
const ITEMS: u32 = 64u; // elements per invocation: a short loop (llvmpipe stops long ones)
const RUN: u32 = 8u;    // invocations that walk one stretch together

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * params.groups_x;
    let base = group * WORKGROUP * ITEMS + (lid / RUN) * RUN * ITEMS + lid % RUN;
    var acc = vec4<u32>(0u);
    for (var i = 0u; i < ITEMS; i++) {
        acc ^= src[base + i * RUN];
    }
    // the host fills src so that no fold equals this value
    if (all(acc == vec4<u32>(0xdeadbeefu))) {
        sink[0] = acc.x;
    }
}
