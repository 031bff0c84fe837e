//! Jitter for back-off: a small xorshift seeded from the clock and the pid,
//! so that containers started together do not retry in step. A leaf; no
//! crate needed, and nothing here may be used where randomness must be secret.

/// A small xorshift for jitter; no need for a crate.
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            ^ u64::from(std::process::id()) << 32;
        Jitter(seed | 1)
    }
    /// A factor in [0.5, 1.0): pauses never exceed the interval.
    pub fn factor(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        0.5 + (self.0 % 1000) as f64 / 2000.0
    }
}
