// Token embedding lookup: out[t] = the row of the embedding matrix for ids[t],
// dequantized. One invocation writes eight elements. When the matrix is split
// into chunks, each chunk's dispatch writes only the rows it holds.

struct Step {
    pos0: u32,     // position of the step's first token
    n_tokens: u32, // tokens in this step
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> ids: array<u32>;       // [n_tokens]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [n_tokens, cols]

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * groups.x) * 64u + lid;
    let groups_per_row = chunk.cols / 8u;
    let t = index / groups_per_row;
    let group = index % groups_per_row;
    if t >= step.n_tokens {
        return;
    }
    let id = ids[t];
    if id < chunk.row0 || id >= chunk.row0 + chunk.rows {
        return;
    }
    let w = load8(id - chunk.row0, group);
    let at = t * chunk.cols + group * 8u;
    for (var i = 0u; i < 4u; i++) {
        out[at + i] = w.lo[i];
        out[at + 4u + i] = w.hi[i];
    }
}
