//! Seconds on a monotonic clock, natively and in the browser (where
//! `std::time::Instant` is not available on wasm32).

/// Seconds since an arbitrary start, for measuring durations.
#[cfg(not(target_arch = "wasm32"))]
pub fn now() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Seconds since an arbitrary start, for measuring durations.
#[cfg(target_arch = "wasm32")]
pub fn now() -> f64 {
    // `performance.now()` (microseconds, monotonic) in windows and workers alike;
    // `Date.now()` (milliseconds) where a host lacks it
    use wasm_bindgen::JsCast;
    let global = js_sys::global();
    let performance = js_sys::Reflect::get(&global, &"performance".into()).ok();
    let ms = performance.and_then(|p| {
        let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
        now.dyn_into::<js_sys::Function>()
            .ok()?
            .call0(&p)
            .ok()?
            .as_f64()
    });
    ms.unwrap_or_else(js_sys::Date::now) / 1000.0
}
